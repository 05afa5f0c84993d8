"""E-Net, C-Net and EAC-Net for action units, as the authors built them, on the kit's VGG16.

EAC-Net (Li, Abtahi, Zhu, Yin, 2017; code: github.com/wiibrew/EAC-Net) detects facial action
units (AUs) in two networks trained one after the other:

* E-Net (`BP4D_ENet_dlib_train.py`): a VGG whose conv groups 3 and 4 are *enhanced* by the
  attention map. The map (a second input) is max-pooled 2×2 down to each group's grid,
  multiplied into the group's FIRST conv output and added to its LAST:
  `enhance3 = block3_conv3 + block3_conv1 ⊙ map(H/4)`, the same in group 4 with map(H/8);
  the group's pooling follows the sum. Then group 5, pooling, dense, dropout, a sigmoid per AU.
* C-Net (`BP4D_EAC_dlib_train.py`): trained on the FROZEN, trained E-Net. Its enhanced
  group-4 features, normalised (LRN), are cropped 3×3 cells around each of the 20 AU centres;
  each crop has its own network (×2 upscale, 3×3 conv without padding: 4×4, dense), the 20 are
  concatenated → dense → dropout → a sigmoid per AU. `eacnet(enet, cnet)` joins the two.

The paper used VGG19 (four convs per group: `conv3_4 + conv3_1 ⊙ map`); the kit uses VGG16's
groups (three convs) through its one trunk (`fer_utils.models.vgg`), so layer names and
ImageNet weights are Keras' own. With `width=1/8` the compact trunk trains from scratch.

Inputs (named, so a dict {"image", "attention", "centers"} feeds every model):
  image: N×H×W×C raw pixels, float 0-255 (the model's `preprocess` layer converts them);
  attention: N×H×W×1 maps in [0, 1] (`fer_utils.attention.attention_map`);
  centers: N×20×2 AU centres (x, y) relative to the image, 0-1 (`tf_attention_inputs`).
"""

from __future__ import annotations

import keras
import numpy as np

from .layers import NUM_CENTERS, LocalResponseNorm, RegionCrops, RegionNets
from .preprocess import Preprocess
from .vgg import VGG16_CONV_LAYERS, call_trunk, check_trainable_from, freeze_before, vgg16_base

__all__ = [
    "enet", "cnet", "eacnet", "enet_crops", "plain_vgg_au", "smoothed_bce",
    "AUBinaryCrossentropy", "au_pos_weights", "compile_au_model", "grad_cam",
    "count_locally_connected_weights", "eacnet_custom_objects", "model_inputs",
    "RegionCrops", "RegionNets", "LocalResponseNorm", "ENHANCED_GROUPS",
]

# E-Net's enhanced conv groups → the 2×2 max-poolings that bring the map to their grid.
ENHANCED_GROUPS = {3: 2, 4: 3}


def eacnet_custom_objects() -> dict:
    """The kit's custom layers and loss by name (they are registered: load_model needs none)."""
    classes = {"RegionCrops": RegionCrops, "RegionNets": RegionNets,
               "LocalResponseNorm": LocalResponseNorm,
               "AUBinaryCrossentropy": AUBinaryCrossentropy}
    return {**classes, **{f"fer_utils>{k}": v for k, v in classes.items()}}


# --- argument checks -------------------------------------------------------------------------


def _check_input_shape(input_shape, who: str) -> tuple:
    """(H, W, C) with H, W >= 32 (five poolings leave >= 1×1) and C in (1, 3)."""
    try:
        h, w, c = (int(v) for v in input_shape)
    except (TypeError, ValueError):
        raise ValueError(f"{who}: input_shape must be (height, width, channels), "
                         f"got {input_shape!r}") from None
    if h < 32 or w < 32 or c not in (1, 3):
        raise ValueError(f"{who}: input_shape must be (H, W, C) with H, W >= 32 and C 1 or 3, "
                         f"got {input_shape!r}")
    return h, w, c


def _check_positive(who: str, **values) -> None:
    """Every value a positive integer, or a ValueError naming it."""
    for arg, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{who}: {arg} must be a positive integer, got {value!r}")


