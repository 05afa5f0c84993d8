"""Preprocessing inside the model: every kit model takes raw pixels (float 0-255).

The first layer after a model's input is a `Preprocess` layer named "preprocess". It is
saved with the model, so a `.keras` file, a checkpoint, a SavedModel or a TFLite file
predicts from raw pixels without `meta.json` (which only describes the model), the same way
`keras.applications.VGG16` expects its own input.
"""

from __future__ import annotations

import keras
import numpy as np

from ..data.normalise import VGG_MEAN_RGB

__all__ = ["Preprocess", "PREPROCESS_MODES", "preprocessing_of", "check_takes_raw_pixels"]

# "scale": x / 255 (the small CNNs); "vgg": RGB -> BGR minus the ImageNet means (VGG16's
# caffe-mode `preprocess_input`), or minus the grey mean for one channel.
PREPROCESS_MODES = ("scale", "vgg")
# Layers that turn raw pixels into a network's input; one of them must come first.
_INPUT_LAYERS = ("Preprocess", "Rescaling", "Normalization")


@keras.saving.register_keras_serializable(package="fer_utils")
class Preprocess(keras.layers.Layer):
    """Raw pixels (float 0-255, B×H×W×C) to the network's input: "scale" or "vgg"."""

    def __init__(self, mode: str = "scale", **kwargs):
        kwargs.setdefault("name", "preprocess")
        kwargs.setdefault("dtype", "float32")  # keeps the VGG means exact under bfloat16
        super().__init__(**kwargs)
        if mode not in PREPROCESS_MODES:
            raise ValueError(f"Preprocess: mode={mode!r} is not supported; allowed: "
                             f"{', '.join(PREPROCESS_MODES)}")
        self.mode = mode

    def call(self, x):
        """x / 255, or the VGG conversion (BGR order minus the ImageNet means)."""
        x = keras.ops.cast(x, "float32")
        if self.mode == "scale":
            return x / 255.0
        if x.shape[-1] == 3:
            mean_bgr = np.asarray(VGG_MEAN_RGB[::-1], np.float32)
            return keras.ops.flip(x, axis=-1) - mean_bgr
        return x - float(np.mean(VGG_MEAN_RGB))

    def compute_output_shape(self, input_shape):
        """The input's shape."""
        return input_shape

    def get_config(self):
        """The mode, for saving."""
        return {**super().get_config(), "mode": self.mode}


def _layers_of(model):
    """Every layer of `model`, looking inside nested models."""
    for layer in getattr(model, "layers", []):
        yield layer
        yield from _layers_of(layer)


def preprocessing_of(model) -> str | None:
    """The model's own preprocessing: "scale", "vgg", "rescaling", "normalization" or None."""
    for layer in _layers_of(model):
        kind = type(layer).__name__
        if kind == "Preprocess":
            return layer.mode
        if kind in _INPUT_LAYERS:
            return kind.lower()
    return None


def check_takes_raw_pixels(model, who: str) -> None:
    """Refuse a model without a preprocessing layer: it would get raw 0-255 pixels."""
    if preprocessing_of(model) is None:
        raise ValueError(
            f"{who}: model {getattr(model, 'name', '?')!r} has no preprocessing layer, but the "
            f"kit feeds raw pixels (0-255): start it with `fu.models.Preprocess('scale')` (x/255) "
            f"or `keras.layers.Rescaling(1/255)`, as every `fu.models` builder does")
