"""fer_utils: the one helper package of the facial-expression course kit.

Submodules are imported lazily (`fu.data`, `fu.models`, ...), so `import fer_utils as fu`
is cheap; notebooks then call `fu.setup()` once.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import tempfile
import warnings

from .config import Settings, SettingsError, get_settings

__version__ = "0.1.0"

_SUBMODULES = ("attention", "augment", "bench", "camera", "config", "cpu", "data", "export",
               "faces", "faceset", "images", "inference", "labelling", "legacy", "metrics",
               "models", "optimizers", "photo_folder", "plots", "synth", "synth_clip",
               "tracking", "train", "video")

__all__ = ["Settings", "SettingsError", "get_settings", "setup", *_SUBMODULES]


def __getattr__(name: str):
    """Import a submodule on first use (`fu.synth`), so importing the package stays light."""
    if name in _SUBMODULES:
        module = importlib.import_module(f".{name}", __name__)
        globals()[name] = module
        return module
    raise AttributeError(f"module 'fer_utils' has no attribute {name!r}")


@contextlib.contextmanager
def _stderr_held(active: bool):
    """Hold back C-level stderr while TensorFlow loads (its oneDNN/absl banner ignores log
    levels); if the import fails, what it wrote is replayed, so a native error stays visible."""
    if not active:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            sys.stderr.write(held.read().decode(errors="replace"))
            sys.stderr.flush()
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def setup(seed: int | None = None, quiet: bool = True, plots: bool = True,
          verbose: bool = True) -> Settings:
    """Prepare a notebook or script: settings, folders, seeds, quiet logs, plot style, banner.

    Args:
        seed: random seed for Python, NumPy and TensorFlow; default: `FER_SEED` or 1234.
        quiet: silence TensorFlow's C++ and Python log noise (warnings stay visible).
        plots: apply the course's matplotlib defaults.
        verbose: print the one-line banner (TensorFlow, devices, profile, data set, weights, seed).

    Returns:
        The validated Settings (see `fer_utils.config.get_settings`).
    """
    settings = get_settings()
    if seed is not None:
        settings = Settings(**{**settings.__dict__, "seed": int(seed)})
    if quiet:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings.log_dir.mkdir(parents=True, exist_ok=True)

    with _stderr_held(quiet and "tensorflow" not in sys.modules):
        import tensorflow as tf
    import keras

    if quiet:
        # Keras 3 warns on every fit() with a tf.data dataset that `shuffle` is ignored.
        warnings.filterwarnings("ignore", message=r"`shuffle=True` was passed")
        tf.get_logger().setLevel("ERROR")
        try:
            import absl.logging

            absl.logging.set_verbosity(absl.logging.ERROR)
        except ImportError:  # pragma: no cover - absl ships with TensorFlow
            pass
    keras.utils.set_random_seed(settings.seed)
    if plots:
        from . import plots as _plots

        _plots.set_style()
    if verbose:
        print(settings.banner())
    return settings
