"""Transfer learning from a trained model: its trunk, a new head, the source's fine-tune recipe.

`init_from(source, num_classes, mode=...)` starts a new classifier from a model the kit (or a
notebook) trained: a `.keras` file, a run folder `python -m fer_utils train` wrote (model.keras
+ meta.json), a weights file, or a Keras model in memory. It copies the source's conv trunk
(the layers named `block1_...` to `blockN_...`, with the pooling after them), puts a new
head on it for the new classes and sets what trains, following the source notes' recipe:

- mode "head": the whole trunk frozen, only the new head trains (the base as a fixed feature
  extractor);
- mode "last-block": the blocks before the last one frozen; the last block and the head train
  (the source's VGG16 recipe: conv1-4 frozen, conv5 and the fully connected layers train);
- mode "layerwise": per-layer rates: the first block frozen (rate 0), the middle blocks at a
  small rate, the last block and the head at the full rate (`fu.train.layerwise_optimizer`);
- mode "all": every layer trains at one rate.

Frozen layers come first, so `fu.train.fit_classifier` computes them once per face (its
cached path). The result also holds a JSON-ready description of the source for meta.json:
path, sha256, and the source run's data set and classes when its meta.json says them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from pathlib import Path

import keras
import numpy as np

from . import models  # noqa: F401  (registers the kit's layers, so saved models load)

__all__ = ["MODES", "HEADS", "TransferError", "Source", "Start", "load_source", "init_from",
           "trunk_layers", "block_of", "sha256_of"]

MODES = ("head", "last-block", "layerwise", "all")
HEADS = ("new", "keep")
# A trunk layer: "block3_conv1", "block3_bn2", "block3_pool", the compact VGG's "block3_conv1_bn"
_BLOCK = re.compile(r"^block(\d+)_")
# What may follow the last block's pooling and still belong to the trunk.
_POOLINGS = (keras.layers.Flatten, keras.layers.GlobalAveragePooling2D,
             keras.layers.GlobalMaxPooling2D)
_WEIGHTS_SUFFIXES = (".h5", ".hdf5")


class TransferError(ValueError):
    """A source model that cannot start the new classifier: missing, not a model, mismatched."""


@dataclasses.dataclass
class Source:
    """A loaded source: the Keras model, its meta.json (or None) and where it came from."""

    model: object
    meta: dict | None
    path: Path | None  # what the caller named (a file or a run folder); None: in memory
    file: Path | None  # the file read (model.keras, or the weights file)
    kind: str  # "keras", "run folder", "weights", "VGG16 weights" or "in memory"
    note: str = ""  # e.g. "unwrapped the test-time-flip wrapper"

    def describe(self) -> dict:
        """JSON-ready: path, file, sha256, kind, model, input, outputs, data set, classes."""
        meta = self.meta or {}
        record = {"path": None if self.path is None else str(self.path),
                  "file": None if self.file is None else str(self.file),
                  "sha256": None if self.file is None else sha256_of(self.file),
                  "kind": self.kind, "model": self.model.name,
                  "input_shape": [int(v) for v in self.model.input_shape[1:]],
                  "outputs": _output_units(self.model),
                  "dataset": meta.get("dataset"), "class_names": meta.get("class_names"),
                  "test_accuracy": meta.get("test_accuracy")}
        if self.note:
            record["note"] = self.note
        return record


@dataclasses.dataclass
class Start:
    """What `init_from` made: the new model, its optimizer (per-layer rates) and the record."""

    model: object  # the new Keras classifier (one image input, softmax "predictions")
    optimizer: object | None  # a LayerwiseOptimizer for mode "layerwise", else None
    mode: str
    trainable_from: str  # the first layer that trains (the cached path computes those before)
    source: dict  # JSON-ready, for meta.json: Source.describe() + what was taken and how

    def __str__(self) -> str:
        """One line: where from, what was kept, what trains."""
        kept = self.source["trunk"]
        head = "the source's own head" if self.source["head"] == "keep" else "a new head"
        return (f"init_from {self.source['path'] or self.source['model']}: trunk "
                f"{kept['first']} … {kept['last']} ({kept['weights']:,} weights) with {head}; "
                f"mode {self.mode}: layers from {self.trainable_from} on train")


def sha256_of(path) -> str:
    """The SHA-256 of a file, hex (read in 1 MB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _output_units(model) -> list[int]:
    """The last dimension of each output of `model`."""
    shapes = model.output_shape if isinstance(model.output_shape, list) else [model.output_shape]
    if isinstance(model.output_shape, dict):
        shapes = list(model.output_shape.values())
    return [int(s[-1]) for s in shapes]


def _read_meta(path: Path) -> dict | None:
    """A meta.json as a dict, or None when absent; an unreadable one is an error naming it."""
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise TransferError(f"init_from: {path} is not valid JSON ({error})") from None
    if not isinstance(meta, dict):
        raise TransferError(f"init_from: {path} must hold a JSON object, got a JSON "
                            f"{type(meta).__name__}")
    return meta


def _load_keras(file: Path):
    """`keras.saving.load_model(file)` with a one-line error naming the file."""
    try:
        return keras.saving.load_model(file, compile=False)
    except Exception as error:  # zip, JSON, h5py and deserialisation errors: one message
        text = " ".join(str(error).split())[:200]
        raise TransferError(f"init_from: {file} is not a Keras model that loads here ({text})"
                            ) from None


def _h5_attrs(file: Path) -> dict:
    """The top-level attributes of an HDF5 file; a file that is not HDF5 is an error."""
    import h5py

    try:
        with h5py.File(file, "r") as f:
            return {key: f.attrs[key] for key in f.attrs}
    except OSError:
        raise TransferError(f"init_from: {file} is not a weights file (not HDF5) and not a "
                            f"model") from None


def _load_weights_file(file: Path, architecture, input_shape):
    """(model, kind) for an HDF5 file: a legacy whole model, weights into `architecture`, or a
    Keras VGG16 notop file (the conv trunk)."""
    attrs = _h5_attrs(file)
    if "model_config" in attrs:  # a whole model saved by Keras 2 (`model.save("x.h5")`)
        return _load_keras(file), "keras"
    if architecture is not None:
        model = architecture() if callable(architecture) and not isinstance(
            architecture, keras.Model) else architecture
        if not isinstance(model, keras.Model):
            raise TransferError(f"init_from: architecture must be a Keras model or a function "
                                f"returning one, got {type(model).__name__}")
        try:
            model.load_weights(str(file))
        except Exception as error:
            text = " ".join(str(error).split())[:200]
            raise TransferError(f"init_from: the weights in {file} do not fit the architecture "
                                f"{model.name!r} ({text})") from None
        return model, "weights"
    names = [n.decode() if isinstance(n, bytes) else str(n)
             for n in attrs.get("layer_names", [])]
    if "block1_conv1" in names and "block5_conv3" in names:  # keras.applications' VGG16 file
        from .models import vgg

        shape = tuple(input_shape) if input_shape is not None else (96, 96, 3)
        return vgg.vgg16_base(shape, weights=str(file), name="vgg16"), "VGG16 weights"
    raise TransferError(f"init_from: {file} holds weights only, and they are not a Keras VGG16 "
                        f"notop file: pass architecture= (the model they were saved from) or "
                        f"start from the run folder or model.keras instead")


def load_source(source, architecture=None, input_shape=None) -> Source:
    """Load a source model: a `.keras` file, a run folder, a weights file or a Keras model.

    Args:
        source: a path (`model.keras`, a folder holding model.keras and meta.json, a `.h5` /
            `.weights.h5` file) or a `keras.Model`.
        architecture: for a weights file saved from a kit model: that model (or a function
            building it), whose weights are replaced by the file's.
        input_shape: for a Keras VGG16 notop weights file: the input (H, W, 3); default 96 px.

    Returns:
        Source (model, meta or None, paths, kind). A model wrapped for test-time flips
        (`fu.models.with_flip_tta`, what `train` saves when flips pay) is unwrapped.

    Raises:
        FileNotFoundError: the path does not exist; TransferError: not a model, or a folder
        without model.keras; each message names the file.
    """
    if isinstance(source, keras.Model):
        model, meta, path, file, kind = source, None, None, None, "in memory"
    else:
        if not isinstance(source, (str, os.PathLike)):
            raise TransferError(f"init_from: expected a path or a Keras model, got "
                                f"{type(source).__name__}")
        path = Path(source).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"init_from: {path} does not exist (expected a model.keras, "
                                    f"a folder `python -m fer_utils train` wrote, or a weights "
                                    f"file)")
        if path.is_dir():
            file, kind = path / "model.keras", "run folder"
            if not file.is_file():
                raise TransferError(f"init_from: {path} holds no model.keras (expected a folder "
                                    f"`python -m fer_utils train --out` wrote)")
            meta = _read_meta(path / "meta.json")
            model = _load_keras(file)
        elif path.suffix == ".keras":
            file, kind = path, "keras"
            meta = next((m for m in (_read_meta(c) for c in (
                path.with_suffix(".meta.json"), path.parent / "meta.json")) if m), None) \
                if path.stem == "model" else _read_meta(path.with_suffix(".meta.json"))
            model = _load_keras(file)
        elif path.suffix in _WEIGHTS_SUFFIXES:
            file, meta = path, _read_meta(path.parent / "meta.json")
            model, kind = _load_weights_file(path, architecture, input_shape)
        else:
            raise TransferError(f"init_from: {path} is not a model file: expected a .keras "
                                f"file, a run folder, or .h5 / .weights.h5 weights")
    model, note = _unwrapped(model)
    if len(model.inputs) != 1:
        raise TransferError(f"init_from: {path or model.name}: the model takes "
                            f"{len(model.inputs)} inputs; a new classifier starts from a "
                            f"one-image model")
    return Source(model, meta, path, file, kind, note)


