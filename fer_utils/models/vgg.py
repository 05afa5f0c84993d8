"""VGG16 transfer learning: the one VGG trunk of the kit, its weights, and a classifier on it.

The trunk is `keras.applications.VGG16(include_top=False)`: layer names `block1_conv1` ...
`block5_pool`, ImageNet weights from the Keras cache. `vgg16_classifier` here and E-Net /
EAC-Net (`fer_utils.models.eacnet`) are built by reusing the trunk's layers, so every VGG
model of the kit has the same conv groups, names and weights. A compact trunk (`width=1/8`:
the same five groups with an eighth of the channels, batch-normalised) trains from scratch on
a laptop.

The classifier takes raw pixels (float 0-255): its first layer, `Preprocess("vgg")`, makes
VGG's input (RGB -> BGR, ImageNet channel means subtracted), so a saved model predicts without
any outside preprocessing. The bare trunk (`vgg16_base`) takes VGG-preprocessed input, like
`keras.applications.VGG16`.
Training (cached frozen features, precision, checkpoints) is `fer_utils.train.fit_classifier`.
"""

from __future__ import annotations

import os
import socket
import warnings
from pathlib import Path

import keras
import numpy as np

from .. import config
from ..config import IMAGENET_NOTOP_FILE, imagenet_weights_path
from .preprocess import Preprocess

__all__ = [
    "VGG16_BASE_WEIGHTS", "VGG16_CONV_LAYERS", "VGG16_LAYERS", "VGG_MIN_SIZE",
    "IMAGENET_NOTOP_FILE",
    "IMAGENET_NOTOP_URL", "IMAGENET_NOTOP_MD5", "WeightsError", "imagenet_weights_path",
    "fetch_imagenet_weights", "vgg16_base", "call_trunk", "vgg16_classifier", "pretrained",
    "freeze_before", "check_trainable_from", "trainable_summary",
]

# VGG16's five conv groups as keras.applications.VGG16 names them.
VGG16_LAYERS = tuple(
    name for block, convs in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3))
    for name in [f"block{block}_conv{i}" for i in range(1, convs + 1)] + [f"block{block}_pool"])
VGG16_CONV_LAYERS = tuple(name for name in VGG16_LAYERS if "_conv" in name)
# The smallest input side VGG16 takes: five 2×2 poolings leave at least 1×1.
VGG_MIN_SIZE = 32
# Weights (kernels + biases) of the VGG16 conv base with 3 input channels.
VGG16_BASE_WEIGHTS = 14_714_688
IMAGENET_NOTOP_URL = ("https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
                      + IMAGENET_NOTOP_FILE)
IMAGENET_NOTOP_MD5 = "6d6bbae143d832006294945121d1f1fc"  # keras.applications.VGG16's hash
_NOT_CACHED = ("ImageNet VGG16 weights are not in the Keras cache (run `python -m fer_utils "
               "fetch-weights` with network access, or set FER_WEIGHTS=none or a path)")


class WeightsError(ValueError):
    """A VGG16 weights file is missing, unreadable or does not fit the model."""


