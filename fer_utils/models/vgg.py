"""VGG16 transfer learning: the conv base with ImageNet weights, a new head, a fast fine-tune.

The conv base keeps Keras' layer names (`block1_conv1` ... `block5_pool`), so weights from
`keras.applications.VGG16` files load by name, and other models (E-Net) can reuse
`load_vgg16_weights`. The models take VGG-preprocessed input (RGB -> BGR, ImageNet channel
means subtracted, 0-255 scale), exactly like `keras.applications.VGG16`: grey 48 px faces are
resized and turned into 3 channels in the input pipeline, e.g.
`fu.data.to_tf_dataset(fs, image_size=96, channels=3, preprocess="vgg")` or `vgg_preprocess`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import time
import warnings
from pathlib import Path

import numpy as np

__all__ = [
    "VGG16_BASE_WEIGHTS", "VGG16_CONV_LAYERS", "VGG16_LAYERS", "VGG_MEAN_RGB",
    "IMAGENET_NOTOP_FILE", "IMAGENET_NOTOP_URL", "WeightsError",
    "vgg16_base", "vgg16_classifier", "load_vgg16_weights", "fetch_imagenet_weights",
    "imagenet_weights_path", "vgg_preprocess", "trainable_summary", "split_frozen",
    "FineTuneResult", "fine_tune",
]

# The ImageNet per-channel means (R, G, B) that VGG16 was trained with (the source's
# featurewise zero centre [123.68, 116.779, 103.939]).
VGG_MEAN_RGB = (123.68, 116.779, 103.939)
# (block, number of 3×3 convs, filters) of VGG16's five conv blocks.
_BLOCKS = ((1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512), (5, 3, 512))
VGG16_CONV_LAYERS = tuple(f"block{b}_conv{i}" for b, n, _ in _BLOCKS for i in range(1, n + 1))
VGG16_LAYERS = tuple(name for b, n, _ in _BLOCKS
                     for name in [f"block{b}_conv{i}" for i in range(1, n + 1)] + [f"block{b}_pool"])
# Weights (kernels + biases) of the VGG16 conv base with 3 input channels.
VGG16_BASE_WEIGHTS = 14_714_688
IMAGENET_NOTOP_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
IMAGENET_NOTOP_URL = ("https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
                      + IMAGENET_NOTOP_FILE)
_IMAGENET_NOTOP_MD5 = "6d6bbae143d832006294945121d1f1fc"
OFFLINE_WARNING = (
    "ImageNet VGG16 weights are not available offline (run `python -m fer_utils fetch-weights` "
    "with network access, or set FER_WEIGHTS=none / a path); continuing with random "
    "initialisation — fine-tuning then trains from scratch")


class WeightsError(ValueError):
    """A VGG16 weights file is missing, unreadable or does not fit the model."""


# --------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------
def _keras_home_candidates() -> list[Path]:
    """Folders where Keras keeps downloads: $KERAS_HOME or ~/.keras, then /tmp/.keras."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return [Path(home), Path("/tmp/.keras")]