def _check_dropout(who: str, dropout) -> None:
    """A dropout rate in [0, 1)."""
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"{who}: dropout must lie in [0, 1), got {dropout!r}")


# --- E-Net and the plain VGG -----------------------------------------------------------------


def _enhanced_trunk(image, attention, base):
    """The VGG trunk's layers on `image`; with `attention`, E-Net's fusion in groups 3 and 4."""
    maps, first = {}, {}
    if attention is not None:
        a = attention
        for k in range(1, max(ENHANCED_GROUPS.values()) + 1):  # H/2, H/4, H/8
            a = keras.layers.MaxPooling2D(2, name=f"attention_pool{k}")(a)
            maps[k] = a

    def fuse(name, x):
        """Keep each group's first conv output; after its last conv add first ⊙ map."""
        group = int(name[5])
        if name == f"block{group}_conv1":
            first[group] = x
        if maps and group in ENHANCED_GROUPS and name == f"block{group}_conv3":
            weighted = keras.layers.Multiply(name=f"attention{group}")(
                [first[group], maps[ENHANCED_GROUPS[group]]])
            x = keras.layers.Add(name=f"enhance{group}")([x, weighted])
        return x

    # Raw pixels -> VGG's input, inside the model (so a saved model takes raw pixels).
    return call_trunk(base, Preprocess("vgg", name="preprocess")(image), after=fuse)


def _head(x, num_aus: int, units: int, dropout: float, prefix: str = ""):
    """dense → dropout → one sigmoid per AU (output layer named 'aus', float32)."""
    x = keras.layers.Dense(units, activation="relu", name=f"{prefix}fc")(x)
    x = keras.layers.Dropout(dropout, name=f"{prefix}dropout")(x)
    return keras.layers.Dense(num_aus, activation="sigmoid", name="aus", dtype="float32")(x)


def _pooled_au_model(who, enhance, input_shape, num_aus, weights, trainable_from, head_units,
                     dropout, width, name, verbose):
    """VGG trunk (attention-enhanced or not) → global pooling → AU head: plain VGG or E-Net."""
    h, w, c = _check_input_shape(input_shape, who)
    _check_positive(who, num_aus=num_aus, head_units=head_units)
    check_trainable_from(trainable_from, VGG16_CONV_LAYERS, who)
    _check_dropout(who, dropout)
    base = vgg16_base((h, w, c), weights=weights, width=width)
    image = keras.Input(shape=(h, w, c), name="image")
    inputs, attention = [image], None
    if enhance:
        attention = keras.Input(shape=(h, w, 1), name="attention")
        inputs.append(attention)
    x = _enhanced_trunk(image, attention, base)
    x = keras.layers.GlobalAveragePooling2D(name="global_pool")(x)
    model = keras.Model(inputs if enhance else image,
                        _head(x, int(num_aus), int(head_units), dropout), name=name)
    model.weights_status = base.weights_status
    freeze_before(model, trainable_from, base.weights_status, "block3_conv1", who, verbose)
    return model


def plain_vgg_au(input_shape=(96, 96, 3), num_aus: int = 12, weights="imagenet",
                 trainable_from: str | None = "auto", head_units: int = 2048,
                 dropout: float = 0.5, width: float = 1.0, name: str = "plain_vgg_au",
                 verbose: bool = True):
    """The baseline: VGG16 conv groups + global pooling → dense → dropout → sigmoid per AU.

    Args:
        input_shape: (H, W, C) of the images, H and W at least 32.
        num_aus: number of action units (one sigmoid each).
        weights: "imagenet", None / "none" (random init) or a path to VGG16 notop weights.
        trainable_from: first trainable conv layer. "auto": `block3_conv1` (groups 1-2
            frozen, as in EAC-Net) with pretrained weights, None (everything trains) with
            random ones; None trains everything.
        head_units: width of the dense layer before the outputs (2048 in EAC-Net).
        dropout: dropout rate before the outputs.
        width: channel multiplier of the trunk (1: VGG16; 1/8: compact, from scratch).
        name: model name.
        verbose: say so (one line) when random weights leave every layer trainable.

    Returns:
        A Keras Model with input "image" and output "aus" (N×num_aus probabilities).
    """
    return _pooled_au_model("plain_vgg_au", False, input_shape, num_aus, weights,
                            trainable_from, head_units, dropout, width, name, verbose)


