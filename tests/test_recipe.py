"""The training recipe end to end: a real `train` killed with SIGKILL resumes where it was."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
STEPS = 15  # the ci profile's 479 training faces in batches of 32
EPOCHS = 6
RATE = 2e-3  # the small recipe's first rate


def _train(workdir: Path, out: Path):
    """`python -m fer_utils train` (ci profile, built-in set) as a child process."""
    env = dict(os.environ, FER_PROFILE="ci", FER_DATASET="synthetic", FER_WEIGHTS="none",
               FER_DATA_DIR=str(workdir / "data"), FER_LOG_DIR=str(workdir / "logs"),
               TF_CPP_MIN_LOG_LEVEL="2", MPLBACKEND="Agg",
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH"))
                                          if p))
    return subprocess.Popen([sys.executable, "-m", "fer_utils", "train", "--out", str(out),
                             "--epochs", str(EPOCHS), "--tta", "off", "--precision", "fp32"],
                            cwd=workdir, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _cosine(step: int, total: int) -> float:
    return RATE * 0.5 * (1 + np.cos(np.pi * step / total))


@pytest.mark.slow
def test_a_killed_run_resumes_with_the_schedule_and_the_budget(tmp_path):
    out = tmp_path / "run"
    state = out / "backup" / "schedule.json"
    first = _train(tmp_path, out)
    deadline = time.time() + 600
    while time.time() < deadline and first.poll() is None:  # wait for epoch 2 to be saved
        if state.is_file() and json.loads(state.read_text())["steps_done"] >= 2 * STEPS:
            break
        time.sleep(0.2)
    assert first.poll() is None, first.communicate()[1][-3000:]
    time.sleep(1.0)  # into epoch 3
    first.send_signal(signal.SIGKILL)
    first.communicate()
    saved = json.loads(state.read_text())
    done = saved["steps_done"] // STEPS
    assert 2 <= done < EPOCHS and (out / "backup").is_dir()

    second = _train(tmp_path, out)
    stdout, stderr = second.communicate(timeout=900)
    assert second.returncode == 0, stderr[-3000:]
    assert f"resuming at epoch {done + 1}: the schedule continues at step {done * STEPS} of " \
           f"{EPOCHS * STEPS}" in stdout
    meta = json.loads((out / "meta.json").read_text())
    assert [a["from_epoch"] for a in meta["resumed"]] == [done]
    assert meta["schedule"]["steps_done"] == EPOCHS * STEPS
    assert meta["schedule"]["training_seconds"] > saved["training_seconds"]
    assert meta["epochs"] == EPOCHS - done and not (out / "backup").exists()
    # Every epoch's last rate is the cosine over the 90 planned steps, before the kill and
    # after it: the schedule continued instead of starting over.
    with open(out / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == list(range(EPOCHS))
    np.testing.assert_allclose([float(r["learning_rate"]) for r in rows],
                               [_cosine((e + 1) * STEPS - 1, EPOCHS * STEPS)
                                for e in range(EPOCHS)], rtol=1e-5)


def test_resuming_with_other_options_is_refused(tmp_path):
    from fer_utils import config
    from fer_utils.train.recipe import Recipe, _check_out, plan_run

    settings = config.get_settings({"FER_PROFILE": "ci", "FER_DATASET": "synthetic",
                                    "FER_LOG_DIR": str(tmp_path), "FER_DATA_DIR": str(tmp_path)})
    out = tmp_path / "run"
    _check_out(out, plan_run(Recipe(epochs=4), settings), settings)
    (out / "backup").mkdir()  # an interrupted run
    _check_out(out, plan_run(Recipe(epochs=4), settings), settings)  # the same: resumes
    with pytest.raises(ValueError, match=r"holds an interrupted run made with other options "
                                         r"\(batch_size, epochs\)"):
        _check_out(out, plan_run(Recipe(epochs=5, batch_size=8), settings), settings)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        _check_out(tmp_path / "file", plan_run(Recipe(), settings), settings)
