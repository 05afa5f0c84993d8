"""E-Net and EAC-Net: attention-enhanced VGG16 and region crops for action-unit detection.

EAC-Net (Li, Abtahi, Zhu, Yin, 2017) detects facial action units (AUs) with a VGG network
whose conv groups 3 and 4 are *enhanced* by a landmark attention map (E-Net: `F + F ⊙ A`) and
whose enhanced group-4 features are *cropped* around the 20 AU centres and fed to one small
local network per centre (C-Net). The paper used VGG19; the kit uses VGG16: every builder here
reuses the layers of the kit's one VGG trunk (`fer_utils.models.vgg.vgg16_base`, i.e.
`keras.applications.VGG16`), so layer names and ImageNet weights are Keras' own. With
`width=1/8` they use the compact trunk (same five groups, fewer channels, from scratch).

Inputs (all builders name them, so a tf.data dict {"image", "attention", "centers"} feeds them):
  image: N×H×W×C raw pixels, float 0-255 (the model's `preprocess` layer converts them);
  attention: N×H×W×1 maps in [0, 1] (`fer_utils.attention.attention_map`);
  centers: N×20×2 AU centres (x, y) relative to the image, 0-1 (`tf_attention_inputs`).
"""

from __future__ import annotations

import keras
import numpy as np

from .layers import NUM_CENTERS, AttentionEnhance, RegionCrops, RegionNets
from .preprocess import Preprocess
from .vgg import (VGG16_CONV_LAYERS, call_trunk, check_trainable_from, freeze_before,
                  vgg16_base)

__all__ = [
    "enet", "eacnet", "plain_vgg_au", "smoothed_bce", "AUBinaryCrossentropy", "au_pos_weights",
    "compile_au_model", "grad_cam", "count_locally_connected_weights", "eacnet_custom_objects",
    "model_inputs", "AttentionEnhance", "RegionCrops", "RegionNets", "FUSIONS",
]

# E-Net's fusion of features F and attention A: "residual" F + F ⊙ A (the paper), or
# "multiply" F ⊙ A (the ablation: features far from every AU centre are switched off).
FUSIONS = ("residual", "multiply")


def eacnet_custom_objects() -> dict:
    """The kit's custom layers and loss by name (they are registered: load_model needs none)."""
    classes = {"AttentionEnhance": AttentionEnhance, "RegionCrops": RegionCrops,
               "RegionNets": RegionNets, "AUBinaryCrossentropy": AUBinaryCrossentropy}
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


def _check_common(who: str, num_aus, trainable_from, dropout, fusion="residual"):
    """Validate the arguments every AU builder shares."""
    if isinstance(num_aus, bool) or int(num_aus) != num_aus or num_aus < 1:
        raise ValueError(f"{who}: num_aus must be a positive integer, got {num_aus!r}")
    check_trainable_from(trainable_from, VGG16_CONV_LAYERS, who)
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"{who}: dropout must lie in [0, 1), got {dropout!r}")
    if fusion not in FUSIONS:
        raise ValueError(f"{who}: fusion={fusion!r}; allowed: {', '.join(FUSIONS)}")


def _pooled(size: int, times: int) -> int:
    """Spatial size after `times` 2×2 max-poolings (floor, as VGG's 'valid' pooling)."""
    for _ in range(times):
        size //= 2
    return size


# --- shared pieces ---------------------------------------------------------------------------


def _attention_at(attention, size: tuple, name: str):
    """The attention map resized (area averaging) to a feature map's h×w."""
    return keras.layers.Resizing(size[0], size[1], interpolation="area", name=name)(attention)


def _head(x, num_aus: int, units: int, dropout: float, prefix: str = ""):
    """dense → dropout → one sigmoid per AU (output layer named 'aus', float32)."""
    x = keras.layers.Dense(units, activation="relu", name=f"{prefix}fc")(x)
    x = keras.layers.Dropout(dropout, name=f"{prefix}dropout")(x)
    return keras.layers.Dense(num_aus, activation="sigmoid", name="aus", dtype="float32")(x)