# --------------------------------------------------------------------------------------------
# Weights: the Keras cache, the explicit download, files
# --------------------------------------------------------------------------------------------
def fetch_imagenet_weights(timeout: float = 20, url: str = IMAGENET_NOTOP_URL,
                           force: bool = False) -> Path:
    """Download the ImageNet VGG16 notop weights into the Keras cache (`fetch-weights` only).

    Uses `keras.utils.get_file(..., file_hash=IMAGENET_NOTOP_MD5, cache_subdir="models")`, the
    file and checksum `keras.applications.VGG16` uses.

    Args:
        timeout: seconds to wait for the server before giving up (fails fast when offline).
        url: where to download from (Keras' official location by default).
        force: download again even when the cache already holds the file.

    Returns:
        The path of the cached file.

    Raises:
        RuntimeError: the download failed (no network, timeout, bad checksum); the message says
        how the kit continues without the weights.
    """
    cached = imagenet_weights_path()
    if cached is not None and not force:
        return cached
    home = config.keras_homes()[0]
    target = home / "models" / IMAGENET_NOTOP_FILE
    if force:
        target.unlink(missing_ok=True)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        path = keras.utils.get_file(IMAGENET_NOTOP_FILE, url, cache_dir=str(home),
                                    cache_subdir="models",
                                    file_hash=IMAGENET_NOTOP_MD5 if url == IMAGENET_NOTOP_URL
                                    else None)
    except Exception as error:  # get_file wraps every network error in a plain Exception
        target.unlink(missing_ok=True)
        raise RuntimeError(
            f"could not download the ImageNet VGG16 weights from {url} within {timeout} s "
            f"({error}). Without network access the kit still works: it warns and trains VGG16 "
            f"from random initialisation (or set FER_WEIGHTS=none / a path to a weights file)."
        ) from None
    finally:
        socket.setdefaulttimeout(previous)
    return Path(path)


def _is_none(weights) -> bool:
    """True for weights=None or the string 'none' (any case)."""
    return weights is None or (isinstance(weights, str) and weights.strip().lower() == "none")


def _resolve_weights(weights) -> tuple[Path | None, str]:
    """(file to load or None, status): "imagenet", "file:NAME" or "random (reason)"."""
    if _is_none(weights):
        return None, "random (weights=none)"
    if isinstance(weights, str) and weights.strip().lower() == "imagenet":
        path = imagenet_weights_path()
        if path is None:
            return None, "random (ImageNet weights not in the Keras cache)"
        return path, "imagenet"
    path = Path(os.fspath(weights)).expanduser()
    return path, f"file:{path.name}"


def _check_weights(weights, input_shape) -> None:
    """Reject a weights value the builders cannot use, before building anything."""
    if _is_none(weights):
        return
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(f"weights must be 'imagenet', None, 'none' or a file path, "
                         f"got {weights!r}")
    text = os.fspath(weights).strip()
    if text.lower() != "imagenet" and not Path(text).expanduser().is_file():
        raise WeightsError(f"weights={text!r} is neither 'imagenet', 'none' nor an existing "
                           f"weights file")
    if input_shape[2] != 3:
        raise ValueError(f"pretrained VGG16 weights need 3 input channels, got input_shape="
                         f"{tuple(input_shape)!r}: convert grey faces to 3 channels in the input "
                         f"pipeline (to_tf_dataset(..., channels=3))")


def _load_weights(base, path: Path) -> None:
    """Load a Keras VGG16 notop file (`.h5`, or `.weights.h5` of a trunk) into `base`."""
    try:
        base.load_weights(str(path))
    except Exception as error:  # h5py, Keras and shape errors: one clear message
        text = " ".join(str(error).split())[:300]
        raise WeightsError(
            f"cannot load VGG16 weights from {str(path)!r}: {text}. Expected a Keras VGG16 "
            f"notop file ({IMAGENET_NOTOP_FILE}) or a .weights.h5 saved from "
            f"`fu.models.vgg.vgg16_base(...)`") from None


# --------------------------------------------------------------------------------------------
# The trunk
# --------------------------------------------------------------------------------------------
def _check_shape(input_shape, who: str = "vgg16") -> tuple:
    """Validate an (H, W, C) input shape for VGG16 (five 2×2 poolings need H, W >= 32)."""
    try:
        shape = tuple(int(v) for v in input_shape)
    except (TypeError, ValueError):
        raise ValueError(f"{who}: input_shape must be (height, width, channels), "
                         f"got {input_shape!r}") from None
    if len(shape) != 3 or shape[2] not in (1, 3) or min(shape[:2]) < VGG_MIN_SIZE:
        raise ValueError(f"{who}: input_shape must be (height, width, channels) with height and "
                         f"width >= 32 and 1 or 3 channels, got {input_shape!r}")
    return shape