def enet(input_shape=(96, 96, 3), num_aus: int = 12, weights="imagenet",
         trainable_from: str | None = "auto", head_units: int = 2048, dropout: float = 0.5,
         width: float = 1.0, name: str = "enet", verbose: bool = True):
    """E-Net: VGG16 whose conv groups 3 and 4 are enhanced by an AU attention map.

    The map (N×H×W×1) is max-pooled 2×2 to H/4 and H/8 ("attention_pool1-3"), multiplied into
    the first conv output of group 3 (4) ("attention3", "attention4") and added to the last
    ("enhance3", "enhance4"): `block3_conv3 + block3_conv1 ⊙ A`. Features near AU centres are
    enhanced, the rest kept. Then group 5, global pooling, dense, dropout, a sigmoid per AU.

    Args:
        input_shape: (H, W, C) of the images, H and W at least 32.
        num_aus: number of action units (one sigmoid each).
        weights: "imagenet", None / "none" (random init) or a path to VGG16 notop weights.
        trainable_from: first trainable conv layer ("auto": groups 1-2 frozen with
            pretrained weights, as in the paper; nothing frozen with random ones).
        head_units: width of the dense layer before the outputs (2048 in EAC-Net).
        dropout: dropout rate before the outputs.
        width: channel multiplier of the trunk (1: VGG16; 1/8: compact, from scratch).
        name: model name.
        verbose: say so (one line) when random weights leave every layer trainable.

    Returns:
        A Keras Model with inputs ["image", "attention"] and output "aus".
    """
    return _pooled_au_model("enet", True, input_shape, num_aus, weights, trainable_from,
                            head_units, dropout, width, name, verbose)


# --- C-Net and EAC-Net -----------------------------------------------------------------------


def enet_crops(enet_model, crop_size: int = 3, name: str = "enet_crops"):
    """E-Net's enhanced group-4 features, normalised (LRN), cropped around the 20 AU centres.

    Args:
        enet_model: an E-Net (`enet`); its layers are shared, not copied.
        crop_size: crop side in group-4 cells (3 in EAC-Net).
        name: model name.

    Returns:
        A Keras Model with inputs ["image", "attention", "centers"] and output "crops"
        (N×20×s×s×C): what C-Net reads.
    """
    _check_positive("enet_crops", crop_size=crop_size)
    try:
        features = enet_model.get_layer("enhance4").output
    except ValueError:
        raise ValueError(f"enet_crops: model {enet_model.name!r} has no layer 'enhance4'; "
                         f"pass an E-Net built by fu.models.enet") from None
    grid = features.shape[1:3]
    if min(grid) < crop_size:
        raise ValueError(f"enet_crops: the group-4 grid is {grid[0]}×{grid[1]}, smaller than "
                         f"crop_size={crop_size}; use larger images")
    centers = keras.Input(shape=(NUM_CENTERS, 2), name="centers")
    normalised = LocalResponseNorm(name="lrn")(features)
    crops = RegionCrops(crop_size, name="crops")([normalised, centers])
    return keras.Model([*enet_model.inputs, centers], crops, name=name)