def _trunk(input_shape, weights, width, enhance: bool, fusion: str = "residual"):
    """The VGG trunk's layers on new inputs; with `enhance`, attention fused after groups 3, 4.

    Returns:
        (inputs, group-5 output, enhanced group-4 features, trunk weights status).
    """
    h, w, _ = input_shape
    base = vgg16_base(input_shape, weights=weights, width=width)
    image = keras.Input(shape=input_shape, name="image")
    inputs, maps = [image], {}
    if enhance:
        attention = keras.Input(shape=(h, w, 1), name="attention")
        inputs.append(attention)
        # Groups 3 and 4 end at 1/4 and 1/8 of the input size.
        maps = {"block3_conv3": _attention_at(attention, (_pooled(h, 2), _pooled(w, 2)),
                                              "attention3"),
                "block4_conv3": _attention_at(attention, (_pooled(h, 3), _pooled(w, 3)),
                                              "attention4")}
    # Blocks 1-5: the trunk's layers in order; E-Net fuses F and A after blocks 3 and 4.
    group4 = []

    def fuse(name, x):
        """E-Net's fusion after groups 3 and 4; remembers group 4's (enhanced) output."""
        if name in maps:
            x = AttentionEnhance(residual=fusion == "residual",
                                 name=f"enhance{name[5]}")([x, maps[name]])
        if name == "block4_conv3":
            group4.append(x)
        return x

    # Raw pixels -> VGG's input, inside the model (so a saved model takes raw pixels).
    x = call_trunk(base, Preprocess("vgg", name="preprocess")(image), after=fuse)
    return inputs, x, group4[0], base.weights_status


# --- builders --------------------------------------------------------------------------------