def imagenet_weights_path(existing_only: bool = True) -> Path | None:
    """The Keras cache file of the ImageNet VGG16 notop weights (None when absent)."""
    candidates = [home / "models" / IMAGENET_NOTOP_FILE for home in _keras_home_candidates()]
    if not existing_only:
        return candidates[0]
    return next((path for path in candidates if path.is_file()), None)


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_imagenet_weights(timeout: float = 20, url: str = IMAGENET_NOTOP_URL,
                           force: bool = False) -> Path:
    """Download the ImageNet VGG16 notop weights into the Keras cache (Docker build time only).

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
    import urllib.error
    import urllib.request

    target = imagenet_weights_path(existing_only=False)
    if target.is_file() and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, "wb") as out:
            while chunk := response.read(1 << 20):
                out.write(chunk)
    except (urllib.error.URLError, OSError, ValueError) as error:
        partial.unlink(missing_ok=True)
        raise RuntimeError(
            f"could not download the ImageNet VGG16 weights from {url} within {timeout} s "
            f"({error}). Without network access the kit still works: it warns and trains VGG16 "
            f"from random initialisation (or set FER_WEIGHTS=none / a path to a weights file)."
        ) from None
    if url == IMAGENET_NOTOP_URL and _md5(partial) != _IMAGENET_NOTOP_MD5:
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"the file downloaded from {url} has the wrong checksum; try again")
    partial.replace(target)
    return target


def _named_layers(model) -> dict:
    """All layers of `model` by name, looking inside nested models."""
    found = {}
    stack = list(getattr(model, "layers", []))
    while stack:
        layer = stack.pop(0)
        found.setdefault(layer.name, layer)
        stack.extend(getattr(layer, "layers", []))
    return found


def _read_legacy_h5(root) -> dict:
    """{layer name: [kernel, bias]} from a Keras 2 / legacy HDF5 weights file."""
    import h5py

    out = {}
    for name in VGG16_CONV_LAYERS:
        if name not in root:
            continue
        group = root[name]
        names = [n.decode() if isinstance(n, bytes) else str(n)
                 for n in group.attrs.get("weight_names", [])]
        if names:
            arrays = [np.asarray(group[n]) for n in names]
        else:
            arrays = []
            group.visititems(lambda _, obj: arrays.append(np.asarray(obj))
                             if isinstance(obj, h5py.Dataset) else None)
        kernel = [a for a in arrays if a.ndim == 4]
        bias = [a for a in arrays if a.ndim == 1]
        if len(kernel) == 1 and len(bias) == 1:
            out[name] = [kernel[0], bias[0]]
    return out


def _read_keras3_h5(root) -> dict:
    """{layer name: [kernel, bias]} from a Keras 3 `.weights.h5` holding a VGG16 conv base.

    Keras 3 names the groups by class and position (`conv2d`, `conv2d_1`, ...), not by layer
    name, so the first 13 convolutions of one container are matched to VGG16's, in order.
    """
    import h5py

    containers: dict[str, list] = {}

    def visit(name, obj):
        match = re.search(r"(^|/)layers/conv2d(?:_(\d+))?$", name)
        if isinstance(obj, h5py.Group) and match and "vars" in obj and "0" in obj["vars"]:
            parent = name[:match.start(0) + len(match.group(1))]
            index = int(match.group(2) or 0)
            arrays = [np.asarray(obj["vars"][k]) for k in sorted(obj["vars"], key=int)]
            containers.setdefault(parent, []).append((index, arrays))

    root.visititems(visit)
    for parent, convs in sorted(containers.items(), key=lambda kv: -len(kv[1])):
        convs = [arrays for _, arrays in sorted(convs, key=lambda item: item[0])]
        if len(convs) >= len(VGG16_CONV_LAYERS):
            return dict(zip(VGG16_CONV_LAYERS, convs[:len(VGG16_CONV_LAYERS)]))
    return {}


def _read_weights_file(path: Path) -> dict:
    """Read the VGG16 conv kernels and biases of a weights file, by Keras layer name."""
    import h5py

    if not path.is_file():
        raise WeightsError(f"VGG16 weights file {str(path)!r} does not exist")
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise WeightsError(f"VGG16 weights file {str(path)!r} is not an HDF5 file (.h5 or "
                           f".weights.h5): {error}") from None
    with handle:
        if "layers" in handle and "layer_names" not in handle.attrs:
            weights = _read_keras3_h5(handle)
        else:
            root = handle["model_weights"] if "model_weights" in handle else handle
            weights = _read_legacy_h5(root)
    if not weights:
        raise WeightsError(
            f"{str(path)!r} holds no VGG16 conv weights: expected a Keras VGG16 notop .h5 file "
            f"(layers named block1_conv1 ... block5_conv3) or a .weights.h5 saved by Keras from "
            f"a model whose first 13 convolutions are a VGG16 conv base")
    return weights


def load_vgg16_weights(model, weights="imagenet", *, _stacklevel: int = 2) -> str:
    """Load VGG16 conv weights into the layers named `block*_conv*` of any model.

    Args:
        model: a Keras model containing some of VGG16's conv layers by their Keras names
            (`block1_conv1` ... `block5_conv3`), at top level or in nested models.
        weights: "imagenet" (from the Keras cache; never downloads), None / "none" (keep the
            random initialisation), or the path of a `.h5` / `.weights.h5` VGG16 weights file.

    Returns:
        A short status: "imagenet", "file:NAME" or "random (reason)".

    Raises:
        WeightsError: the file is missing or unreadable, the model has no VGG16 conv layer, or
            a layer's shapes differ from the file's (the message names the layer and shapes).
    """
    if weights is None or (isinstance(weights, str) and weights.strip().lower() == "none"):
        return "random (weights=none)"
    layers = _named_layers(model)
    targets = [name for name in VGG16_CONV_LAYERS if name in layers]
    if not targets:
        raise WeightsError(f"model {model.name!r} has no layer named like VGG16's conv layers "
                           f"({VGG16_CONV_LAYERS[0]} ... {VGG16_CONV_LAYERS[-1]})")
    if isinstance(weights, str) and weights.strip().lower() == "imagenet":
        path = imagenet_weights_path()
        if path is None:
            warnings.warn(OFFLINE_WARNING, UserWarning, stacklevel=_stacklevel)
            return "random (ImageNet weights not available offline)"
        status = "imagenet"
    else:
        path = Path(os.fspath(weights)).expanduser()
        status = f"file:{path.name}"
    stored = _read_weights_file(path)
    missing = [name for name in targets if name not in stored]
    if missing:
        raise WeightsError(f"{str(path)!r} has no weights for layer(s) {', '.join(missing)}")
    updates = []
    for name in targets:
        layer = layers[name]
        current = layer.get_weights()
        new = stored[name]
        shapes_model = [tuple(w.shape) for w in current]
        shapes_file = [tuple(w.shape) for w in new]
        if shapes_model != shapes_file:
            hint = (" (VGG16 weights need 3-channel input: use channels=3 in the input pipeline)"
                    if name == "block1_conv1" else "")
            raise WeightsError(f"layer {name!r}: the model has weight shapes {shapes_model} but "
                               f"{str(path)!r} has {shapes_file}{hint}")
        updates.append((layer, new))
    for layer, new in updates:  # only after every layer was checked: all or nothing
        layer.set_weights(new)
    return status


# --------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------
def _check_shape(input_shape) -> tuple:
    """Validate an (H, W, C) input shape for VGG16 (five 2×2 poolings need H, W >= 32)."""
    try:
        shape = tuple(int(v) for v in input_shape)
    except (TypeError, ValueError):
        raise ValueError(f"input_shape must be (height, width, channels), "
                         f"got {input_shape!r}") from None
    if len(shape) != 3 or shape[2] not in (1, 3) or min(shape[:2]) < 32:
        raise ValueError(f"input_shape must be (height, width, channels) with height and width "
                         f">= 32 and 1 or 3 channels, got {input_shape!r}")
    return shape


def _check_weights(weights, input_shape) -> None:
    """Reject a weights value the builders cannot use, before building anything."""
    if weights is None:
        return
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(f"weights must be 'imagenet', None, 'none' or a file path, "
                         f"got {weights!r}")
    text = os.fspath(weights).strip()
    if text.lower() == "none":
        return
    if text.lower() != "imagenet" and not Path(text).expanduser().is_file():
        raise WeightsError(f"weights={text!r} is neither 'imagenet', 'none' nor an existing "
                           f"weights file")
    if input_shape[2] != 3:
        raise ValueError(f"pretrained VGG16 weights need 3 input channels, got input_shape="
                         f"{tuple(input_shape)!r}: convert grey faces to 3 channels in the input "
                         f"pipeline (channels=3) or use weights=None")


def _conv_blocks(x, blocks=(1, 2, 3, 4, 5), dtype=None):
    """Apply VGG16's conv blocks (3×3 same convs + ReLU, then 2×2 max-pool) with Keras' names."""
    import keras

    for block, convs, filters in _BLOCKS:
        if block not in blocks:
            continue
        # Block `block`: `convs` 3×3 convolutions with `filters` filters, then halve H and W.
        for i in range(1, convs + 1):
            x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu",
                                    name=f"block{block}_conv{i}", dtype=dtype)(x)
        x = keras.layers.MaxPooling2D(2, strides=2, name=f"block{block}_pool", dtype=dtype)(x)
    return x


def vgg16_base(input_shape=(96, 96, 3), weights="imagenet", name: str = "vgg16_base"):
    """Build the VGG16 conv base (block1_conv1 ... block5_pool) and load its weights.

    Args:
        input_shape: (height, width, channels) of the VGG-preprocessed input; >= 32 px.
        weights: "imagenet" (Keras cache, warns and stays random when absent), None / "none",
            or a path to a `.h5` / `.weights.h5` VGG16 conv-base weights file.
        name: the model's name.

    Returns:
        A Keras Model with 14,714,688 weights (3 channels); `model.weights_status` says which
        weights were loaded ("imagenet", "file:NAME" or "random (...)").
    """
    import keras

    shape = _check_shape(input_shape)
    _check_weights(weights, shape)
    inputs = keras.Input(shape=shape, name="image")
    outputs = _conv_blocks(inputs)
    model = keras.Model(inputs, outputs, name=name)
    model.weights_status = load_vgg16_weights(model, weights, _stacklevel=3)
    return model


def vgg16_classifier(input_shape=(96, 96, 3), num_classes: int = 7, weights="imagenet",
                     trainable_from: str | None = "block5_conv1", head=(2048,),
                     dropout: float = 0.5, pooling: str = "avg", name: str = "vgg16_fer"):
    """Build VGG16 with a new classification head; layers before `trainable_from` are frozen.

    The source's recipe is `trainable_from="block5_conv1"` (conv1-4 frozen, conv5 trains)
    with `head=(4096, 2048)`, `pooling="flatten"` (fc6, fc7) and a 7-way softmax (fc8). The
    default head is lighter (global average pooling, one 2048-unit layer) so that it works at
    any input size. Grey 48 px faces are made 3-channel and resized by the input pipeline
    (`fu.data.to_tf_dataset(..., image_size=96, channels=3, preprocess="vgg")`).

    Args:
        input_shape: (height, width, channels) of the VGG-preprocessed input; >= 32 px.
        num_classes: number of classes of the softmax output (>= 2).
        weights: "imagenet", None / "none" or a path to VGG16 conv weights (see
            `load_vgg16_weights`).
        trainable_from: first trainable layer: a conv-base layer name (`block5_conv1`, ...),
            "head" (only the new head trains) or None (everything trains: from scratch).
        head: units of the hidden fully connected layers (named fc6, fc7, ...); () for none.
        dropout: dropout rate after each hidden layer (0 for none).
        pooling: "avg" (global average pooling), "max" or "flatten" (the source's choice).
        name: the model's name.

    Returns:
        A Keras Model (softmax output named "predictions"); `model.weights_status` tells which
        weights were loaded.
    """
    import keras

    shape = _check_shape(input_shape)
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
            or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    valid_from = VGG16_LAYERS + ("head",)
    if trainable_from is not None and trainable_from not in valid_from:
        raise ValueError(f"trainable_from={trainable_from!r} is not a layer of the model; valid: "
                         f"None (train everything), {', '.join(valid_from)}")
    try:
        head = tuple(int(units) for units in head)
    except (TypeError, ValueError):
        raise ValueError(f"head must be a sequence of positive unit counts, got {head!r}") from None
    if any(units < 1 for units in head):
        raise ValueError(f"head must be a sequence of positive unit counts, got {head!r}")
    if not 0 <= float(dropout) < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    if pooling not in ("avg", "max", "flatten"):
        raise ValueError(f"pooling must be 'avg', 'max' or 'flatten', got {pooling!r}")
    _check_weights(weights, shape)

    inputs = keras.Input(shape=shape, name="image")
    # Blocks 1-5: the VGG16 conv base, with Keras' layer names.
    x = _conv_blocks(inputs)
    # Head: pooling, hidden fully connected layers (fc6, fc7, ...), softmax (fc8 in the source).
    if pooling == "flatten":
        x = keras.layers.Flatten(name="flatten")(x)
    elif pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    else:
        x = keras.layers.GlobalMaxPooling2D(name="max_pool")(x)
    for i, units in enumerate(head):
        x = keras.layers.Dense(units, activation="relu", name=f"fc{6 + i}")(x)
        if dropout:
            x = keras.layers.Dropout(float(dropout), name=f"drop{6 + i}")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, outputs, name=name)
    model.weights_status = load_vgg16_weights(model, weights, _stacklevel=3)

    frozen = (set() if trainable_from is None else
              set(VGG16_LAYERS) if trainable_from == "head" else
              set(VGG16_LAYERS[:VGG16_LAYERS.index(trainable_from)]))
    for layer in model.layers:
        layer.trainable = layer.name not in frozen
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


# --------------------------------------------------------------------------------------------
# Input and the frozen/trainable split
# --------------------------------------------------------------------------------------------
def vgg_preprocess(images, image_size=None):
    """uint8 N×H×W×C faces -> float32 N×S×S×3 VGG input (resized, 3 channels, BGR minus mean).

    The same conversion as `keras.applications.vgg16.preprocess_input` (caffe mode) after a
    bilinear resize to `image_size` and grey -> RGB; works on NumPy arrays and tensors.
    """
    import tensorflow as tf

    x = tf.cast(tf.convert_to_tensor(images), tf.float32)
    if x.shape.rank == 3:
        x = x[None]
    if image_size is not None:
        size = (int(image_size), int(image_size)) if np.ndim(image_size) == 0 \
            else tuple(int(v) for v in image_size)
        if tuple(x.shape[1:3]) != size:
            x = tf.image.resize(x, size, method="bilinear")
    if x.shape[-1] == 1:
        x = tf.repeat(x, 3, axis=-1)
    return x[..., ::-1] - tf.constant(VGG_MEAN_RGB[::-1], dtype=tf.float32)


def split_frozen(model):
    """Split a chain model at its first trainable layer: (frozen_part, trainable_part).

    `frozen_part` maps the model input to the input of the first trainable layer (None when
    nothing is frozen); `trainable_part` maps those features to the output and SHARES the
    layer objects with `model`, so training it trains `model`. Frozen layers are
    deterministic, so `trainable_part(frozen_part(x)) == model(x)`.
    """
    import keras

    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    first = next((i for i, layer in enumerate(layers)
                  if layer.trainable and layer.weights), None)
    if first is None:
        raise ValueError(f"model {model.name!r} has no trainable layer: nothing to fine-tune")
    for layer in layers[:first]:
        if layer.trainable and layer.weights:  # pragma: no cover - by construction of `first`
            raise ValueError(f"layer {layer.name!r} trains but comes before the split")
        if isinstance(layer, keras.layers.Dropout):
            raise ValueError(f"layer {layer.name!r} is random and cannot be cached")
    if first == 0:
        return None, model
    frozen = keras.Model(model.inputs, layers[first - 1].output, name=f"{model.name}_frozen")
    inputs = keras.Input(shape=tuple(layers[first - 1].output.shape[1:]), name="features")
    x = inputs
    for layer in layers[first:]:
        x = layer(x)
    trainable = keras.Model(inputs, x, name=f"{model.name}_trainable")
    return frozen, trainable


# --------------------------------------------------------------------------------------------
# Fine-tuning (the fast path): cached frozen features, bfloat16 where the CPU has it
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class FineTuneResult:
    """What `fine_tune` did: the trained model, its history and how fast it went."""

    model: object  # the full Keras model, trained in place (frozen part + trained part)
    history: dict  # per-epoch metrics, as keras.callbacks.History.history
    path: str  # "cached" (frozen blocks computed once) or "plain" (full model every step)
    precision: str  # "float32" or "bfloat16" / "float16" (mixed precision)
    images: int  # training images
    epochs: int
    seconds: float  # wall time of everything: feature caching + training + validation
    cache_seconds: float  # wall time of the frozen-feature pass (0 on the plain path)

    @property
    def images_per_second(self) -> float:
        """Training images × epochs / total wall time (caching and validation included)."""
        return self.images * self.epochs / max(self.seconds, 1e-9)

    @property
    def val_accuracy(self) -> float | None:
        """Validation accuracy after the last epoch (None without validation data)."""
        values = self.history.get("val_accuracy")
        return float(values[-1]) if values else None

    def __str__(self) -> str:
        """One line: path, precision, images/s and validation accuracy."""
        acc = "" if self.val_accuracy is None else f", val accuracy {self.val_accuracy:.3f}"
        return (f"fine-tune ({self.path}, {self.precision}): {self.images} images × "
                f"{self.epochs} epochs in {self.seconds:.1f} s{acc}: "
                f"{self.images_per_second:.1f} img/s")


def _cpu_has_bf16() -> bool:
    """True when the CPU has native bfloat16 math (AVX512-BF16 or AMX)."""
    try:
        with open("/proc/cpuinfo") as handle:
            flags = handle.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _resolve_precision(precision: str) -> str:
    """'auto' -> 'bfloat16' on CPUs with native bf16 and no GPU, else 'float32'."""
    if precision not in ("auto", "float32", "bfloat16", "float16"):
        raise ValueError(f"precision must be 'auto', 'float32', 'bfloat16' or 'float16', "
                         f"got {precision!r}")
    if precision != "auto":
        return precision
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return "float32"
    return "bfloat16" if _cpu_has_bf16() else "float32"


def _with_policy(model, precision: str):
    """A copy of a chain model computing in mixed `precision` (float32 output), same weights."""
    import keras

    if precision == "float32" or model is None:
        return model
    policy = {"bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}[precision]
    last = model.layers[-1].name

    def clone(layer):
        config = layer.get_config()
        if not isinstance(layer, keras.layers.InputLayer):
            config["dtype"] = "float32" if layer.name == last and len(model.layers) > 2 \
                else policy
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def _as_arrays(data, name: str):
    """(uint8 images N×H×W×C, int labels N) from a FaceSet or an (images, labels) pair."""
    if data is None:
        return None
    if hasattr(data, "images") and hasattr(data, "labels"):
        images, labels = data.images, data.labels
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        images, labels = data
    else:
        raise TypeError(f"{name} must be a FaceSet or an (images, labels) pair, "
                        f"got {type(data).__name__}")
    images, labels = np.asarray(images), np.asarray(labels).reshape(-1)
    if images.ndim == 3:
        images = images[..., None]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"{name} images must be uint8 N×H×W×C with C in (1, 3), got "
                         f"{images.dtype} {images.shape}")
    if len(images) != len(labels) or len(images) == 0:
        raise ValueError(f"{name} has {len(images)} images and {len(labels)} labels; "
                         f"need the same number, at least one")
    return images, labels.astype(np.int64)


def _features(frozen, images: np.ndarray, image_size, batch_size: int, desc: str,
              verbose: int) -> np.ndarray:
    """Run the frozen blocks once over uint8 images, batch by batch (float32 features)."""
    import keras
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def step(batch):
        return tf.cast(frozen(vgg_preprocess(batch, image_size), training=False), tf.float32)

    chunks = []
    bar = keras.utils.Progbar(len(images), unit_name="image", verbose=verbose) \
        if verbose else None
    if bar is not None:
        print(desc)
    for start in range(0, len(images), batch_size):
        chunks.append(step(images[start:start + batch_size]).numpy())
        if bar is not None:
            bar.add(len(chunks[-1]))
    return np.concatenate(chunks)


def fine_tune(model, train, val=None, *, epochs: int = 5, batch_size: int = 32,
              learning_rate: float = 1e-4, optimizer=None, cache_features="auto",
              augment: bool = False, precision: str = "auto", jit_compile: bool = False,
              callbacks=None, class_weight=None, seed: int = 0, verbose: int = 1,
              max_cache_mb: float = 4096) -> FineTuneResult:
    """Fine-tune a VGG16 classifier on uint8 faces, fast: frozen blocks run once per image.

    Layers before the model's first trainable layer are frozen and deterministic, so their
    output for an image never changes: with `cache_features` they run ONCE over the training
    and validation images, and the epochs train only the trainable part (block 5 + head) on
    those features. That is the same model and the same training as running the whole network
    every step (same weights, same updates); the trainable layers are shared with `model`,
    which comes back trained. With augmentation the images change every epoch, so the plain
    path runs the whole network every step.

    Args:
        model: a chain model such as `vgg16_classifier(...)` taking VGG-preprocessed input.
        train: FaceSet or (uint8 images N×H×W×C, labels); grey/small faces are resized and
            made 3-channel per batch (`vgg_preprocess`), so only uint8 stays in memory.
        val: optional validation FaceSet or (images, labels).
        epochs: training epochs.
        batch_size: images per step.
        learning_rate: Adam's learning rate when `optimizer` is None (the source's 1e-4).
        optimizer: a Keras optimizer to use instead (e.g. `fu.train.layerwise_optimizer(...)`).
        cache_features: True, False or "auto" (cache unless `augment` or the features would
            take more than `max_cache_mb`).
        augment: random augmentation per batch (`fu.augment.tf_random_augment`); plain path.
        precision: "auto" (bfloat16 on CPUs with AVX512-BF16/AMX, else float32), "float32",
            "bfloat16" or "float16" (mixed precision; weights stay float32).
        jit_compile: compile the train step with XLA.
        callbacks: Keras callbacks (e.g. `fu.train.make_callbacks(run_name)`).
        class_weight: optional {class: weight} for rare classes.
        seed: shuffling seed.
        verbose: 0 silent, 1 progress bars and a summary line.
        max_cache_mb: memory limit for the cached features in "auto" mode.

    Returns:
        FineTuneResult (model, history, path, precision, images/s, validation accuracy); the
        model comes back compiled with a fresh Adam(`learning_rate`) for evaluate/save.
    """
    import keras
    import tensorflow as tf

    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if cache_features not in (True, False, "auto"):
        raise ValueError(f"cache_features must be True, False or 'auto', got {cache_features!r}")
    if cache_features is True and augment:
        raise ValueError("cache_features=True cannot be combined with augment=True: augmented "
                         "images change every epoch, so their features cannot be computed once")
    precision = _resolve_precision(precision)
    train_x, train_y = _as_arrays(train, "train")
    val_arrays = _as_arrays(val, "val")
    image_size = tuple(model.input_shape[1:3])
    num_classes = int(model.output_shape[-1])
    for name, labels in (("train", train_y), ("val", None if val_arrays is None
                                                   else val_arrays[1])):
        if labels is not None and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"{name} labels must lie in 0..{num_classes - 1} (the model has "
                             f"{num_classes} outputs), got {labels.min()}..{labels.max()}")

    start = time.perf_counter()
    frozen, top = split_frozen(model)
    if cache_features == "auto":
        feature_mb = 0 if frozen is None else (
            (len(train_x) + (0 if val_arrays is None else len(val_arrays[0])))
            * int(np.prod(frozen.output_shape[1:])) * 4 / 2**20)
        cache_features = frozen is not None and not augment and feature_mb <= max_cache_mb
    cached = bool(cache_features) and frozen is not None
    optimizer = optimizer or keras.optimizers.Adam(learning_rate)
    metrics = ["accuracy"]
    loss = "sparse_categorical_crossentropy"
    cache_seconds = 0.0

    if cached:
        work_frozen, work = _with_policy(frozen, precision), _with_policy(top, precision)
        t0 = time.perf_counter()
        x_train = _features(work_frozen, train_x, image_size, max(batch_size, 64),
                            "Computing the frozen blocks once (training images)", verbose)
        validation = None
        if val_arrays is not None:
            validation = (_features(work_frozen, val_arrays[0], image_size,
                                    max(batch_size, 64),
                                    "Computing the frozen blocks once (validation images)",
                                    verbose), val_arrays[1])
        cache_seconds = time.perf_counter() - t0
        dataset = (tf.data.Dataset.from_tensor_slices((x_train, train_y))
                   .shuffle(len(x_train), seed=seed, reshuffle_each_iteration=True)
                   .batch(batch_size).prefetch(2))
        if validation is not None:
            validation = tf.data.Dataset.from_tensor_slices(validation).batch(
                max(batch_size, 64))
    else:
        work = _with_policy(model, precision)
        augment_fn = None
        if augment:
            from .. import augment as _augment

            augment_fn = _augment.tf_random_augment

        def prepare(images, labels):
            images = tf.cast(images, tf.float32)
            if augment_fn is not None:
                images, _ = augment_fn(images, None)
                images = tf.clip_by_value(images, 0.0, 255.0)
            return vgg_preprocess(images, image_size), labels

        dataset = (tf.data.Dataset.from_tensor_slices((train_x, train_y))
                   .shuffle(len(train_x), seed=seed, reshuffle_each_iteration=True)
                   .batch(batch_size).map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
                   .prefetch(2))
        validation = None
        if val_arrays is not None:
            validation = (tf.data.Dataset.from_tensor_slices(val_arrays)
                          .batch(max(batch_size, 64))
                          .map(lambda x, y: (vgg_preprocess(x, image_size), y))
                          .prefetch(2))

    work.compile(optimizer=optimizer, loss=loss, metrics=metrics, jit_compile=jit_compile)
    history = work.fit(dataset, validation_data=validation, epochs=int(epochs), shuffle=False,
                       callbacks=callbacks, class_weight=class_weight,
                       verbose=1 if verbose else 0)
    if work is not top and work is not model:  # mixed precision copy: bring the weights home
        source = {layer.name: layer for layer in work.layers}
        for layer in model.layers:
            if layer.name in source and layer.weights:
                layer.set_weights(source[layer.name].get_weights())
    seconds = time.perf_counter() - start
    # Compiled again (fresh Adam, built) so that evaluate/predict/save work on the full model.
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss, metrics=metrics)
    model.optimizer.build(model.trainable_variables)
    result = FineTuneResult(model=model, history=dict(history.history),
                            path="cached" if cached else "plain", precision=precision,
                            images=len(train_x), epochs=int(epochs), seconds=seconds,
                            cache_seconds=cache_seconds)
    if verbose:
        print(result)
    return result