def cnet(crops_shape=(NUM_CENTERS, 3, 3, 512), num_aus: int = 12, filters: int = 512,
         units: int = 150, merge_units: int = 2048, dropout: float = 0.5, name: str = "cnet"):
    """C-Net: one small network per AU centre on crops of E-Net's features, then merged.

    Per crop, with its own weights ("region_nets"): upscale ×2 → 3×3 conv without padding
    (`filters`, ReLU; a 3×3 crop becomes 6×6, then 4×4) → dense (`units`, ReLU). The 20
    region vectors are concatenated → dense (`merge_units`) → dropout → a sigmoid per AU. The
    defaults are the authors' sizes (512 filters, 150 units, 2048).

    Args:
        crops_shape: (20, s, s, C) of the crops (`enet_crops(...).output.shape[1:]`).
        num_aus: number of action units (one sigmoid each).
        filters: filters of each region's 3×3 conv.
        units: units of each region's dense layer.
        merge_units: units of the dense layer after concatenation.
        dropout: dropout rate before the outputs.
        name: model name.

    Returns:
        A Keras Model with input "crops" and output "aus".
    """
    who = "cnet"
    try:
        k, s, s2, c = (int(v) for v in crops_shape)
    except (TypeError, ValueError):
        raise ValueError(f"{who}: crops_shape must be (centres, s, s, channels), "
                         f"got {crops_shape!r}") from None
    if k < 1 or s < 2 or s != s2 or c < 1:
        raise ValueError(f"{who}: crops_shape must be (centres, s, s, channels) with square "
                         f"crops of at least 2×2, got {crops_shape!r}")
    _check_positive(who, num_aus=num_aus, filters=filters, units=units,
                    merge_units=merge_units)
    _check_dropout(who, dropout)
    crops = keras.Input(shape=(k, s, s, c), name="crops")
    x = RegionNets(int(filters), int(units), name="region_nets")(crops)
    return keras.Model(crops, _head(x, int(num_aus), int(merge_units), dropout, "merge_"),
                       name=name)


def eacnet(enet_model, cnet_model=None, crop_size: int = 3, name: str = "eacnet",
           **cnet_args):
    """EAC-Net: a trained E-Net, frozen, whose group-4 crops feed C-Net, as the authors train it.

    Args:
        enet_model: a trained E-Net (`enet`). Its layers are shared and set to not train.
        cnet_model: a C-Net for these crops (`cnet`); default: a new one built with `cnet_args`.
        crop_size: crop side in group-4 cells (3 in EAC-Net).
        name: model name.
        **cnet_args: arguments of `cnet` (num_aus, filters, units, merge_units, dropout).

    Returns:
        A Keras Model with inputs ["image", "attention", "centers"] and output "aus"; the
        C-Net is its layer `cnet_model.name`.
    """
    crops_model = enet_crops(enet_model, crop_size)
    if cnet_model is None:
        cnet_model = cnet(tuple(crops_model.output.shape[1:]), **cnet_args)
    elif cnet_args:
        raise ValueError(f"eacnet: pass either cnet_model or C-Net arguments, not both "
                         f"({', '.join(cnet_args)})")
    expected = tuple(crops_model.output.shape[1:])
    if tuple(cnet_model.inputs[0].shape[1:]) != expected:
        raise ValueError(f"eacnet: cnet_model takes crops of shape "
                         f"{tuple(cnet_model.inputs[0].shape[1:])}, the E-Net gives {expected}")
    for layer in crops_model.layers:
        layer.trainable = False  # the authors train C-Net on a frozen E-Net
    model = keras.Model(crops_model.inputs, cnet_model(crops_model.output), name=name)
    model.weights_status = getattr(enet_model, "weights_status", "unknown")
    return model


# --- losses and training ---------------------------------------------------------------------


def smoothed_bce(y_true, y_pred, smooth: float = 0.05):
    """EAC-Net's smoothed binary cross-entropy, averaged over AUs.

    `-(t·log((o + s)/(1 + s)) + (1 - t)·log((1 + s - o)/(1 + s)))` with s = 0.05: the log never
    sees 0, so a confidently wrong sigmoid gives a bounded loss (at most -log(s/(1+s)) ≈ 3.04).
    """
    ops = keras.ops
    t = ops.cast(y_true, "float32")
    o = ops.cast(y_pred, "float32")
    loss = -(t * ops.log((o + smooth) / (1.0 + smooth))
             + (1.0 - t) * ops.log((1.0 + smooth - o) / (1.0 + smooth)))
    return ops.mean(loss, axis=-1)