def _unwrapped(model):
    """(the model inside a test-time-flip wrapper, note), or (model, "") when not wrapped."""
    if any(_BLOCK.match(layer.name) for layer in model.layers):
        return model, ""
    inner = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if len(inner) == 1 and any(_BLOCK.match(layer.name) for layer in inner[0].layers):
        return inner[0], f"unwrapped {inner[0].name!r} from {model.name!r} (test-time flips)"
    return model, ""


def block_of(name: str) -> int | None:
    """The block number of a trunk layer name ("block3_conv1" -> 3), else None."""
    match = _BLOCK.match(name)
    return int(match.group(1)) if match else None


def trunk_layers(model, trunk_end: str | None = None, where: str = "") -> list:
    """The trunk of a one-input model: its layers from the input up to the last block's
    pooling (and a Flatten or global pooling right after it), or up to `trunk_end`.

    Raises:
        TransferError: no layer named blockN_..., `trunk_end` is not a layer, or the trunk is
        not a chain (each layer taking the previous one's output).
    """
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    names = [layer.name for layer in layers]
    where = where or repr(model.name)
    if trunk_end is not None:
        if trunk_end not in names:
            raise TransferError(f"init_from: {where}: trunk_end={trunk_end!r} is not a layer of "
                                f"the model; its layers: {', '.join(names)}")
        end = names.index(trunk_end)
    else:
        blocks = [i for i, name in enumerate(names) if block_of(name) is not None]
        if not blocks:
            raise TransferError(f"init_from: {where}: no conv blocks named blockN_... (the kit's "
                                f"small CNN and VGG16 name them so); pass trunk_end='LAYER' to "
                                f"say where the trunk ends")
        end = blocks[-1]
        if end + 1 < len(layers) and isinstance(layers[end + 1], _POOLINGS):
            end += 1
    trunk = layers[:end + 1]
    previous = model.inputs[0]
    for layer in trunk:
        try:
            chained = layer.input is previous
        except (AttributeError, ValueError):  # a layer called on several inputs
            chained = False
        if not chained:
            raise TransferError(f"init_from: {where}: layer {layer.name!r} does not take the "
                                f"previous layer's output: the trunk must be a chain of layers")
        previous = layer.output
    return trunk


