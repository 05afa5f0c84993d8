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

# CI with a Docker engine (.ci/run sets FER_TESTS_IN=container once the engine is up): every
# test and notebook runs in the image that learners use, through the README's
# `docker compose run --rm lab pytest`, and Chromium runs every notebook in the container's
# JupyterLab; both are driven by tests/test_docker.py, the one test file this session keeps
# (running the same tests here too would double CI's time). Anywhere else a bare `pytest` runs
# everything here.
TESTS_IN_CONTAINER = os.environ.get("FER_TESTS_IN", "") == "container"
_DRIVER = ROOT / "tests" / "test_docker.py"


def pytest_ignore_collect(collection_path, config):
    """With FER_TESTS_IN=container, collect only the Docker test (it runs the rest)."""
    if not TESTS_IN_CONTAINER:
        return None
    path = pathlib.Path(collection_path)
    if path.is_dir():
        return None
    return path.resolve() != _DRIVER


def pytest_report_header(config):
    """Say where the tests run."""
    if TESTS_IN_CONTAINER:
        return ("FER_TESTS_IN=container: tests and notebooks run in the Docker image "
                "(tests/test_docker.py runs `docker compose run --rm lab pytest`)")
    return None