@keras.saving.register_keras_serializable(package="fer_utils")
class AUBinaryCrossentropy(keras.losses.Loss):
    """Multi-label BCE for AUs: optional EAC-Net smoothing and per-AU positive weights.

    Args:
        pos_weight: None, or one weight per AU multiplying the loss of positive labels
            (e.g. `au_pos_weights(train_labels)`, so rare AUs are not ignored).
        smooth: EAC-Net's smoothing s (0.05); 0 gives the plain (clipped) BCE.
    """

    def __init__(self, pos_weight=None, smooth: float = 0.05, name="au_bce", **kwargs):
        super().__init__(name=name, **kwargs)
        self.pos_weight = None if pos_weight is None else [float(v) for v in
                                                           np.ravel(pos_weight)]
        self.smooth = float(smooth)

    def call(self, y_true, y_pred):
        """Per-face loss: the mean over AUs of the (weighted, smoothed) BCE."""
        ops = keras.ops
        t = ops.cast(y_true, "float32")
        o = ops.clip(ops.cast(y_pred, "float32"), 1e-7, 1.0 - 1e-7)
        s = self.smooth
        pos = -t * ops.log((o + s) / (1.0 + s))
        neg = -(1.0 - t) * ops.log((1.0 + s - o) / (1.0 + s))
        if self.pos_weight is not None:
            pos = pos * ops.convert_to_tensor(self.pos_weight, "float32")
        return ops.mean(pos + neg, axis=-1)

    def get_config(self):
        """The loss's arguments, for saving."""
        return {**super().get_config(), "pos_weight": self.pos_weight, "smooth": self.smooth}


def au_pos_weights(labels, max_weight: float = 10.0) -> np.ndarray:
    """Per-AU positive-class weights from training labels: negatives / positives, in [1, max]."""
    y = np.asarray(labels, dtype=np.float32)
    if y.ndim != 2 or len(y) == 0:
        raise ValueError(f"au_pos_weights: labels must be a non-empty N×K 0/1 array, "
                         f"got shape {y.shape}")
    pos = (y >= 0.5).sum(axis=0)
    neg = len(y) - pos
    return np.clip(neg / np.maximum(pos, 1), 1.0, max_weight).astype(np.float32)


def compile_au_model(model, learning_rate: float = 1e-4, optimizer: str = "adam",
                     pos_weight=None, smooth: float = 0.05, metrics: bool = True,
                     jit_compile: bool = False):
    """Compile an AU model: smoothed (and optionally weighted) BCE, binary accuracy and AUC.

    Args:
        model: a model with N×K sigmoid outputs.
        learning_rate: the optimizer's learning rate (a number or a Keras schedule).
        optimizer: "adam", or "sgd" (the paper's Nesterov SGD, momentum 0.9).
        pos_weight: optional per-AU positive weights (`au_pos_weights`).
        smooth: EAC-Net's smoothing (0.05; 0 for plain BCE).
        metrics: report binary accuracy and AUC while training (off: only the loss, faster).
        jit_compile: XLA-compile the train step (off: compiling VGG on a CPU costs more
            than it saves in a short run).

    Returns:
        The compiled model.
    """
    if optimizer == "adam":
        opt = keras.optimizers.Adam(learning_rate)
    elif optimizer == "sgd":
        opt = keras.optimizers.SGD(learning_rate, momentum=0.9, nesterov=True)
    else:
        raise ValueError(f"compile_au_model: optimizer={optimizer!r}; allowed: 'adam', 'sgd'")
    loss = AUBinaryCrossentropy(pos_weight=pos_weight, smooth=smooth)
    watched = [keras.metrics.BinaryAccuracy(name="binary_accuracy"),
               keras.metrics.AUC(multi_label=True, name="auc")] if metrics else None
    model.compile(optimizer=opt, loss=loss, jit_compile=jit_compile, metrics=watched)
    return model