def _clone(layer, x):
    """A float32 copy of `layer` (same name, config and weights), called on `x`."""
    config = layer.get_config()
    config["dtype"] = "float32"  # a bf16 checkpoint's layers compute in float32 again
    twin = layer.__class__.from_config(config)
    y = twin(x)
    if layer.weights:
        twin.set_weights(layer.get_weights())
    return twin, y


def _check_args(num_classes, mode, head, head_units, dropout, class_names, learning_rate,
                middle_rate):
    """Reject bad arguments before anything is loaded, naming the setting."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
            or num_classes < 2:
        raise ValueError(f"init_from: num_classes must be an integer >= 2, got {num_classes!r}")
    if mode not in MODES:
        raise ValueError(f"init_from: mode={mode!r} is not one of {', '.join(MODES)}")
    if head not in HEADS:
        raise ValueError(f"init_from: head={head!r} is not one of {', '.join(HEADS)}")
    try:
        units = tuple(int(u) for u in head_units)
    except (TypeError, ValueError):
        raise ValueError(f"init_from: head_units must be a sequence of positive ints, "
                         f"got {head_units!r}") from None
    if any(u < 1 for u in units):
        raise ValueError(f"init_from: head_units must be positive, got {head_units!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ValueError(f"init_from: dropout must be a number in [0, 1), got {dropout!r}")
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"init_from: {len(class_names)} class_names for num_classes="
                         f"{num_classes}")
    for name, value in (("learning_rate", learning_rate), ("middle_rate", middle_rate)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"init_from: {name} must be a number > 0, got {value!r}")
    return units


def _check_classes(src: Source, num_classes: int, class_names, where: str) -> None:
    """head="keep": the new classes must be the source's, in the same order."""
    units = _output_units(src.model)
    if len(units) != 1 or units[0] != num_classes:
        raise TransferError(f"init_from: {where} has {units} outputs, but the new faces have "
                            f"{num_classes} classes: head='keep' needs the same classes "
                            f"(use head='new')")
    known = (src.meta or {}).get("class_names")
    if class_names is not None and known is not None and list(known) != list(class_names):
        raise TransferError(f"init_from: class mismatch: {where} was trained on {list(known)}, "
                            f"the new faces are {list(class_names)}: head='keep' needs the same "
                            f"classes in the same order (use head='new')")


