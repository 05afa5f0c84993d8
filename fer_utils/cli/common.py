"""What every command needs: the settings, a quiet TensorFlow, an output folder."""

from __future__ import annotations

import os
from pathlib import Path

from .parser import CliError

__all__ = ["load_settings", "quiet_tensorflow", "check_output_folder"]


def load_settings():
    """The validated FER_* settings (raises SettingsError naming a bad variable)."""
    from ..config import get_settings

    return get_settings()


def quiet_tensorflow() -> None:
    """Keep TensorFlow's C++ and Python logging to errors (set before importing it)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:  # pragma: no cover - absl ships with TensorFlow
        pass


def check_output_folder(path: Path, what: str = "--out") -> Path:
    """Create an output folder, or fail with a one-line error when it is a file."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CliError(f"{what} {path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CliError(f"cannot create {what} folder {path}: {err.strerror or err}") from None
    return path
