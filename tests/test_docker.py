"""Docker smoke test: build, both services healthy, the README's container test command.

Runs when a Docker engine and the compose command answer; skipped with the reason otherwise.
The compose command comes from `FER_COMPOSE` (default `docker compose`); on this project's CI
machine it is `bash ../shared/tools/docker-harness compose` (host network, compose v1).
Every subprocess has a timeout: the test never hangs on a missing or stuck engine.

The browser part: while both services are up, Debian's Chromium, driven by
Playwright (tests/lab_browser.py), opens every notebook in the container's JupyterLab with the
token URL, runs Run ▸ Run All Cells in the ci profile, saves, and the saved file must show every
code cell run without an error output. The notebooks run as copies under logs/ (git-ignored,
mounted) so the committed ones never get outputs. Then the AU explorer and the labelling widget
must be live widgets, a click on a class button must write its row to the labels CSV, and
TensorBoard must list the runs the notebooks wrote. Without Chromium or Playwright (but with
Docker) these tests fail and say what to install.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import lab_browser
from fer_utils import labelling

pytestmark = [pytest.mark.docker, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]


def _absolute(token: str) -> str:
    """A relative path in FER_COMPOSE (`../shared/tools/docker-harness`) made absolute."""
    if "/" in token and not token.startswith("-") and (ROOT / token).exists():
        return str((ROOT / token).resolve())
    return token


# Absolute, so the same command also drives a temporary copy of the project (uid test).
COMPOSE = [_absolute(t) for t in shlex.split(os.environ.get("FER_COMPOSE", "docker compose"))]
BUILD_TIMEOUT = int(os.environ.get("FER_DOCKER_BUILD_TIMEOUT", "1500"))  # cold: pip installs TF
HEALTH_TIMEOUT = 240
LAB = "http://127.0.0.1:8888"
TENSORBOARD = "http://127.0.0.1:6006"
TOKEN_URL = re.compile(r"http://127\.0\.0\.1:8888/lab\?token=([0-9a-f]{32,})")
# The README's container test command, exactly as a learner types it (services stopped first:
# on a host network `compose run` refuses while they are up): every test and every notebook.
CONTAINER_COMMAND = ["pytest"]
CONTAINER_TIMEOUT = int(os.environ.get("FER_CONTAINER_TEST_TIMEOUT", "1800"))


def _report(config, line: str) -> None:
    """Print a figure in pytest's output even when the test passes (captured prints are not)."""
    reporter = config.pluginmanager.getplugin("terminalreporter")
    capture = config.pluginmanager.getplugin("capturemanager")
    if reporter is None or capture is None:  # pragma: no cover - e.g. xdist workers
        print(line)
        return
    with capture.global_and_fixture_disabled():
        reporter.ensure_newline()
        reporter.write_line(line)


def _run(args, timeout, env=None, input=None, cwd=ROOT):
    """Run a command with a timeout; a timeout fails the test with what it was doing."""
    try:
        return subprocess.run(args, cwd=cwd, env=env, input=input, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"timed out after {timeout} s: {shlex.join(args)}\n"
                    f"{(error.stdout or '')[-2000:]}\n{(error.stderr or '')[-2000:]}")


def _tail(proc, n=4000):
    return f"rc={proc.returncode}\nstdout:\n{proc.stdout[-n:]}\nstderr:\n{proc.stderr[-n:]}"


def _engine_problem() -> str | None:
    """Why the smoke test cannot run here (no engine, no compose), or None when it can."""
    try:
        info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                              capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        return "no `docker` command on PATH"
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer within 30 s"
    if info.returncode != 0:
        return f"no Docker engine reachable (`docker info`: {info.stderr.strip()[-300:]})"
    try:
        version = subprocess.run([*COMPOSE, "version"], cwd=ROOT, capture_output=True,
                                 text=True, timeout=60)
    except (FileNotFoundError, subprocess.TimeoutExpired) as error:
        return f"compose command {shlex.join(COMPOSE)!r} does not work ({error}); set FER_COMPOSE"
    if version.returncode != 0:
        return (f"compose command {shlex.join(COMPOSE)!r} does not work "
                f"({(version.stderr or version.stdout).strip()[-300:]}); set FER_COMPOSE")
    return None


def _port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _get(url, token=None, timeout=10):
    """GET url; return (status, body) for any HTTP answer."""
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"token {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode("utf-8", "replace")


