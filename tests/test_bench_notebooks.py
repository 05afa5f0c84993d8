"""benchmarks/bench_notebooks.py on small notebooks the tests write: rows, failures, stopping."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_notebooks.py"


def write_notebook(path: Path, *cells: str) -> Path:
    """A notebook of code cells, without outputs."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    nbformat.write(nb, path)
    return path


def bench(*args, **kwargs) -> subprocess.CompletedProcess:
    """Run the script with the test's Python; stdout and stderr as text."""
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=kwargs.pop("timeout", 240), **kwargs)


def pid_alive(pid: int) -> bool:
    """Whether a process with this id still runs (zombies count as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_rows_failures_and_executed_copies(tmp_path):
    folder = tmp_path / "nbs"
    folder.mkdir()
    ok = write_notebook(folder / "01_ok.ipynb", "import os\nprint('profile', os.environ['FER_PROFILE'])")
    write_notebook(folder / "02_broken.ipynb", "x = 1", "raise ValueError('bad row 7')", "y = 2")
    saved = tmp_path / "executed"
    done = bench("--notebooks", str(folder), "--profile", "ci", "--save-to", str(saved))
    out = done.stdout
    assert done.returncode == 1, out + done.stderr
    assert "FER_PROFILE=ci" in out
    assert [line.split()[0] for line in out.splitlines()
            if line.startswith(("01_", "02_"))] == ["01_ok", "02_broken"]
    assert "01_ok" in out and out.count("FAILED") == 2  # the row and the closing line
    assert "FAILED 02_broken: code cell 2 of 3: ValueError: bad row 7" in out
    executed = nbformat.read(saved / "01_ok.ipynb", as_version=4)
    assert "profile ci" in executed.cells[0].outputs[0]["text"]
    assert nbformat.read(ok, as_version=4).cells[0].outputs == []  # the source stays clean


def test_only_and_bad_folders(tmp_path):
    folder = tmp_path / "nbs"
    folder.mkdir()
    write_notebook(folder / "01_ok.ipynb", "pass")
    done = bench("--notebooks", str(folder), "--only", "07")
    assert done.returncode != 0
    assert "no notebook starts with 07 (there are: 01_ok)" in done.stderr
    done = bench("--notebooks", str(tmp_path / "missing"))
    assert done.returncode == 2 and "no such folder" in done.stderr
    done = bench("--notebooks", str(folder), "--save-to", str(folder))
    assert done.returncode == 2 and "without outputs" in done.stderr


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT"])
def test_a_stop_signal_shuts_the_kernel_down_and_reports(tmp_path, how):
    folder = tmp_path / "nbs"
    folder.mkdir()
    pid_file = tmp_path / "kernel.pid"
    write_notebook(folder / "01_quick.ipynb", "pass")
    write_notebook(folder / "02_slow.ipynb",
                   f"import os, pathlib, time\npathlib.Path({str(pid_file)!r}).write_text("
                   f"str(os.getpid()))\ntime.sleep(600)")
    write_notebook(folder / "03_never.ipynb", "pass")
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--notebooks", str(folder)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not pid_file.exists() or not pid_file.read_text():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the slow notebook never started"
            time.sleep(0.2)
        kernel = int(pid_file.read_text())
        sent = time.monotonic()
        proc.send_signal(getattr(signal, how))
        out, err = proc.communicate(timeout=60)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == (143 if how == "SIGTERM" else 130), out + err
    assert took < 30
    name = "SIGTERM" if how == "SIGTERM" else "Ctrl-C"
    assert f"STOPPED by {name} while running 02_slow" in out
    assert "1 of 3 notebook(s) finished" in out
    assert "01_quick" in out and "03_never" not in out
    for _ in range(50):  # the kernel process may take a moment to exit
        if not pid_alive(kernel):
            break
        time.sleep(0.2)
    else:
        os.kill(kernel, signal.SIGKILL)
        pytest.fail(f"kernel {kernel} still runs after the benchmark stopped")
