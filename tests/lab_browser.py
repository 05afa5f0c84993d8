"""Drive the course's JupyterLab in a real browser: Debian's Chromium through Playwright.

Used by the browser part of the docker smoke test (tests/test_docker.py). Everything goes
through JupyterLab's own UI as a learner would use it (open the token URL, Run ▸ Run All Cells,
save with Ctrl+S, click widgets); the server's REST API is only read, to know when the kernel
has finished and what the saved notebook holds. No browser is downloaded: Playwright launches
/usr/bin/chromium (`apt-get install chromium`; another binary with `FER_CHROMIUM`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = os.environ.get("FER_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1400, "height": 900}
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# JupyterLab's news question and update notice (@jupyterlab/apputils-extension:announcements)
NEWS_TOAST = re.compile(r"Jupyter news|newer version", re.IGNORECASE)
NOTIFICATION_PLUGIN = "@jupyterlab/apputils-extension:notification"
NEWS_WAIT = 3.0  # seconds to look for a news pop-up after a notebook has opened


def browser_problem() -> str | None:
    """Why no browser can be driven here (Playwright or Chromium missing), or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as error:
        return (f"Playwright is not installed ({error}): `pip install -r requirements.txt` "
                f"(it pins playwright)")
    if not os.access(CHROMIUM, os.X_OK):
        return (f"no Chromium at {CHROMIUM}: `apt-get install chromium` (Debian; .ci/run does "
                f"this), or point FER_CHROMIUM at a Chromium binary")
    return None


def cell_problems(notebook: dict) -> list[str]:
    """Code cells of a saved notebook that did not run or that show an error output."""
    problems = []
    for number, cell in enumerate(notebook.get("cells", []), start=1):
        if cell.get("cell_type") != "code":
            continue
        source = "".join(cell.get("source", ""))
        first = next((line for line in source.splitlines() if line.strip()), "")[:70]
        if cell.get("execution_count") is None:
            problems.append(f"cell {number} did not run: {first!r}")
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                trace = ANSI.sub("", "\n".join(output.get("traceback", [])))[-1500:]
                problems.append(f"cell {number} raised {output.get('ename')}: "
                                f"{output.get('evalue')} ({first!r})\n{trace}")
    return problems


@dataclass
class NotebookRun:
    """One notebook opened in JupyterLab, run with Run All Cells and saved."""

    name: str
    path: Path  # the copy on the host (mounted into the container)
    seconds: float = 0.0  # from the click on Run All Cells until the kernel settled
    problems: list = field(default_factory=list)
    notebook: dict | None = None  # the saved file
    screenshot: Path | None = None
    news_popups: list = field(default_factory=list)  # news/update toasts seen on opening
    page: object = None  # the Playwright page, while it is kept open

    @property
    def cells(self) -> int:
        """How many code cells the saved notebook has."""
        return sum(c.get("cell_type") == "code" for c in (self.notebook or {}).get("cells", []))


