"""tflearn 0.5.0, the source's framework, made importable on today's TensorFlow (appendix 90).

tflearn's last release (2020) no longer imports on TensorFlow >= 2.13 or Pillow >= 10.
`import_tflearn()` applies the few runtime fixes it needs, in memory only (no file in
site-packages changes), then imports it.

Warning: importing tflearn calls `tf.compat.v1.disable_v2_behavior()`: the whole Python process
switches to TensorFlow 1 graph mode (no eager execution, no Keras 3 training, no `tf.data`
iteration). Use it in its own kernel or subprocess, never next to the Keras notebooks.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np

__all__ = ["COMPAT_FIXES", "GraphModeWarning", "import_tflearn", "tflearn_conv_scope",
           "load_vgg16_conv_weights"]

# What each fix restores, and why it is needed (shown by the appendix notebook).
COMPAT_FIXES = {
    "tensorflow.python.util.nest.is_sequence = nest.is_nested":
        "removed in TensorFlow 2.13; tflearn.layers.recurrent imports it at import time",
    "PIL.Image.ANTIALIAS = PIL.Image.LANCZOS":
        "removed in Pillow 10; tflearn.data_utils uses it as a default argument at import time",
    "IPython.core.display.clear_output = IPython.display.clear_output (in a notebook)":
        ("moved in IPython 9; tflearn looks for it there to redraw its progress line in a notebook "
         "(without it: one line per step, or raw terminal codes)"),
}


class GraphModeWarning(UserWarning):
    """tflearn switched this process to TensorFlow 1 graph mode (eager execution is off)."""


def _in_notebook() -> bool:
    """True inside a Jupyter (ipykernel) kernel."""
    shell = sys.modules.get("IPython")
    if shell is None or "ipykernel" not in sys.modules:
        return False
    ipython = shell.get_ipython()
    return ipython is not None and ipython.__class__.__name__ == "ZMQInteractiveShell"


def _apply_fixes() -> list[str]:
    """Apply the in-memory compatibility fixes that are needed; return the ones applied."""
    applied = []
    from tensorflow.python.util import nest

    if not hasattr(nest, "is_sequence"):
        nest.is_sequence = nest.is_nested
        applied.append("nest.is_sequence")

    import PIL.Image

    if not hasattr(PIL.Image, "ANTIALIAS"):
        PIL.Image.ANTIALIAS = PIL.Image.LANCZOS
        applied.append("PIL.Image.ANTIALIAS")

    if _in_notebook():
        import IPython.core.display as core_display
        import IPython.display

        if not hasattr(core_display, "clear_output"):
            core_display.clear_output = IPython.display.clear_output
            applied.append("IPython.core.display.clear_output")
    return applied


def import_tflearn(quiet: bool = True):
    """Import tflearn 0.5.0 on the pinned TensorFlow/Pillow and return the module.

    Args:
        quiet: hide the flood of TensorFlow 1 deprecation warnings that tflearn triggers.

    Returns:
        The `tflearn` module. The process is in graph mode afterwards (a GraphModeWarning says
        so): keep tflearn in its own kernel or subprocess.
    """
    if not isinstance(quiet, bool):
        raise TypeError(f"quiet must be True or False, got {quiet!r}")
    already = "tflearn" in sys.modules
    import tensorflow as tf

    if quiet:
        tf.get_logger().setLevel("ERROR")
    _apply_fixes()
    with warnings.catch_warnings():
        if quiet:
            warnings.simplefilter("ignore", DeprecationWarning)
        import tflearn
    if _in_notebook():
        # Jupyter renders terminal cursor codes as text: use IPython's in-place display.
        import tflearn.callbacks

        tflearn.callbacks.CURSES_SUPPORTED = False
    if not already:
        warnings.warn(
            "tflearn switched this Python process to TensorFlow 1 graph mode "
            "(tf.compat.v1.disable_v2_behavior(): eager execution is off). Keras 3 models, "
            "tf.data iteration and the other notebooks will not work in this process: keep "
            "tflearn in its own kernel (restart the kernel afterwards).",
            GraphModeWarning, stacklevel=2)
    return tflearn


def tflearn_conv_scope(keras_name: str) -> str:
    """The source's tflearn scope of a Keras VGG16 conv layer: `block5_conv1` -> `conv5_1`."""
    import re

    match = re.fullmatch(r"block([1-5])_conv([1-3])", str(keras_name))
    if not match:
        raise ValueError(f"{keras_name!r} is not a Keras VGG16 conv layer name "
                         f"(block1_conv1 ... block5_conv3)")
    return f"conv{match.group(1)}_{match.group(2)}"