def _check_width(width, weights) -> float:
    """A channel multiplier in (0, 1]; below 1 the trunk trains from scratch (no weights)."""
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not 0 < width <= 1:
        raise ValueError(f"width must be a number in (0, 1] (1: VGG16, 1/8: compact), "
                         f"got {width!r}")
    if width < 1 and not _is_none(weights):
        raise ValueError(f"a compact trunk (width={width:g}) has its own channel counts and "
                         f"trains from scratch: use weights=None, got weights={weights!r}")
    return float(width)


# VGG16's channels per conv group (block1 ... block5).
_GROUP_FILTERS = (64, 128, 256, 512, 512)


def _trunk_layers_on(x, width: float):
    """The compact trunk: VGG16's conv groups on tensor `x` with `width` times the channels
    (at least 4), and every conv's INPUT batch-normalised (`<conv>_bn`), so that 13
    convolutions train from scratch: without it the stack of 13 ReLU convolutions (Glorot-
    initialised, as in Keras' VGG16) stalls at the loss of the label prior for epochs.
    Normalising the input keeps every named VGG layer's output what it is in VGG16 (a conv's
    ReLU output), so E-Net fuses its map and Grad-CAM reads `block4_conv3` at the same place.
    """
    for name in VGG16_LAYERS:
        group = int(name[5])
        if name.endswith("_pool"):
            x = keras.layers.MaxPooling2D(2, strides=2, name=name)(x)
            continue
        x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
        filters = max(4, int(round(_GROUP_FILTERS[group - 1] * width)))
        x = keras.layers.Conv2D(filters, 3, activation="relu", padding="same", name=name)(x)
    return x


def _trunk_on(inputs, x, weights, width: float):
    """The VGG trunk's layers on tensor `x` (VGG-preprocessed input), with their weights:
    `keras.applications.VGG16(input_tensor=x)`, or the compact trunk below width 1.

    Returns:
        (the trunk as a Keras model from `inputs` (x's source) to `block5_pool`, weights status).
    """
    path, status = _resolve_weights(weights)
    if width < 1:
        status = f"random (compact trunk, width {width:g})"
    if width == 1:
        trunk = keras.applications.VGG16(include_top=False, weights=None, input_tensor=x)
        if path is not None:
            _load_weights(trunk, path)
    else:
        trunk = keras.Model(inputs, _trunk_layers_on(x, width), name="vgg16")
    return trunk, status


def vgg16_base(input_shape=(96, 96, 3), weights="imagenet", width: float = 1.0,
               name: str = "vgg16"):
    """The VGG16 conv base (`block1_conv1` ... `block5_pool`) with its weights.

    The base takes VGG-preprocessed input, as `keras.applications.VGG16` does; the kit's
    models put a `Preprocess("vgg")` layer in front of it, so that they take raw pixels.

    Args:
        input_shape: (height, width, channels) of the VGG-preprocessed input; >= 32 px.
        weights: "imagenet" (the Keras cache; never downloads: random with a warning when
            absent), None / "none", or the path of a Keras VGG16 notop `.h5` file (or a
            `.weights.h5` saved from this trunk).
        width: channel multiplier: 1 is VGG16; below 1 the compact trunk (1/8: the same five
            groups with 8-64 channels, and a batch normalisation `<conv>_bn` before every
            conv) that trains from scratch (weights must be None).
        name: the model's name.

    Returns:
        The trunk, layer for layer `keras.applications.VGG16(include_top=False)` (or its
        narrowed version); `model.weights_status` says which weights were loaded
        ("imagenet", "file:NAME" or "random (...)").
    """
    shape = _check_shape(input_shape)
    width = _check_width(width, weights)
    _check_weights(weights, shape)
    inputs = keras.Input(shape=shape, name="input_layer")
    base, status = _trunk_on(inputs, inputs, weights, width)
    base.name = name
    base.weights_status = status
    return base