@pytest.fixture(scope="module")
def stack(request):
    """Build the image and `up -d` both services; `down` at the end. Yields the compose env."""
    problem = _engine_problem()
    if problem and os.environ.get("FER_TESTS_IN") == "container":
        # the tests were left to the image (conftest.py): nothing may skip them silently
        pytest.fail(f"FER_TESTS_IN=container, but the image cannot run them: {problem}")
    if problem:
        pytest.skip(f"docker smoke test skipped: {problem}")
    env = dict(os.environ, FER_PROFILE="ci")
    env.pop("JUPYTER_TOKEN", None)  # test the default: a random token printed in the logs

    def compose(*args, timeout=180, cwd=ROOT):
        return _run([*COMPOSE, *args], timeout=timeout, env=env, cwd=cwd)

    compose("down", "--remove-orphans")  # leftovers of an interrupted run
    busy = [port for port in (8888, 6006) if _port_in_use(port)]
    if busy:
        pytest.fail(f"127.0.0.1 port(s) {busy} already in use: stop what uses them first")
    start = time.monotonic()
    build = compose("build", timeout=BUILD_TIMEOUT)
    build_s = time.monotonic() - start
    assert build.returncode == 0, f"image build failed:\n{_tail(build)}"
    _report(request.config, f"docker smoke test: image built in {build_s:.0f} s")
    try:
        up = compose("up", "-d")
        assert up.returncode == 0, f"`compose up -d` failed:\n{_tail(up)}"
        yield {"compose": compose, "env": env, "build_s": build_s}
    finally:
        down = compose("down", "--remove-orphans")
        assert down.returncode == 0, f"`compose down` failed:\n{_tail(down)}"


def _container(stack, service):
    ps = stack["compose"]("ps", "-q", service, timeout=60)
    ids = ps.stdout.split()
    assert ps.returncode == 0 and ids, f"no container for service {service}:\n{_tail(ps)}"
    return ids[0]


def _health(container):
    proc = _run(["docker", "inspect", "--format",
                 "{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}", container],
                timeout=30)
    return proc.stdout.strip() or f"unknown ({proc.stderr.strip()})"


def _wait_healthy(stack, service):
    container = _container(stack, service)
    deadline = time.monotonic() + HEALTH_TIMEOUT
    status = _health(container)
    while status != "healthy" and time.monotonic() < deadline:
        if status in ("unhealthy", "none") or status.startswith("unknown"):
            break
        time.sleep(3)
        status = _health(container)
    if status != "healthy":
        logs = stack["compose"]("logs", "--tail", "40", service, timeout=60)
        pytest.fail(f"{service} is {status!r}, not healthy, after up to {HEALTH_TIMEOUT} s:\n"
                    f"{logs.stdout[-3000:]}")


def _lab_token(stack):
    logs = stack["compose"]("logs", "lab", timeout=60)
    tokens = TOKEN_URL.findall(logs.stdout + logs.stderr)
    assert tokens, f"no http://127.0.0.1:8888/lab?token=... URL in `compose logs lab`:\n" \
                   f"{logs.stdout[-3000:]}"
    return tokens[-1]


def _stop_services(stack):
    stop = stack["compose"]("stop", timeout=120)
    assert stop.returncode == 0, f"`compose stop` failed:\n{_tail(stop)}"


def test_both_services_become_healthy(stack):
    _wait_healthy(stack, "lab")
    _wait_healthy(stack, "tensorboard")


def test_lab_refuses_api_requests_without_token(stack):
    _wait_healthy(stack, "lab")
    status, _ = _get(f"{LAB}/api/contents")
    assert status == 403
    status, _ = _get(f"{LAB}/api/contents", token="not-the-token")
    assert status == 403


def test_token_url_in_logs_opens_the_course(stack):
    _wait_healthy(stack, "lab")
    token = _lab_token(stack)
    status, body = _get(f"{LAB}/api/contents", token=token)
    assert status == 200, body[:500]
    root = {item["name"] for item in json.loads(body)["content"]}
    assert {"notebooks", "fer_utils", "logs", "data"} <= root
    status, body = _get(f"{LAB}/api/contents/notebooks", token=token)
    assert status == 200, body[:500]
    listed = {item["name"] for item in json.loads(body)["content"] if item["type"] == "notebook"}
    on_host = {p.name for p in (ROOT / "notebooks").glob("*.ipynb")}
    assert listed == on_host  # the host's notebooks/ is what JupyterLab shows