# Reads VGG16 conv weights with Keras in a fresh interpreter: tflearn put this one in graph
# mode, where Keras 3 cannot run. argv: project root, weights, output .npz.
_READ_CONV_WEIGHTS = """
import os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, sys.argv[1])
import numpy as np
from fer_utils.models import vgg
try:
    base = vgg.vgg16_base((32, 32, 3), weights=sys.argv[2])
except ValueError as error:
    sys.exit(f"error: {error}")
arrays = {}
for name in vgg.VGG16_CONV_LAYERS if vgg.pretrained(base.weights_status) else ():
    arrays[name + "__kernel"], arrays[name + "__bias"] = base.get_layer(name).get_weights()
np.savez(sys.argv[3], status=base.weights_status, **arrays)
"""


def _keras_conv_weights(weights) -> tuple[str, dict]:
    """(status, {Keras conv layer name: (kernel, bias)}) read by Keras in a subprocess."""
    import os
    import subprocess
    import tempfile
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    with tempfile.TemporaryDirectory(prefix="fer_vgg16_") as tmp:
        target = Path(tmp) / "conv.npz"
        proc = subprocess.run([sys.executable, "-c", _READ_CONV_WEIGHTS, root, str(weights),
                               str(target)], capture_output=True, text=True, timeout=600,
                              env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
        if proc.returncode != 0 or not target.is_file():
            lines = [line for line in proc.stderr.splitlines() if line.strip()]
            reason = lines[-1].removeprefix("error: ") if lines else f"exit {proc.returncode}"
            raise ValueError(f"cannot read VGG16 weights {str(weights)!r}: {reason}")
        with np.load(target) as stored:
            status = str(stored["status"])
            arrays = {key.rsplit("__", 1)[0]: (stored[key], stored[key.replace("kernel", "bias")])
                      for key in stored.files if key.endswith("__kernel")}
    return status, arrays


def load_vgg16_conv_weights(model, weights="imagenet") -> str:
    """Copy Keras' VGG16 conv weights into a tflearn model's `conv1_1` ... `conv5_3` layers.

    The stand-in for the source's lost `vgg16.tflearn`: the ImageNet weights Keras publishes
    (fetched into the Docker image at build time), read by `keras.applications.VGG16` in a
    separate Python process (this one is in graph mode). Keras' VGG16 was trained on BGR
    input, the source's tflearn pipeline feeds RGB, so conv1_1's input channels are reversed.

    Args:
        model: a `tflearn.DNN` whose conv layers use the source's scopes (`conv1_1` ...).
        weights: "imagenet" (the Keras cache; never downloads), "none", or a Keras VGG16
            notop `.h5` path.

    Returns:
        A short status: "imagenet", "file:NAME" or "random (reason)".

    Raises:
        ValueError: the file cannot be read, a layer is missing from the model, or its shapes
            differ from the file's.
    """
    import tflearn

    if weights is None or (isinstance(weights, str) and weights.strip().lower() == "none"):
        return "random (weights=none)"
    status, stored = _keras_conv_weights(weights)
    if not stored:
        return status
    updates = []
    for name, (kernel, bias) in stored.items():
        scope = tflearn_conv_scope(name)
        variables = tflearn.variables.get_layer_variables_by_name(scope)
        if len(variables) != 2:
            raise ValueError(f"layer {scope!r}: expected a tflearn conv_2d with scope={scope!r} "
                             f"in the model for {name!r}")
        if name == "block1_conv1":
            kernel = kernel[:, :, ::-1, :]  # BGR-trained kernel, RGB input
        for variable, value in zip(variables, (kernel, bias)):
            if tuple(variable.shape) != value.shape:
                raise ValueError(f"layer {scope!r}: the model has shape {tuple(variable.shape)} "
                                 f"but the weights have {value.shape} for {name!r}")
        updates.append((variables, (kernel, bias)))
    for variables, values in updates:  # only after every layer was checked: all or nothing
        for variable, value in zip(variables, values):
            model.set_weights(variable, value)
    return status