def call_trunk(base, inputs, after=None):
    """Call the trunk's layers, in order, on new inputs: same names, configs and weights.

    Each layer is re-created from its config (so that it belongs to the new model alone) and
    gets the trunk's weights.

    Args:
        base: a trunk from `vgg16_base`.
        inputs: a Keras tensor (the new model's image input).
        after: optional `function(layer_name, x) -> x` applied after each layer (E-Net fuses
            the attention map after `block3_conv3` and `block4_conv3`).

    Returns:
        The output tensor of `block5_pool` (or of `after` there).
    """
    x = inputs
    for layer in base.layers[1:]:
        twin = layer.__class__.from_config(layer.get_config())
        x = twin(x)
        if layer.weights:
            twin.set_weights(layer.get_weights())
        if after is not None:
            x = after(layer.name, x)
    return x


def pretrained(status: str) -> bool:
    """True when a weights status says real weights were loaded (not "random ...")."""
    return not str(status).startswith("random")


def freeze_before(model, trainable_from, status: str, default: str, who: str,
                  verbose: bool = True) -> None:
    """Freeze the layers before `trainable_from`; with random weights nothing is frozen.

    Says so once: a warning when ImageNet weights were asked for but are not in the cache, or
    when layers holding random weights are frozen on request; otherwise (weights none) one
    printed line when `verbose`.

    Args:
        model: a model holding VGG16's layers by name.
        trainable_from: "auto" (`default` with pretrained weights, None with random ones), a
            layer name, "head" (every VGG layer frozen) or None (everything trains).
        status: the weights status of the trunk ("imagenet", "file:...", "random (...)").
        default: the first trainable layer of "auto" with pretrained weights.
        who: the builder's name, for messages.
        verbose: print the line about random weights.
    """
    if trainable_from == "auto":
        trainable_from = default if pretrained(status) else None
    if not pretrained(status):
        missing = _NOT_CACHED + "; continuing with random initialisation" \
            if "Keras cache" in status else f"VGG16 weights {status}"
        if trainable_from is not None:
            warnings.warn(f"{who}: {missing}, yet trainable_from={trainable_from!r} freezes the "
                          f"layers before it: frozen random filters teach nothing",
                          UserWarning, stacklevel=3)
        elif "Keras cache" in status:
            warnings.warn(f"{who}: {missing}: nothing is frozen, every layer trains",
                          UserWarning, stacklevel=3)
        elif verbose and "compact" in status:
            print(f"{who}: the compact VGG trunk trains from scratch: every layer trains")
        elif verbose:
            print(f"{who}: {missing}: nothing is frozen, every layer trains (frozen random "
                  f"filters teach nothing)")
    if trainable_from is None:
        return
    if trainable_from == "head":
        frozen = [layer for layer in model.layers  # the trunk, with the compact one's `_bn`s
                  if layer.name.removesuffix("_bn") in VGG16_LAYERS]
    else:
        frozen = model.layers[:[layer.name for layer in model.layers].index(trainable_from)]
    for layer in frozen:
        layer.trainable = False


def check_trainable_from(trainable_from, valid, who: str) -> None:
    """Reject a `trainable_from` that names no layer, listing the valid ones."""
    if trainable_from not in (None, "auto") and trainable_from not in valid:
        raise ValueError(f"{who}: trainable_from={trainable_from!r} is not a layer of the model;"
                         f" valid: 'auto', None (train everything), {', '.join(valid)}")