def test_tensorboard_serves_the_same_logs(stack):
    _wait_healthy(stack, "tensorboard")
    status, body = _get(f"{TENSORBOARD}/")
    assert status == 200 and "<html" in body.lower()
    status, body = _get(f"{TENSORBOARD}/data/environment")
    assert status == 200, body[:500]
    assert json.loads(body)["data_location"] == "/course/logs"


# -- The course in a browser ------------------------------------------------------------------

NOTEBOOKS = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
# Working copies: Run All + save writes outputs, which the committed notebooks must never get.
# Under logs/ because it is mounted (the host reads what JupyterLab saved) and git-ignored;
# kernels find fer_utils there through the image's PYTHONPATH=/course and their data through
# FER_DATA_DIR / FER_LOG_DIR, exactly as from notebooks/.
COPIES = ROOT / "logs" / "browser-notebooks"
SCREENSHOTS = ROOT / "logs" / "browser-screenshots"  # what the page showed when a check failed
NOTEBOOK_TIMEOUT = int(os.environ.get("FER_BROWSER_NOTEBOOK_TIMEOUT", "900"))
WIDGET_NOTEBOOK = "00_setup_and_data.ipynb"  # the AU explorer and the labelling widget
STATUS = re.compile(r"^(?P<image>\S+) — (?P<left>\d+) left; labels go to (?P<csv>\S+\.csv)")


@pytest.fixture(scope="module")
def browser(stack):
    """Chromium logged in to the container's JupyterLab (token from `compose logs lab`)."""
    problem = lab_browser.browser_problem()
    if problem:
        pytest.fail(f"the browser test cannot run: {problem}")
    _wait_healthy(stack, "lab")
    driver = lab_browser.LabBrowser(LAB, _lab_token(stack), ROOT, SCREENSHOTS).start()
    yield driver
    driver.close()


@pytest.fixture(scope="module")
def browser_runs(browser, request):
    """Every notebook: a fresh copy, opened in JupyterLab, Run All Cells, saved, checked."""
    shutil.rmtree(COPIES, ignore_errors=True)
    shutil.rmtree(SCREENSHOTS, ignore_errors=True)
    COPIES.mkdir(parents=True)
    started = time.time()
    runs = {}
    for name in NOTEBOOKS:
        run = browser.run_notebook(ROOT / "notebooks" / name, COPIES, NOTEBOOK_TIMEOUT,
                                   keep_open=name == WIDGET_NOTEBOOK)
        runs[name] = run
        verdict = "ok" if not run.problems else f"{len(run.problems)} problem(s)"
        _report(request.config, f"browser: {name}: Run All Cells {run.seconds:.0f} s, "
                                f"{run.cells} code cells, {verdict}")
    _report(request.config, f"browser: {len(runs)} notebooks in {time.time() - started:.0f} s "
                            f"(open, Run All Cells, save, check)")
    yield {"runs": runs, "started": started}
    for run in runs.values():  # later tests stop the services: the server may be gone
        if run.page is not None:
            browser.shut_down(run.page, run.path.relative_to(ROOT).as_posix(),
                              server_may_be_gone=True)


def _failure(browser, page, what: str, message: str) -> str:
    shot = browser.screenshot(page, what)
    return f"{message}\nscreenshot of the page: {shot or '(none: the page is gone)'}"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_run_all_cells_in_jupyterlab(browser_runs, name):
    """Run ▸ Run All Cells in the browser, saved: every code cell ran, none shows an error."""
    run = browser_runs["runs"][name]
    assert not run.problems, (f"{name} in JupyterLab (copy {run.path}):\n" + "\n".join(
        run.problems) + f"\nscreenshot of the page: {run.screenshot or '(none)'}")
    assert run.cells > 0, f"{name} saved without code cells"


def test_jupyterlab_shows_no_news_popup(browser, browser_runs):
    """The image switches JupyterLab's news pop-up and update check off: settings and pages."""
    settings = browser.notification_settings()
    assert settings.get("fetchNews") == "false" and settings.get("checkForUpdates") is False, (
        f"JupyterLab's notification settings in the container: {settings} (the image should "
        f"set fetchNews 'false' and checkForUpdates false: docker/jupyterlab-overrides.json)")
    shown = {name: run.news_popups for name, run in browser_runs["runs"].items()
             if run.news_popups}
    assert not shown, f"JupyterLab showed a news or update pop-up: {shown}"