def _preprocessing_to_add(src: Source, preprocess, where: str) -> str | None:
    """The Preprocess mode to put first (None when the source has its own preprocessing)."""
    from .models.preprocess import PREPROCESS_MODES, preprocessing_of

    if preprocess is not None and preprocess not in PREPROCESS_MODES:
        raise ValueError(f"init_from: preprocess={preprocess!r} is not one of "
                         f"{', '.join(PREPROCESS_MODES)}")
    own = preprocessing_of(src.model)
    if own is not None:
        if preprocess is not None and preprocess != own:
            raise TransferError(f"init_from: {where} has its own preprocessing ({own}); "
                                f"preprocess={preprocess!r} would add a second one")
        return None
    said = (src.meta or {}).get("preprocess")
    chosen = preprocess or ("vgg" if src.kind == "VGG16 weights" else
                            said if said in PREPROCESS_MODES else None)
    if chosen is None:
        raise TransferError(f"init_from: {where} has no preprocessing layer and no meta.json "
                            f"that names one: pass preprocess='scale' (x/255) or 'vgg'")
    return chosen


def _new_head(x, num_classes: int, units: tuple, dropout: float, pooling: str):
    """Pooling (for a 4-D trunk output), hidden Dense + ReLU + dropout layers, softmax."""
    if len(x.shape) == 4:
        x = {"flatten": keras.layers.Flatten(name="flatten"),
             "avg": keras.layers.GlobalAveragePooling2D(name="global_pool"),
             "max": keras.layers.GlobalMaxPooling2D(name="global_pool")}[pooling](x)
    # The first trainable layer has weights (no dropout before it): the cached path needs that.
    for i, n in enumerate(units, start=1):
        x = keras.layers.Dense(n, activation="relu", name=f"head_fc{i}")(x)
        if dropout:
            x = keras.layers.Dropout(float(dropout), name=f"head_dropout{i}")(x)
    return keras.layers.Dense(int(num_classes), activation="softmax", name="predictions",
                              dtype="float32")(x)