# --------------------------------------------------------------------------------------------
# The classifier
# --------------------------------------------------------------------------------------------
def _check_head(num_classes, head, dropout, pooling) -> tuple:
    """Validate the head arguments of `vgg16_classifier`; return the head units."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
            or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    try:
        units = tuple(int(u) for u in head)
    except (TypeError, ValueError):
        raise ValueError(f"head must be a sequence of positive unit counts, got {head!r}") from None
    if any(u < 1 for u in units):
        raise ValueError(f"head must be a sequence of positive unit counts, got {head!r}")
    if not 0 <= float(dropout) < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    if pooling not in ("avg", "max", "flatten"):
        raise ValueError(f"pooling must be 'avg', 'max' or 'flatten', got {pooling!r}")
    return units


def vgg16_classifier(input_shape=(96, 96, 3), num_classes: int = 7, weights="imagenet",
                     trainable_from: str | None = "auto", head=(2048,), dropout: float = 0.5,
                     pooling: str = "avg", width: float = 1.0, name: str = "vgg16_fer",
                     verbose: bool = True):
    """VGG16 (the trunk's layers) with a new classification head.

    The source's recipe is `trainable_from="block5_conv1"` (conv1-4 frozen, conv5 trains)
    with `head=(4096, 2048)`, `pooling="flatten"` (fc6, fc7) and a 7-way softmax (fc8). The
    default head is lighter (global average pooling, one 2048-unit layer) so that it works at
    any input size. The model takes raw pixels (0-255); grey 48 px faces are made 3-channel
    and resized by the input pipeline (`fu.data.to_tf_dataset(..., image_size=96, channels=3)`).

    Args:
        input_shape: (height, width, channels) of the raw-pixel input; >= 32 px.
        num_classes: number of classes of the softmax output (>= 2).
        weights: "imagenet", None / "none" or a path to VGG16 notop weights (`vgg16_base`).
        trainable_from: first trainable layer. "auto": `block5_conv1` with pretrained weights
            and None (everything trains) with random ones; a conv-base layer name
            (`block4_conv1`, ...); "head" (only the new head trains); None (everything trains).
            Freezing random weights explicitly is allowed (e.g. to time the recipe) and warns.
        head: units of the hidden fully connected layers (named fc6, fc7, ...); () for none.
        dropout: dropout rate after each hidden layer (0 for none).
        pooling: "avg" (global average pooling), "max" or "flatten" (the source's choice).
        width: channel multiplier of the trunk (1: VGG16; 1/8: compact, from scratch).
        name: the model's name.
        verbose: say so (one line) when random weights leave every layer trainable.

    Returns:
        A Keras Model (input "image", softmax output "predictions"); `model.weights_status`
        tells which weights were loaded.
    """
    who = "vgg16_classifier"
    shape = _check_shape(input_shape, who)
    check_trainable_from(trainable_from, VGG16_LAYERS + ("head",), who)
    units = _check_head(num_classes, head, dropout, pooling)
    width = _check_width(width, weights)
    _check_weights(weights, shape)

    inputs = keras.Input(shape=shape, name="image")
    # Raw pixels -> VGG's input (RGB -> BGR minus the ImageNet means), inside the model.
    x = Preprocess("vgg", name="preprocess")(inputs)
    # Blocks 1-5: VGG16's layers built on x, with their weights.
    trunk, status = _trunk_on(inputs, x, weights, width)
    x = trunk.output
    # Head: pooling, hidden fully connected layers (fc6, fc7, ...), softmax (fc8 in the source).
    if pooling == "flatten":
        x = keras.layers.Flatten(name="flatten")(x)
    elif pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    else:
        x = keras.layers.GlobalMaxPooling2D(name="max_pool")(x)
    for i, n in enumerate(units):
        x = keras.layers.Dense(n, activation="relu", name=f"fc{6 + i}")(x)
        if dropout:
            x = keras.layers.Dropout(float(dropout), name=f"drop{6 + i}")(x)
    outputs = keras.layers.Dense(int(num_classes), activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, outputs, name=name)
    model.weights_status = status
    freeze_before(model, trainable_from, status, "block5_conv1", who, verbose)
    return model


def trainable_summary(model):
    """A pandas DataFrame: each layer with its weight count and whether it trains."""
    import pandas as pd

    rows = []
    for layer in model.layers:
        count = int(sum(np.prod(w.shape) for w in layer.weights))
        rows.append({"layer": layer.name, "type": type(layer).__name__, "weights": count,
                     "trainable": bool(layer.trainable) and count > 0})
    return pd.DataFrame(rows)