def _widget_page(browser_runs):
    run = browser_runs["runs"][WIDGET_NOTEBOOK]
    if run.page is None:
        pytest.fail(f"{WIDGET_NOTEBOOK} did not run cleanly in the browser (see "
                    f"test_run_all_cells_in_jupyterlab[{WIDGET_NOTEBOOK}]): no widgets to check")
    return run.page


def test_au_explorer_is_a_live_widget(browser, browser_runs):
    """Sliders per AU render; moving one makes the kernel redraw the face."""
    page = _widget_page(browser_runs)
    explorer = page.locator(".fer-au-explorer")
    assert explorer.count() == 1, _failure(browser, page, "au-explorer",
                                           "no live AU explorer (.fer-au-explorer) on the page")
    # textContent, not innerText: off-screen cells are not laid out (content-visibility)
    labels = explorer.locator(".widget-slider .widget-label").all_text_contents()
    au_sliders = [text for text in labels if re.fullmatch(r"AU\d+", text.strip())]
    assert len(au_sliders) >= 2, _failure(browser, page, "au-explorer",
                                          f"AU explorer slider labels: {labels}")
    picture = explorer.locator(".widget-output img")
    assert picture.count() == 1, _failure(browser, page, "au-explorer",
                                          "the AU explorer shows no face")
    before = picture.first.get_attribute("src")
    handle = explorer.locator(".widget-slider .noUi-handle").first
    lab_browser.bring_into_view(handle)
    handle.focus()
    page.keyboard.press("ArrowRight")  # one step up: the kernel redraws the face
    changed = lab_browser.wait_for(lambda: picture.first.get_attribute("src") != before, 30)
    readout = explorer.locator(".widget-slider .widget-readout").first.text_content()
    assert changed, _failure(browser, page, "au-explorer", f"moving the {au_sliders[0]} "
                             f"slider (now {readout}) did not redraw the face")


def test_labelling_widget_click_writes_the_labels_csv(browser, browser_runs):
    """A click on a class button appends (image, class) to the CSV; the widget moves on."""
    page = _widget_page(browser_runs)
    tool = page.locator(".fer-labelling-tool")
    assert tool.count() == 1, _failure(browser, page, "labelling",
                                       "no live labelling widget (.fer-labelling-tool)")
    lab_browser.bring_into_view(tool)
    buttons = tool.locator(".fer-label-button")
    names = [text.strip() for text in buttons.all_text_contents()]
    assert names == list(labelling.EXPRESSIONS), _failure(browser, page, "labelling",
                                                          f"class buttons: {names}")
    status = tool.locator(".widget-html").first
    shown = STATUS.match(status.text_content().strip())
    assert shown, _failure(browser, page, "labelling",
                           f"status line: {status.text_content()!r}")
    csv_path = browser.host_path(shown["csv"])
    rows = csv_path.read_text().splitlines()
    choice = "surprise"
    buttons.filter(has_text=choice).click()
    after = lab_browser.wait_for(lambda: csv_path.read_text().splitlines()[len(rows):], 30)
    assert after, _failure(browser, page, "labelling",
                           f"clicking {choice!r} wrote nothing to {csv_path}")
    image, label = after[-1].rsplit(",", 1)
    assert len(after) == 1 and Path(image).name == shown["image"] and label == choice, after
    left = int(shown["left"]) - 1
    moved = lab_browser.wait_for(lambda: f"{left} left" in status.text_content()
                                 or "All done" in status.text_content(), 30)
    assert moved, _failure(browser, page, "labelling",
                           f"the widget did not move on: {status.text_content()!r}")