def _kept_head(src: Source, trunk: list, x, where: str):
    """The source's own layers after the trunk, cloned onto `x` (head="keep")."""
    rest = [layer for layer in src.model.layers[len(trunk) + 1:]]
    for layer in rest:
        try:
            _, x = _clone(layer, x)
        except Exception as error:
            text = " ".join(str(error).split())[:160]
            raise TransferError(f"init_from: {where}: its head does not fit the new input "
                                f"({layer.name}: {text})") from None
    return x


def _rates(blocks: list[int], mode: str, learning_rate: float, middle_rate: float) -> dict:
    """{block prefix: rate} of mode "layerwise": first block 0, middle blocks small, last full."""
    if mode != "layerwise":
        return {}
    first, last = blocks[0], blocks[-1]
    return {f"block{b}_": (0.0 if b == first else learning_rate if b == last
                           else learning_rate * middle_rate) for b in blocks}


def init_from(source, num_classes: int, *, mode: str = "last-block", class_names=None,
              head: str = "new", head_units=(256,), dropout: float = 0.5,
              pooling: str = "flatten", learning_rate: float = 1e-3, middle_rate: float = 0.1,
              input_shape=None, architecture=None, trunk_end: str | None = None,
              preprocess: str | None = None, name: str | None = None) -> Start:
    """A new classifier that starts from a trained model's trunk.

    Args:
        source: a `model.keras`, a run folder `python -m fer_utils train` wrote (model.keras +
            meta.json), a `.h5` / `.weights.h5` weights file (with `architecture`, or a Keras
            VGG16 notop file), or a `keras.Model`.
        num_classes: classes of the new softmax head.
        mode: what trains: "head" (trunk frozen), "last-block" (the source's recipe: blocks
            before the last frozen), "layerwise" (first block frozen, middle blocks at
            `learning_rate * middle_rate`, last block and head at `learning_rate`) or "all".
        class_names: the new classes (recorded; checked against the source's with head="keep").
        head: "new" (a new head: `head_units` hidden Dense+ReLU layers with dropout, then the
            softmax) or "keep" (the source's own head, for the same classes on new faces).
        head_units: hidden units of the new head; () for the softmax alone.
        dropout: dropout after each hidden layer of the new head.
        pooling: how a 4-D trunk output (one that ends at a conv block) becomes a vector:
            "flatten", "avg" or "max". A trunk that ends with its own pooling keeps it.
        learning_rate: the rate of the last block and the head in mode "layerwise" (the other
            modes train with the caller's optimizer).
        middle_rate: the middle blocks' rate as a fraction of `learning_rate` ("layerwise").
        input_shape: (H, W, C) of the new model; default: the source's. Another size rebuilds
            the conv trunk at that size; another channel count is refused (the data pipeline
            converts grey and RGB faces to the model's channels).
        architecture: the model a `.weights.h5` file was saved from (`load_source`).
        trunk_end: the name of the trunk's last layer, for a model without blockN_ names.
        preprocess: for a source without a preprocessing layer (a Keras VGG16 weights file:
            "vgg"; a model saved before the kit put preprocessing inside its models: its
            meta.json's "preprocess"): "scale" or "vgg", put first so that the new model
            takes raw pixels (0-255) like every kit model. Default: what the source says.
        name: the new model's name (default "<source>_transfer").

    Returns:
        Start: model (float32, layers frozen as the mode says), optimizer (mode "layerwise":
        `fu.train.layerwise_optimizer(...)`; else None), mode, trainable_from, and `source`, a
        JSON-ready record for meta.json (path, sha256, the source run's data set and classes,
        the trunk taken, mode, head, rates).

    Raises:
        FileNotFoundError, TransferError (a ValueError): one line naming the file or setting.
    """
    units = _check_args(num_classes, mode, head, head_units, dropout, class_names,
                        learning_rate, middle_rate)
    if pooling not in ("flatten", "avg", "max"):
        raise ValueError(f"init_from: pooling={pooling!r} is not one of 'flatten', 'avg', 'max'")
    src = load_source(source, architecture, input_shape)
    where = str(src.path) if src.path is not None else repr(src.model.name)
    trunk = trunk_layers(src.model, trunk_end, where)
    old_shape = tuple(int(v) for v in src.model.input_shape[1:])
    shape = old_shape if input_shape is None else tuple(int(v) for v in input_shape)
    if len(shape) != 3 or shape[2] != old_shape[2]:
        raise TransferError(f"init_from: {where} takes {'×'.join(map(str, old_shape))} images; "
                            f"input_shape={tuple(input_shape)!r} has another number of channels "
                            f"(leave input_shape out: the faces are converted to the model's "
                            f"channels as they are fed)")
    if head == "keep":
        _check_classes(src, num_classes, class_names, where)

    inputs = keras.Input(shape=shape, name="image")
    x, copies = inputs, []
    added = _preprocessing_to_add(src, preprocess, where)
    if added:
        x = models.Preprocess(added, name="preprocess")(x)
    try:
        for layer in trunk:
            twin, x = _clone(layer, x)
            copies.append(twin)
            if any(d == 0 for d in x.shape[1:]):
                raise ValueError(f"{layer.name} gives an empty {tuple(x.shape[1:])} output")
    except Exception as error:  # e.g. too small for the trunk's poolings
        text = " ".join(str(error).split())[:160]
        raise TransferError(f"init_from: {where}: its trunk cannot take "
                            f"{'×'.join(map(str, shape))} images ({text})") from None
    outputs = _kept_head(src, trunk, x, where) if head == "keep" else \
        _new_head(x, num_classes, units, dropout, pooling)
    model = keras.Model(inputs, outputs, name=name or f"{src.model.name}_transfer")

    blocks = sorted({block_of(layer.name) for layer in copies} - {None})
    if mode in ("last-block", "layerwise") and not blocks:
        raise TransferError(f"init_from: {where}: mode={mode!r} needs conv blocks named "
                            f"blockN_...; use mode='head' or 'all'")
    if mode == "head":
        frozen = copies
    elif mode in ("last-block", "layerwise"):
        keep_from = blocks[-1] if mode == "last-block" else blocks[min(1, len(blocks) - 1)]
        first = next(i for i, layer in enumerate(copies) if block_of(layer.name) == keep_from)
        frozen = copies[:first]
    else:
        frozen = []
    for layer in frozen:
        layer.trainable = False
    trainable_from = next(layer.name for layer in model.layers
                          if layer.trainable and layer.trainable_weights)
    rates = _rates(blocks, mode, float(learning_rate), float(middle_rate))
    optimizer = None
    if mode == "layerwise":
        from .optimizers import layerwise_optimizer

        optimizer = layerwise_optimizer(rates, base_learning_rate=float(learning_rate))
    record = src.describe()
    record.update(
        trunk={"first": next((c.name for c in copies if c.weights), copies[0].name),
               "last": copies[-1].name, "layers": len(copies),
               "weights": int(sum(np.prod(w.shape) for layer in copies for w in layer.weights))},
        mode=mode, head=head, head_units=list(units) if head == "new" else None,
        trainable_from=trainable_from, new_classes=None if class_names is None
        else [str(c) for c in class_names],
        input_shape_new=list(shape), learning_rates=rates or None,
        preprocess_added=added)
    return Start(model, optimizer, mode, trainable_from, record)
