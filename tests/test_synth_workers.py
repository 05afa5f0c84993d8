"""The built-in set's worker processes: any caller's script finishes, with the same bytes."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fer_utils import synth

ROOT = Path(__file__).resolve().parents[1]
# What a learner writes: no `if __name__ == "__main__":` guard around the call.
UNGUARDED = """
import hashlib
from fer_utils import synth
faces = synth.make_dataset(3000, seed=1, size=48, cache=False, progress=False)
print(len(faces), hashlib.md5(faces.images.tobytes() + faces.aus.tobytes()).hexdigest())
"""


def _python(tmp_path, args, stdin=None, timeout=60):
    """Run the venv's Python on `args` in tmp_path with fer_utils importable; fail on a timeout."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH"))
                                          if p))
    try:
        return subprocess.run([sys.executable, *args], input=stdin, capture_output=True,
                              text=True, timeout=timeout, env=env, cwd=tmp_path)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"make_dataset did not finish within {timeout} s; stderr ends with:\n"
                    f"{(error.stderr or b'')[-1500:]}")


def _digest(faces) -> str:
    return hashlib.md5(faces.images.tobytes() + faces.aus.tobytes()).hexdigest()


@pytest.fixture(scope="module")
def unguarded_runs(tmp_path_factory):
    """The unguarded script run as a file and from stdin (`python -`)."""
    folder = tmp_path_factory.mktemp("scripts")
    script = folder / "make_faces.py"
    script.write_text(UNGUARDED)
    return {"file": _python(folder, [str(script)]),
            "stdin": _python(folder, ["-"], stdin=UNGUARDED)}


@pytest.mark.parametrize("how", ["file", "stdin"])
def test_unguarded_script_finishes_over_workers(unguarded_runs, how):
    """Workers start (no fallback warning) and never re-run the caller's script."""
    result = unguarded_runs[how]
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "bootstrapping" not in result.stderr
    assert "could not start" not in result.stderr, result.stderr[-1000:]
    assert result.stdout.split()[0] == "3000"


def test_file_and_stdin_scripts_render_the_same_faces(unguarded_runs):
    digests = {how: run.stdout.split()[-1] for how, run in unguarded_runs.items()}
    assert digests["file"] == digests["stdin"], digests


WORKERS_CANNOT_START = """
import sys
sys.executable = "/bin/false"  # every worker process exits at once
from fer_utils import synth
synth.dataset.CHUNK = 20
faces = synth.make_dataset(60, seed=5, cache=False, progress=False, workers=2)
import hashlib
print(len(faces), hashlib.md5(faces.images.tobytes() + faces.aus.tobytes()).hexdigest())
"""


def test_workers_that_cannot_start_fall_back_to_one_process_with_one_line(tmp_path):
    result = _python(tmp_path, ["-"], stdin=WORKERS_CANNOT_START)
    assert result.returncode == 0, result.stderr[-2000:]
    said = [line for line in result.stderr.splitlines() if "render worker" in line]
    assert len(said) == 1, result.stderr[-2000:]
    assert "could not start" in said[0] and "remaining 60 faces in this process" in said[0]
    assert "Traceback" not in result.stderr
    count, digest = result.stdout.split()
    serial = synth.make_dataset(60, seed=5, cache=False, progress=False, workers=1)
    assert (count, digest) == ("60", _digest(serial))


def test_workers_give_the_same_bytes_as_one_process(monkeypatch):
    one = synth.make_dataset(42, seed=3, cache=False, progress=False, workers=1)
    monkeypatch.setattr(synth.dataset, "CHUNK", 10)  # several jobs over 2 processes
    two = synth.make_dataset(42, seed=3, cache=False, progress=False, workers=2)
    assert one.images.tobytes() == two.images.tobytes()
    assert np.array_equal(one.labels, two.labels) and np.array_equal(one.intensity, two.intensity)
    assert np.array_equal(one.aus, two.aus) and np.array_equal(one.landmarks, two.landmarks)


RENDER_AFTER_TF = """
import hashlib, tensorflow as tf
tf.reduce_sum(tf.random.uniform((256, 256)) @ tf.random.uniform((256, 256)))  # TF threads run
from fer_utils import synth
synth.dataset.CHUNK = 10
faces = synth.make_dataset(40, seed=5, cache=False, progress=False, workers=2)
print(hashlib.md5(faces.images.tobytes() + faces.aus.tobytes()).hexdigest())
"""


def test_workers_are_safe_after_tensorflow_is_loaded(tmp_path):
    result = _python(tmp_path, ["-c", RENDER_AFTER_TF], timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "could not start" not in result.stderr, result.stderr[-1000:]
    serial = synth.make_dataset(40, seed=5, cache=False, progress=False, workers=1)
    assert result.stdout.split()[-1] == _digest(serial)
