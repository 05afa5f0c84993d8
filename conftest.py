"""Test session settings: the ci profile, quiet TensorFlow, fer_utils importable in kernels."""

import os
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent

# Notebooks and subprocesses inherit these: a bare `pytest` runs the course in the ci profile
# (FER_PROFILE unset or empty, as docker-compose.yml passes it unless the caller sets one).
if not os.environ.get("FER_PROFILE", "").strip():
    os.environ["FER_PROFILE"] = "ci"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")
# nbval starts each notebook's kernel in notebooks/: make the project's fer_utils importable there.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