def test_tensorboard_lists_the_runs_the_notebooks_wrote(browser, browser_runs):
    """Runs the notebooks wrote under logs/: in TensorBoard's HTTP API and on its page."""
    logs = ROOT / "logs"
    written = {p.parent.relative_to(logs).as_posix() for p in logs.rglob("events.out.tfevents*")
               if p.stat().st_mtime >= browser_runs["started"] - 1}
    assert written, "the notebooks wrote no TensorBoard run under logs/ in the browser run"
    runs_api = f"{TENSORBOARD}/data/runs"  # what TensorBoard's run selector is filled from
    listed = lab_browser.wait_for(
        lambda: written <= set(lab_browser.get_json(runs_api) or []), timeout=120, interval=3)
    missing = written - set(lab_browser.get_json(runs_api) or [])
    assert listed, f"TensorBoard ({runs_api}) does not list {sorted(missing)}"
    page = browser.new_page()
    try:
        page.goto(f"{TENSORBOARD}/#timeseries")
        selector = page.locator("runs-selector")  # the run list left of the charts
        shown = lab_browser.wait_for(
            lambda: all(selector.get_by_text(run, exact=True).count() for run in written), 60)
        assert shown, _failure(browser, page, "tensorboard", f"TensorBoard's run list does "
                               f"not show all of {sorted(written)}")
    finally:
        page.context.close()


def test_container_test_command_passes(stack, request):
    """The README's `docker compose run --rm lab pytest`: every test and notebook, as the
    learner's user, with the learner's settings (no FER_PROFILE: the tests pick ci)."""
    _stop_services(stack)
    env = {k: v for k, v in stack["env"].items() if k != "FER_PROFILE"}
    start = time.monotonic()
    proc = _run([*COMPOSE, "run", "--rm", "lab", *CONTAINER_COMMAND], timeout=CONTAINER_TIMEOUT,
                env=env)
    summary = (proc.stdout.strip().splitlines() or [""])[-1]
    _report(request.config, f"docker smoke test: `compose run --rm lab "
                            f"{shlex.join(CONTAINER_COMMAND)}` took "
                            f"{time.monotonic() - start:.0f} s: {summary.strip('= ')}")
    assert proc.returncode == 0, f"container test command failed:\n{_tail(proc, 6000)}"
    assert re.search(r"\d+ passed", summary) and not re.search(r"failed|error", summary), summary
    ran = set(re.findall(r"^(notebooks/\S+\.ipynb) ", proc.stdout, re.M))
    assert ran == {f"notebooks/{name}" for name in NOTEBOOKS}, sorted(ran)  # every notebook
    bench_tests = re.escape("tests/test_bench_notebooks.py")  # they run benchmarks/ scripts
    assert re.search(rf"^{bench_tests} \.+", proc.stdout, re.M), "benchmarks/ tests did not run"


def test_files_written_to_logs_belong_to_the_owner_of_logs(stack):
    _stop_services(stack)
    logs = ROOT / "logs"
    probe = logs / f".docker-owner-check-{os.getpid()}"
    script = f"touch /course/logs/{probe.name} && id -u"
    try:
        proc = stack["compose"]("run", "--rm", "lab", "bash", "-c", script, timeout=180)
        assert proc.returncode == 0, _tail(proc)
        owner = logs.stat()
        assert (probe.stat().st_uid, probe.stat().st_gid) == (owner.st_uid, owner.st_gid)
        assert proc.stdout.split()[-1] == str(owner.st_uid)  # the command ran as that user
    finally:
        probe.unlink(missing_ok=True)


def test_checkout_owned_by_a_non_root_uid_gets_files_owned_by_that_uid(stack, tmp_path):
    """A copy of the project owned by uid 1234: files the container writes belong to 1234."""
    _stop_services(stack)
    if os.geteuid() != 0:
        pytest.skip("needs root on the host to make a checkout owned by another uid")
    project = tmp_path / "course"
    for folder in ("notebooks", "fer_utils", "logs", "data"):
        (project / folder).mkdir(parents=True)
    shutil.copy2(ROOT / "docker-compose.yml", project / "docker-compose.yml")
    for path in [project, *project.rglob("*")]:
        os.chown(path, 1234, 1234)
    script = ("mkdir -p /course/logs/run1 && touch /course/logs/run1/events /course/data/cache && "
              "echo \"$(id -u) $(id -g) $(id -un) $HOME\"")
    try:
        # The image exists already (built by the fixture): no build in the copy.
        proc = stack["compose"]("run", "--rm", "lab", "bash", "-c", script, timeout=180,
                                cwd=project)
        assert proc.returncode == 0, _tail(proc)
        assert proc.stdout.split()[-4:] == ["1234", "1234", "learner", "/home/learner"]
        for path in (project / "logs" / "run1", project / "logs" / "run1" / "events",
                     project / "data" / "cache"):
            assert (path.stat().st_uid, path.stat().st_gid) == (1234, 1234), path
    finally:
        stack["compose"]("down", "--remove-orphans", timeout=120, cwd=project)