def model_inputs(data, model):
    """The inputs `model` takes, out of a dict of arrays or a tf.data dataset of (dict, y).

    The plain VGG takes only "image", E-Net "image" and "attention", EAC-Net all three; one
    dict (or one dataset from `fu.data.to_tf_dataset(..., attention=True)`) serves them all.
    """
    names = [t.name for t in model.inputs]
    if isinstance(data, dict):
        missing = [n for n in names if n not in data]
        if missing:
            raise ValueError(f"model_inputs: model {model.name!r} needs inputs {names}; the "
                             f"dict has {sorted(data)} (missing {missing})")
        return data[names[0]] if len(names) == 1 else {n: data[n] for n in names}
    spec = data.element_spec
    x_spec = spec[0] if isinstance(spec, tuple) else spec
    if not isinstance(x_spec, dict):
        raise ValueError(f"model_inputs: the dataset must yield ({{name: tensor}}, y) batches "
                         f"(to_tf_dataset(..., attention=True)); got {x_spec}")
    missing = [n for n in names if n not in x_spec]
    if missing:
        raise ValueError(f"model_inputs: model {model.name!r} needs inputs {names}; the "
                         f"dataset has {sorted(x_spec)} (missing {missing})")
    if len(names) == 1:
        return data.map(lambda x, *rest: (x[names[0]], *rest))
    return data.map(lambda x, *rest: ({n: x[n] for n in names}, *rest))


# --- interpretation --------------------------------------------------------------------------


def grad_cam(model, inputs, layer_name: str, output_index: int = 0) -> np.ndarray:
    """Grad-CAM: where `model` looks for output `output_index`, as a map over the input image.

    Args:
        model: a functional Keras model.
        inputs: what the model takes, with a batch axis (array, list or dict of arrays).
        layer_name: a conv layer (e.g. "block4_conv3" or "enhance4").
        output_index: which output unit (AU) to explain.

    Returns:
        float32 H×W map in [0, 1] for a batch of one, else N×H×W (H×W of the input image).
    """
    import cv2
    import tensorflow as tf

    try:
        layer = model.get_layer(layer_name)
    except ValueError:
        convs = [l.name for l in model.layers
                 if len(getattr(getattr(l, "output", None), "shape", None) or ()) == 4]
        raise ValueError(f"grad_cam: model {model.name!r} has no layer {layer_name!r}; "
                         f"4-D layers: {', '.join(convs)}") from None
    probe = keras.Model(model.inputs, [layer.output, model.output])
    if isinstance(inputs, dict):
        inputs = {k: tf.convert_to_tensor(v, tf.float32) for k, v in inputs.items()}
    elif isinstance(inputs, (list, tuple)):
        inputs = [tf.convert_to_tensor(v, tf.float32) for v in inputs]
    else:
        inputs = tf.convert_to_tensor(inputs, tf.float32)
    with tf.GradientTape() as tape:
        features, out = probe(inputs, training=False)
        if isinstance(out, (list, tuple)):
            out = out[0]
        if not 0 <= output_index < out.shape[-1]:
            raise ValueError(f"grad_cam: output_index={output_index} outside "
                             f"0..{out.shape[-1] - 1}")
        score = out[:, output_index]
    grads = tape.gradient(score, features)
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
    cams = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1)).numpy()
    image_shape = model.inputs[0].shape
    h, w = int(image_shape[1]), int(image_shape[2])
    result = []
    for cam in cams:
        cam = cv2.resize(cam.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
        top = cam.max()
        result.append(cam / top if top > 0 else cam)
    result = np.stack(result).astype(np.float32)
    return result[0] if len(result) == 1 else result


def count_locally_connected_weights(height: int, width: int, in_channels: int,
                                    out_channels: int, kernel: int = 3,
                                    regions: tuple | None = None) -> dict:
    """Weights of a 'same' conv layer: shared kernel vs one kernel per position vs per region.

    Args:
        height: feature-map height.
        width: feature-map width.
        in_channels: input channels.
        out_channels: output channels (filters).
        kernel: kernel size.
        regions: optional (rows, cols) grid of region kernels (e.g. (8, 8)).

    Returns:
        {"convolution": ..., "locally_connected": ..., "region_grid": ...} weight counts
        (biases included: one per filter, per position, per region).
    """
    per_kernel = kernel * kernel * in_channels * out_channels
    counts = {"convolution": per_kernel + out_channels,
              "locally_connected": height * width * (per_kernel + out_channels)}
    if regions is not None:
        rows, cols = regions
        counts["region_grid"] = rows * cols * (per_kernel + out_channels)
    return counts