def plain_vgg_au(input_shape=(96, 96, 3), num_aus: int = 12, weights="imagenet",
                 trainable_from: str | None = "auto", head_units: int = 256,
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
        head_units: width of the dense layer before the outputs.
        dropout: dropout rate before the outputs.
        width: channel multiplier of the trunk (1: VGG16; 1/8: compact, from scratch).
        name: model name.
        verbose: say so (one line) when random weights leave every layer trainable.

    Returns:
        A Keras Model with input "image" and output "aus" (N×num_aus probabilities).
    """
    return _pooled_au_model("plain_vgg_au", False, "residual", input_shape, num_aus, weights,
                            trainable_from, head_units, dropout, width, name, verbose)


def enet(input_shape=(96, 96, 3), num_aus: int = 12, weights="imagenet",
         trainable_from: str | None = "auto", head_units: int = 256, dropout: float = 0.5,
         fusion: str = "residual", width: float = 1.0, name: str = "enet",
         verbose: bool = True):
    """E-Net: VGG16 whose conv groups 3 and 4 are enhanced by an AU attention map.

    The map (N×H×W×1) is resized (area averaging) to the outputs of conv groups 3 (H/4) and
    4 (H/8) and fused residually, `F' = F + F ⊙ A` (layers "enhance3", "enhance4"): features
    near AU centres are up to doubled, the rest kept. Then group 5, global pooling, dense,
    dropout and one sigmoid per AU.

    Args:
        input_shape: (H, W, C) of the images, H and W at least 32.
        num_aus: number of action units (one sigmoid each).
        weights: "imagenet", None / "none" (random init) or a path to VGG16 notop weights.
        trainable_from: first trainable conv layer ("auto": groups 1-2 frozen with
            pretrained weights, as in the paper; nothing frozen with random ones).
        head_units: width of the dense layer before the outputs.
        dropout: dropout rate before the outputs.
        fusion: "residual" (F + F ⊙ A, the paper) or "multiply" (F ⊙ A, the ablation).
        width: channel multiplier of the trunk (1: VGG16; 1/8: compact, from scratch).
        name: model name.
        verbose: say so (one line) when random weights leave every layer trainable.

    Returns:
        A Keras Model with inputs ["image", "attention"] and output "aus".
    """
    return _pooled_au_model("enet", True, fusion, input_shape, num_aus, weights,
                            trainable_from, head_units, dropout, width, name, verbose)


def _pooled_au_model(who, enhance, fusion, input_shape, num_aus, weights, trainable_from,
                     head_units, dropout, width, name, verbose):
    """VGG trunk (attention-enhanced or not) → global pooling → AU head: plain VGG or E-Net."""
    input_shape = _check_input_shape(input_shape, who)
    _check_common(who, num_aus, trainable_from, dropout, fusion)
    inputs, x, _, status = _trunk(input_shape, weights, width, enhance, fusion)
    x = keras.layers.GlobalAveragePooling2D(name="global_pool")(x)
    outputs = _head(x, int(num_aus), int(head_units), dropout)
    model = keras.Model(inputs, outputs, name=name)
    model.weights_status = status
    freeze_before(model, trainable_from, status, "block3_conv1", who, verbose)
    return model


def _check_eacnet(who, crop_size, region_filters, region_units, merge_units, crop_cells,
                  region_layers):
    """Validate EAC-Net's own arguments."""
    for arg, value in (("crop_size", crop_size), ("region_filters", region_filters),
                       ("region_units", region_units), ("merge_units", merge_units)):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(f"{who}: {arg} must be a positive integer, got {value!r}")
    if crop_cells is not None and not crop_cells > 0:
        raise ValueError(f"{who}: crop_cells must be positive, got {crop_cells!r}")
    if region_layers not in ("batched", "separate"):
        raise ValueError(f"{who}: region_layers={region_layers!r}; allowed: 'batched', "
                         f"'separate'")


def _region_features(group4, centers, crop_cells, crop_size, filters, units, region_layers):
    """C-Net: one local network per AU centre on crops of the enhanced group-4 features."""
    if region_layers == "batched":
        crops = RegionCrops(crop_cells=crop_cells, crop_size=crop_size, num_centers=NUM_CENTERS,
                            stacked=True, name="region_crops")([group4, centers])
        return [RegionNets(filters=filters, units=units, name="region_nets")(crops)]
    crops = RegionCrops(crop_cells=crop_cells, crop_size=crop_size, num_centers=NUM_CENTERS,
                        name="region_crops")([group4, centers])
    parts = []
    for k, crop in enumerate(crops):
        r = keras.layers.UpSampling2D(2, interpolation="bilinear", name=f"region{k}_upsample")(crop)
        r = keras.layers.Conv2D(filters, 3, padding="same", activation="relu",
                                name=f"region{k}_conv")(r)
        r = keras.layers.Flatten(name=f"region{k}_flatten")(r)
        parts.append(keras.layers.Dense(units, activation="relu", name=f"region{k}_fc")(r))
    return parts


def eacnet(input_shape=(96, 96, 3), num_aus: int = 12, weights="imagenet",
           trainable_from: str | None = "auto", crop_cells: float | None = None,
           crop_size: int = 3, region_filters: int = 64, region_units: int = 64,
           merge_units: int = 512, dropout: float = 0.5, global_features: bool = True,
           region_layers: str = "batched", fusion: str = "residual", width: float = 1.0,
           name: str = "eacnet", verbose: bool = True):
    """EAC-Net: E-Net plus C-Net, local networks on crops around the 20 AU centres.

    C-Net: from the enhanced group-4 features ("enhance4", H/8 × W/8) a box of `crop_cells`
    feature cells is cropped around each AU centre and resampled to `crop_size`×`crop_size`
    ("region_crops"); each of the 20 crops has its own small network: upscale ×2 → 3×3 conv
    → flatten → dense (centres 2r and 2r+1 belong to region r of
    `fer_utils.attention.AU_REGIONS`). With `region_layers="separate"` these are 20 branches
    of Keras layers `region{k}_upsample`, `region{k}_conv`, `region{k}_flatten`,
    `region{k}_fc` (easy to read in `summary()`); the default "batched" computes the same
    20 networks in one layer "region_nets" (weights indexed by region), which builds and
    compiles several times faster. The 20 region features (and, with `global_features`,
    E-Net's pooled group-5 features) are concatenated → dense → dropout → one sigmoid per
    AU. The paper's sizes are `region_filters=512, region_units=150, merge_units=2048` at
    224 px; the defaults here are smaller so a step trains quickly on a CPU.

    Args:
        input_shape: (H, W, C) of the images, H and W at least 32.
        num_aus: number of action units (one sigmoid each).
        weights: "imagenet", None / "none" (random init) or a path to VGG16 notop weights.
        trainable_from: first trainable conv layer ("auto": groups 1-2 frozen with
            pretrained weights; nothing frozen with random ones).
        crop_cells: crop side in group-4 feature cells; default 3 × (feature size / 28), the
            paper's 3 cells at 224 px, at least 2.
        crop_size: crops are resampled to crop_size × crop_size before the ×2 upscale.
        region_filters: filters of each region's 3×3 conv.
        region_units: units of each region's dense layer.
        merge_units: units of the dense layer after concatenation.
        dropout: dropout rate before the outputs.
        global_features: also feed E-Net's globally pooled group-5 features to the merge.
        region_layers: "batched" (one RegionNets layer) or "separate" (20 Keras branches).
        fusion: E-Net's fusion, "residual" (F + F ⊙ A) or "multiply" (F ⊙ A).
        width: channel multiplier of the trunk (1: VGG16; 1/8: compact, from scratch).
        name: model name.
        verbose: say so (one line) when random weights leave every layer trainable.

    Returns:
        A Keras Model with inputs ["image", "attention", "centers"] and output "aus".
    """
    who = "eacnet"
    input_shape = _check_input_shape(input_shape, who)
    _check_common(who, num_aus, trainable_from, dropout, fusion)
    _check_eacnet(who, crop_size, region_filters, region_units, merge_units, crop_cells,
                  region_layers)
    if crop_cells is None:
        crop_cells = max(2.0, 3.0 * _pooled(input_shape[0], 3) / 28.0)
    inputs, x, group4, status = _trunk(input_shape, weights, width, True, fusion)
    centers = keras.Input(shape=(NUM_CENTERS, 2), name="centers")
    inputs.append(centers)
    # C-Net: one local network per AU centre.
    parts = _region_features(group4, centers, float(crop_cells), int(crop_size),
                             int(region_filters), int(region_units), region_layers)
    if global_features:
        parts.append(keras.layers.GlobalAveragePooling2D(name="global_pool")(x))
    merged = keras.layers.Concatenate(name="cnet_concat")(parts)
    outputs = _head(merged, int(num_aus), int(merge_units), dropout, prefix="merge_")
    model = keras.Model(inputs, outputs, name=name)
    model.weights_status = status
    freeze_before(model, trainable_from, status, "block3_conv1", who, verbose)
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
                     pos_weight=None, smooth: float = 0.05, jit_compile: bool = False):
    """Compile an AU model: smoothed (and optionally weighted) BCE, binary accuracy and AUC.

    Args:
        model: a model with N×K sigmoid outputs.
        learning_rate: the optimizer's learning rate.
        optimizer: "adam", or "sgd" (the paper's Nesterov SGD, momentum 0.9).
        pos_weight: optional per-AU positive weights (`au_pos_weights`).
        smooth: EAC-Net's smoothing (0.05; 0 for plain BCE).
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
    model.compile(optimizer=opt, loss=loss, jit_compile=jit_compile,
                  metrics=[keras.metrics.BinaryAccuracy(name="binary_accuracy"),
                           keras.metrics.AUC(multi_label=True, name="auc")])
    return model


def model_inputs(dataset, model):
    """Map a tf.data dataset of ({"image", "attention", "centers"}, y) to the inputs `model` takes.

    The plain VGG16 takes only "image", E-Net "image" and "attention", EAC-Net all three; one
    dataset from `fu.data.to_tf_dataset(..., attention=True)` then serves all of them.
    """
    names = [t.name for t in model.inputs]
    spec = dataset.element_spec
    x_spec = spec[0] if isinstance(spec, tuple) else spec
    if not isinstance(x_spec, dict):
        raise ValueError(f"model_inputs: the dataset must yield ({{name: tensor}}, y) batches "
                         f"(to_tf_dataset(..., attention=True)); got {x_spec}")
    missing = [n for n in names if n not in x_spec]
    if missing:
        raise ValueError(f"model_inputs: model {model.name!r} needs inputs {names}; the "
                         f"dataset has {sorted(x_spec)} (missing {missing})")
    if len(names) == 1:
        return dataset.map(lambda x, *rest: (x[names[0]], *rest))
    return dataset.map(lambda x, *rest: ({n: x[n] for n in names}, *rest))


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