class LabBrowser:
    """A Chromium driven by Playwright, logged in to one JupyterLab server with its token."""

    def __init__(self, lab_url: str, token: str, project: Path, shots: Path,
                 container_root: str = "/course"):
        """Remember where JupyterLab answers and where the project lies on the host."""
        self.lab_url = lab_url.rstrip("/")
        self.token = token
        self.project = Path(project)
        self.shots = Path(shots)
        self.container_root = container_root.rstrip("/")
        self._playwright = None
        self.browser = None

    # -- browser ----------------------------------------------------------------------------
    def start(self) -> "LabBrowser":
        """Launch Chromium (headless) through Playwright."""
        from playwright.sync_api import sync_playwright

        self._playwright = sync_playwright().start()
        self.browser = self._playwright.chromium.launch(executable_path=CHROMIUM,
                                                        args=CHROMIUM_ARGS)
        return self

    def close(self) -> None:
        """Close the browser and stop Playwright."""
        if self.browser is not None:
            self.browser.close()
        if self._playwright is not None:
            self._playwright.stop()
        self.browser = self._playwright = None

    def new_page(self):
        """A fresh page (own context: own cookies) with a desktop-sized window."""
        context = self.browser.new_context(viewport=VIEWPORT)
        page = context.new_page()
        page.set_default_timeout(60_000)
        return page

    def screenshot(self, page, name: str) -> Path | None:
        """Save what the page shows under `shots/NAME.png`; None when the page is gone."""
        self.shots.mkdir(parents=True, exist_ok=True)
        path = self.shots / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.png"
        try:
            page.screenshot(path=str(path), full_page=True)
        except Exception:  # noqa: BLE001 - a crashed page: report without a picture
            return None
        return path

    # -- server -----------------------------------------------------------------------------
    def api(self, path: str, method: str = "GET"):
        """JSON from JupyterLab's REST API (token in the header); None for an empty answer."""
        request = urllib.request.Request(f"{self.lab_url}{path}", method=method)
        request.add_header("Authorization", f"token {self.token}")
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
        return json.loads(body) if body else None

    def session_of(self, relative: str) -> dict | None:
        """The server's session (with its kernel) for the notebook at `relative`, if any."""
        return next((s for s in self.api("/api/sessions") if s.get("path") == relative), None)

    def host_path(self, container_path: str) -> Path:
        """A path the container printed (/course/...) as a path on the host."""
        path = Path(container_path)
        return self.project / path.relative_to(self.container_root)

    # -- a notebook -------------------------------------------------------------------------
    def open_notebook(self, relative: str, workspace: str):
        """Open the notebook in its own workspace with the token URL; wait for its kernel."""
        page = self.new_page()
        page.goto(f"{self.lab_url}/lab/workspaces/{workspace}/tree/{relative}"
                  f"?token={self.token}")
        page.locator(".jp-NotebookPanel").first.wait_for(state="visible", timeout=120_000)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            session = self.session_of(relative)
            status = " ".join(page.locator(".jp-StatusBar-TextItem").all_inner_texts())
            if (session and session["kernel"]["execution_state"] == "idle"
                    and re.search(r"\|\s*Idle", status)):
                return page
            self._fail_on_dialog(page)
            time.sleep(0.5)
        raise TimeoutError(f"the kernel of {relative} was not ready within 180 s "
                           f"(status bar: {status!r})")

    def news_popups(self, page, wait: float = NEWS_WAIT) -> list[str]:
        """The texts of JupyterLab's news or update pop-ups on the page (none expected).

        JupyterLab 4 asks "Would you like to get notified about official Jupyter news?" in a
        toast once its settings have loaded, unless the image switches the news off
        (docker/jupyterlab-overrides.json); an update check shows "A newer version ..." the
        same way. Looks for `wait` seconds, so that a late toast is seen too.
        """
        toasts = page.locator(".Toastify__toast").filter(has_text=NEWS_TOAST)
        wait_for(lambda: toasts.count(), wait)
        return [" ".join(text.split()) for text in toasts.all_inner_texts()]

    def notification_settings(self) -> dict:
        """JupyterLab's effective notification settings: the user's over the defaults.

        The server's defaults are the schema's, changed by the image's overrides.json.
        """
        answer = self.api(f"/lab/api/settings/{NOTIFICATION_PLUGIN}")
        defaults = {name: spec.get("default")
                    for name, spec in answer["schema"]["properties"].items()}
        return {**defaults, **(answer.get("settings") or {})}

    def run_all_cells(self, page, relative: str, timeout: float) -> float:
        """Run ▸ Run All Cells through the menu; wait until the kernel settles; seconds."""
        kernel_id = self.session_of(relative)["kernel"]["id"]
        before = self.api(f"/api/kernels/{kernel_id}")["last_activity"]
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        start = time.monotonic()
        self._wait_started(page, kernel_id, before, start + 60)
        return self._wait_settled(page, kernel_id, start + timeout) - start

    def _prompts(self, page) -> list[str]:
        return page.locator(".jp-NotebookPanel .jp-InputPrompt").all_text_contents()

    def _wait_started(self, page, kernel_id, before, deadline) -> None:
        while time.monotonic() < deadline:
            kernel = self.api(f"/api/kernels/{kernel_id}")
            if (kernel["last_activity"] != before or kernel["execution_state"] == "busy"
                    or any("*" in p for p in self._prompts(page))):
                return
            time.sleep(0.3)
        raise TimeoutError("Run All Cells started nothing within 60 s (kernel never busy)")

    def _wait_settled(self, page, kernel_id, deadline, quiet: float = 2.0) -> float:
        """Wait until the kernel is idle, no prompt shows [*] and nothing happened for `quiet` s.

        Returns the time (monotonic) of the kernel's last activity: when the run ended.
        """
        last, since = None, time.monotonic()
        while time.monotonic() < deadline:
            kernel = self.api(f"/api/kernels/{kernel_id}")
            if kernel["execution_state"] == "dead":
                raise RuntimeError("the kernel died (out of memory?)")
            running = any("*" in p for p in self._prompts(page))
            if kernel["last_activity"] != last:
                last, since = kernel["last_activity"], time.monotonic()
            if (kernel["execution_state"] == "idle" and not running
                    and time.monotonic() - since >= quiet):
                return since
            self._fail_on_dialog(page)
            time.sleep(0.5)
        queued = [p for p in self._prompts(page) if "*" in p]
        raise TimeoutError(f"still running when the time ran out (kernel "
                           f"{kernel['execution_state']}, {len(queued)} cell(s) at [*])")

    def _fail_on_dialog(self, page) -> None:
        dialog = page.locator(".jp-Dialog")
        if dialog.count():
            raise RuntimeError(f"JupyterLab shows a dialog: {dialog.first.inner_text()!r}")

    def save(self, page, relative: str, timeout: float = 60) -> dict:
        """Save with Ctrl+S as a learner does; return the saved notebook (read from disk)."""
        before = self.api(f"/api/contents/{relative}?content=0")["last_modified"]
        page.locator(".jp-NotebookPanel .jp-Notebook").first.click(position={"x": 5, "y": 5})
        page.keyboard.press("Escape")  # command mode: Ctrl+S goes to the notebook
        page.keyboard.press("Control+s")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.api(f"/api/contents/{relative}?content=0")["last_modified"] != before:
                time.sleep(0.5)  # the file is written before the model answers; settle
                return json.loads((self.project / relative).read_text(encoding="utf-8"))
            time.sleep(0.5)
        raise TimeoutError(f"Ctrl+S did not save {relative} within {timeout:.0f} s")

    def shut_down(self, page, relative: str, server_may_be_gone: bool = False) -> None:
        """Stop the notebook's kernel (the server's session) and close its page.

        With `server_may_be_gone`, a server that no longer answers (stopped on purpose, which
        stops its kernels too) is not an error.
        """
        try:
            session = self.session_of(relative)
            if session:
                self.api(f"/api/sessions/{session['id']}", method="DELETE")
        except OSError:  # refused, reset (urllib's errors are OSErrors)
            if not server_may_be_gone:
                raise
        finally:
            page.context.close()

    def run_notebook(self, source: Path, copies: Path, timeout: float,
                     keep_open: bool = False) -> NotebookRun:
        """Copy `source` into `copies`, open it, Run All Cells, save, check the saved cells.

        Problems (a timeout, a dialog, cells that did not run or raised) are collected in
        the result, with a screenshot, instead of raised: every notebook gets its run.
        """
        copy = copies / source.name
        shutil.copy2(source, copy)
        relative = copy.relative_to(self.project).as_posix()
        run = NotebookRun(source.name, copy)
        page = None
        try:
            page = self.open_notebook(relative, workspace=f"browser-{copy.stem}")
            run.news_popups = self.news_popups(page)
            run.seconds = self.run_all_cells(page, relative, timeout)
            run.notebook = self.save(page, relative)
            run.problems = cell_problems(run.notebook)
        except Exception as error:  # noqa: BLE001 - reported with what the page showed
            run.problems.append(f"{type(error).__name__}: {error}")
        if page is not None and run.problems:
            run.screenshot = self.screenshot(page, f"{copy.stem}")
        if page is not None:
            if keep_open and not run.problems:
                run.page = page
            else:
                self.shut_down(page, relative)
        return run


def bring_into_view(locator, tries: int = 5) -> None:
    """Scroll until `locator` stays put on screen.

    JupyterLab 4 lays out off-screen cells lazily (CSS content-visibility), so the first
    scroll lands on an estimated position; scroll again until the box stops moving.
    """
    box = None
    for _ in range(tries):
        locator.scroll_into_view_if_needed()
        time.sleep(0.3)
        now = locator.bounding_box()
        if now is not None and now == box:
            return
        box = now


def wait_for(check, timeout: float, interval: float = 0.5):
    """Call `check` until it returns something truthy; return that, or None at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def get_json(url: str, timeout: float = 10):
    """JSON from a URL without authentication (TensorBoard's HTTP API); None on an error."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None
