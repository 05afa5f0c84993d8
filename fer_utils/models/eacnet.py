"""E-Net and EAC-Net: attention-enhanced VGG16 and region crops for action-unit detection.

EAC-Net (Li, Abtahi, Zhu, Yin, 2017) detects facial action units (AUs) with a VGG network
whose conv groups 3 and 4 are *enhanced* by a landmark attention map (E-Net: `F + F ⊙ A`) and
whose enhanced group-4 features are *cropped* around the 20 AU centres and fed to one small
local network per centre (C-Net). The paper used VGG19; the kit uses VGG16, with the same
layer names as `keras.applications.VGG16`, so `fer_utils.models.vgg.load_vgg16_weights`
loads ImageNet weights into any of the builders here.

Inputs (all builders name them, so a tf.data dict {"image", "attention", "centers"} feeds them):
  image: N×H×W×C float images (preprocessed the way the weights expect);
  attention: N×H×W×1 maps in [0, 1] (`fer_utils.attention.attention_map`);
  centers: N×20×2 AU centres (x, y) relative to the image, 0-1 (`tf_attention_inputs`).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "enet", "eacnet", "plain_vgg_au", "smoothed_bce", "au_pos_weights", "compile_au_model",
    "grad_cam", "count_locally_connected_weights", "eacnet_custom_objects", "model_inputs",
]
# Also here, built on first access (Keras is imported lazily): the layer classes
# `AttentionEnhance`, `RegionCrops` and the loss class `AUBinaryCrossentropy`.

# VGG16's conv groups: (filters, number of 3×3 convs), as in keras.applications.VGG16.
_VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
_CONV_LAYERS = tuple(f"block{b}_conv{i}" for b, (_, n) in enumerate(_VGG16_BLOCKS, 1)
                          for i in range(1, n + 1))
NUM_CENTERS = 20


def _keras():
    """Import Keras lazily (no work at import time)."""
    import keras

    return keras


# --- custom layers ---------------------------------------------------------------------------


def _register(cls):
    """Register a layer class for .keras saving/loading (package "fer_utils")."""
    return _keras().saving.register_keras_serializable(package="fer_utils")(cls)


def _layer_classes():
    """Build (once) the custom layer classes; they subclass keras.layers.Layer."""
    if "RegionCrops" in _CLASSES:
        return _CLASSES["AttentionEnhance"], _CLASSES["RegionCrops"]
    keras = _keras()

    class _AttentionEnhance(keras.layers.Layer):
        """E-Net fusion: features F (N×h×w×C) and a map A (N×h×w×1) → F + F ⊙ A."""

        def call(self, inputs):
            features, attention = inputs
            return features + features * attention

        def compute_output_shape(self, input_shape):
            return input_shape[0]

    class _RegionCrops(keras.layers.Layer):
        """C-Net crops: features N×h×w×C and centres N×K×2 (x, y, 0-1) → K tensors N×s×s×C.

        Each crop is a box of `crop_cells`×`crop_cells` feature cells centred on the AU
        centre, resampled bilinearly to `crop_size`×`crop_size` (tf.image.crop_and_resize), so
        the same layer works at 224 px (28×28 features, 3-cell crops as in the paper) and at
        48 px (6×6 features). Parts of a box outside the feature map read as 0.
        """

        def __init__(self, crop_cells: float = 3.0, crop_size: int = 3,
                     num_centers: int = NUM_CENTERS, stacked: bool = False, **kwargs):
            super().__init__(**kwargs)
            self.crop_cells = float(crop_cells)
            self.crop_size = int(crop_size)
            self.num_centers = int(num_centers)
            self.stacked = bool(stacked)  # one N×K×s×s×C tensor instead of K tensors

        def call(self, inputs):
            import tensorflow as tf

            features, centers = inputs
            shape = tf.shape(features)
            n, h, w = shape[0], tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
            k = self.num_centers
            c = tf.reshape(tf.cast(centers, tf.float32), (-1, 2))  # (N·K)×2, x y in 0-1
            # Feature-cell coordinates (cell centres at integers). The crop covers crop_cells
            # cells around the centre; its crop_size samples sit at the centres of equal
            # sub-cells (crop_cells = crop_size = 3: exactly cells f-1, f, f+1).
            fx = c[:, 0] * w - 0.5
            fy = c[:, 1] * h - 0.5
            half = self.crop_cells / 2.0 - 0.5 * self.crop_cells / self.crop_size
            boxes = tf.stack([(fy - half) / tf.maximum(h - 1.0, 1.0),
                              (fx - half) / tf.maximum(w - 1.0, 1.0),
                              (fy + half) / tf.maximum(h - 1.0, 1.0),
                              (fx + half) / tf.maximum(w - 1.0, 1.0)], axis=1)
            box_indices = tf.repeat(tf.range(n), k)
            crops = tf.image.crop_and_resize(features, boxes, box_indices,
                                             (self.crop_size, self.crop_size),
                                             extrapolation_value=0.0)
            crops = tf.reshape(crops, (n, k, self.crop_size, self.crop_size, shape[3]))
            channels = features.shape[-1]
            if self.stacked:
                crops.set_shape((None, k, self.crop_size, self.crop_size, channels))
                return crops
            out = []
            for i in range(k):
                crop = crops[:, i]
                crop.set_shape((None, self.crop_size, self.crop_size, channels))
                out.append(crop)
            return out

        def compute_output_shape(self, input_shape):
            features_shape = input_shape[0]
            one = (features_shape[0], self.crop_size, self.crop_size, features_shape[-1])
            if self.stacked:
                return (features_shape[0], self.num_centers) + one[1:]
            return [one] * self.num_centers

        def get_config(self):
            return {**super().get_config(), "crop_cells": self.crop_cells,
                    "crop_size": self.crop_size, "num_centers": self.num_centers,
                    "stacked": self.stacked}

    class _RegionNets(keras.layers.Layer):
        """C-Net's K local networks run side by side: N×K×s×s×C crops → N×(K·units).

        Region k has its own weights (`conv_kernel[k]`, `fc_kernel[k]`, ...): upscale ×2
        (bilinear) → 3×3 conv ('same', ReLU) → flatten → dense (ReLU). The same networks as
        K separate branches of Keras layers, in one layer, which builds and compiles several
        times faster.
        """

        def __init__(self, filters: int = 64, units: int = 64, upsample: int = 2, **kwargs):
            super().__init__(**kwargs)
            self.filters = int(filters)
            self.units = int(units)
            self.upsample = int(upsample)

        def build(self, input_shape):
            _, k, s, _, c = input_shape
            u = s * self.upsample
            f, units = self.filters, self.units
            glorot = keras.initializers.RandomUniform

            def limit(fan_in, fan_out):
                return float(np.sqrt(6.0 / (fan_in + fan_out)))

            lim_conv = limit(9 * c, 9 * f)
            lim_fc = limit(u * u * f, units)
            self.conv_kernel = self.add_weight(name="conv_kernel", shape=(k, 3, 3, c, f),
                                               initializer=glorot(-lim_conv, lim_conv))
            self.conv_bias = self.add_weight(name="conv_bias", shape=(k, f), initializer="zeros")
            self.fc_kernel = self.add_weight(name="fc_kernel", shape=(k, u * u * f, units),
                                             initializer=glorot(-lim_fc, lim_fc))
            self.fc_bias = self.add_weight(name="fc_bias", shape=(k, units), initializer="zeros")

        def call(self, crops):
            import tensorflow as tf

            _, k, s, _, c = crops.shape
            u = s * self.upsample
            n = tf.shape(crops)[0]
            x = tf.image.resize(tf.reshape(crops, (-1, s, s, c)), (u, u), method="bilinear")
            x = tf.reshape(x, (n, k, u, u, c))
            outs = []
            for i in range(k):  # one conv + dense per region (oneDNN convs beat batched einsums)
                r = tf.nn.conv2d(x[:, i], self.conv_kernel[i], 1, "SAME") + self.conv_bias[i]
                r = tf.reshape(tf.nn.relu(r), (n, u * u * self.filters))
                outs.append(tf.nn.relu(tf.matmul(r, self.fc_kernel[i]) + self.fc_bias[i]))
            return tf.concat(outs, axis=-1)

        def compute_output_shape(self, input_shape):
            return (input_shape[0], input_shape[1] * self.units)

        def get_config(self):
            return {**super().get_config(), "filters": self.filters, "units": self.units,
                    "upsample": self.upsample}

    _AttentionEnhance.__name__ = _AttentionEnhance.__qualname__ = "AttentionEnhance"
    _RegionCrops.__name__ = _RegionCrops.__qualname__ = "RegionCrops"
    _RegionNets.__name__ = _RegionNets.__qualname__ = "RegionNets"
    _CLASSES["RegionNets"] = _register(_RegionNets)
    _CLASSES["AttentionEnhance"] = _register(_AttentionEnhance)
    _CLASSES["RegionCrops"] = _register(_RegionCrops)
    return _CLASSES["AttentionEnhance"], _CLASSES["RegionCrops"]


_CLASSES: dict = {}  # the custom classes, created on first use (keeps `import` free of Keras)


def __getattr__(name: str):
    """`eacnet.AttentionEnhance`, `.RegionCrops`, `.AUBinaryCrossentropy`: built on first access."""
    if name in ("AttentionEnhance", "RegionCrops", "RegionNets"):
        _layer_classes()
        return _CLASSES[name]
    if name == "AUBinaryCrossentropy":
        return _loss_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def eacnet_custom_objects() -> dict:
    """The kit's custom layers and loss by name, for `load_model(..., custom_objects=...)`."""
    enhance_cls, crops_cls = _layer_classes()
    loss_cls = _loss_class()
    classes = {"AttentionEnhance": enhance_cls, "RegionCrops": crops_cls,
               "RegionNets": _CLASSES["RegionNets"], "AUBinaryCrossentropy": loss_cls}
    return {**classes, **{f"fer_utils>{k}": v for k, v in classes.items()}}


# --- argument checks -------------------------------------------------------------------------


def _check_input_shape(input_shape, who: str) -> tuple:
    """(H, W, C) with H, W >= 32 (four poolings leave >= 2×2) and C in (1, 3)."""
    try:
        h, w, c = (int(v) for v in input_shape)
    except (TypeError, ValueError):
        raise ValueError(f"{who}: input_shape must be (height, width, channels), "
                         f"got {input_shape!r}") from None
    if h < 32 or w < 32 or c not in (1, 3):
        raise ValueError(f"{who}: input_shape must be (H, W, C) with H, W >= 32 and C 1 or 3, "
                         f"got {input_shape!r}")
    return h, w, c


def _check_common(who: str, num_aus, trainable_from, dropout):
    if int(num_aus) != num_aus or num_aus < 1:
        raise ValueError(f"{who}: num_aus must be a positive integer, got {num_aus!r}")
    if trainable_from is not None and trainable_from not in _CONV_LAYERS:
        raise ValueError(f"{who}: trainable_from={trainable_from!r} is not a VGG16 conv layer; "
                         f"use one of {', '.join(_CONV_LAYERS)} (or None: all trainable)")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"{who}: dropout must lie in [0, 1), got {dropout!r}")


def _pooled(size: int, times: int) -> int:
    """Spatial size after `times` 2×2 max-poolings (floor, as VGG's 'valid' pooling)."""
    for _ in range(times):
        size //= 2
    return size


# --- shared pieces ---------------------------------------------------------------------------


def _conv_block(x, block: int, keras, attention=None, enhance_name=None, pool=True):
    """One VGG16 conv group (named blockB_convI), optionally enhanced before pooling."""
    filters, convs = _VGG16_BLOCKS[block - 1]
    for i in range(1, convs + 1):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu",
                                name=f"block{block}_conv{i}")(x)
    if attention is not None:
        enhance_cls, _ = _layer_classes()
        x = enhance_cls(name=enhance_name)([x, attention])
    enhanced = x
    if pool:
        x = keras.layers.MaxPooling2D(2, strides=2, name=f"block{block}_pool")(x)
    return x, enhanced


def _finish(model, weights, trainable_from, who: str, verbose: bool):
    """Load VGG16 weights into the block*_conv* layers; freeze the groups below trainable_from."""
    if isinstance(weights, str) and weights.lower() == "none":
        weights = None
    if weights is not None:
        try:
            from .vgg import load_vgg16_weights
        except ImportError as err:  # pragma: no cover - vgg.py ships with the kit
            raise ImportError(f"{who}: weights={weights!r} needs "
                              f"fer_utils.models.vgg.load_vgg16_weights") from err
        status = load_vgg16_weights(model, weights)
        if verbose and status:
            print(f"{model.name}: {status}")
    if trainable_from is not None:
        frozen = _CONV_LAYERS[:_CONV_LAYERS.index(trainable_from)]
        for name in frozen:
            model.get_layer(name).trainable = False
    return model


def _attention_at(attention, size: tuple, name: str, keras):
    """The attention map resized (area averaging) to a feature map's h×w."""
    return keras.layers.Resizing(size[0], size[1], interpolation="area", name=name)(attention)


def _head(x, num_aus: int, units: int, dropout: float, keras, prefix: str = ""):
    """dense → dropout → one sigmoid per AU (output layer named 'aus')."""
    x = keras.layers.Dense(units, activation="relu", name=f"{prefix}fc")(x)
    x = keras.layers.Dropout(dropout, name=f"{prefix}dropout")(x)
    return keras.layers.Dense(num_aus, activation="sigmoid", name="aus")(x)


def _trunk(input_shape, keras, enhance: bool):
    """VGG16's five conv groups; with `enhance`, attention fused after groups 3 and 4."""
    h, w, _ = input_shape
    image = keras.Input(shape=input_shape, name="image")
    inputs = [image]
    a3 = a4 = None
    if enhance:
        attention = keras.Input(shape=(h, w, 1), name="attention")
        inputs.append(attention)
        a3 = _attention_at(attention, (_pooled(h, 2), _pooled(w, 2)), "attention3", keras)
        a4 = _attention_at(attention, (_pooled(h, 3), _pooled(w, 3)), "attention4", keras)
    # Block 1
    x, _ = _conv_block(image, 1, keras)
    # Block 2
    x, _ = _conv_block(x, 2, keras)
    # Block 3 (enhanced: F + F ⊙ A at 1/4 of the input size)
    x, _ = _conv_block(x, 3, keras, a3, "enhance3")
    # Block 4 (enhanced at 1/8 of the input size; C-Net crops these features)
    x, group4 = _conv_block(x, 4, keras, a4, "enhance4")
    # Block 5
    x, _ = _conv_block(x, 5, keras)
    return inputs, x, group4


# --- builders --------------------------------------------------------------------------------


def plain_vgg_au(input_shape=(96, 96, 3), num_aus: int = 12, weights="imagenet",
                 trainable_from: str | None = "block3_conv1", head_units: int = 256,
                 dropout: float = 0.5, name: str = "plain_vgg_au", verbose: bool = True):
    """The baseline: VGG16 conv groups + global pooling → dense → dropout → sigmoid per AU.

    Args:
        input_shape: (H, W, C) of the images, H and W at least 32.
        num_aus: number of action units (one sigmoid each).
        weights: "imagenet", None / "none" (random init) or a path to VGG16 weights.
        trainable_from: first trainable conv layer; the ones before are frozen
            (default: groups 1-2 frozen, as in EAC-Net). None trains everything.
        head_units: width of the dense layer before the outputs.
        dropout: dropout rate before the outputs.
        name: model name.
        verbose: print the weight-loading status.

    Returns:
        A Keras Model with input "image" and output "aus" (N×num_aus probabilities).
    """
    return _pooled_au_model("plain_vgg_au", False, input_shape, num_aus, weights,
                            trainable_from, head_units, dropout, name, verbose)


def enet(input_shape=(96, 96, 3), num_aus: int = 12, weights="imagenet",
         trainable_from: str | None = "block3_conv1", head_units: int = 256,
         dropout: float = 0.5, name: str = "enet", verbose: bool = True):
    """E-Net: VGG16 whose conv groups 3 and 4 are enhanced by an AU attention map.

    The map (N×H×W×1) is resized (area averaging) to the outputs of conv groups 3 (H/4) and
    4 (H/8) and fused residually, `F' = F + F ⊙ A` (layers "enhance3", "enhance4"): features
    near AU centres are up to doubled, the rest kept. Then group 5, global pooling, dense,
    dropout and one sigmoid per AU.

    Args:
        input_shape: (H, W, C) of the images, H and W at least 32.
        num_aus: number of action units (one sigmoid each).
        weights: "imagenet", None / "none" (random init) or a path to VGG16 weights.
        trainable_from: first trainable conv layer (default: groups 1-2 frozen, as in the
            paper). None trains everything.
        head_units: width of the dense layer before the outputs.
        dropout: dropout rate before the outputs.
        name: model name.
        verbose: print the weight-loading status.

    Returns:
        A Keras Model with inputs ["image", "attention"] and output "aus".
    """
    return _pooled_au_model("enet", True, input_shape, num_aus, weights, trainable_from,
                            head_units, dropout, name, verbose)


def _pooled_au_model(who, enhance, input_shape, num_aus, weights, trainable_from, head_units,
                     dropout, name, verbose):
    """VGG16 trunk (attention-enhanced or not) → global pooling → AU head: plain VGG or E-Net."""
    input_shape = _check_input_shape(input_shape, who)
    _check_common(who, num_aus, trainable_from, dropout)
    keras = _keras()
    inputs, x, _ = _trunk(input_shape, keras, enhance=enhance)
    x = keras.layers.GlobalAveragePooling2D(name="global_pool")(x)
    outputs = _head(x, int(num_aus), head_units, dropout, keras)
    model = keras.Model(inputs, outputs, name=name)
    return _finish(model, weights, trainable_from, who, verbose)


def eacnet(input_shape=(96, 96, 3), num_aus: int = 12, weights="imagenet",
           trainable_from: str | None = "block3_conv1", crop_cells: float | None = None,
           crop_size: int = 3, region_filters: int = 64, region_units: int = 64,
           merge_units: int = 512, dropout: float = 0.5, global_features: bool = True,
           region_layers: str = "batched", name: str = "eacnet", verbose: bool = True):
    """EAC-Net: E-Net plus C-Net, local networks on crops around the 20 AU centres.

    C-Net: from the enhanced group-4 features ("enhance4", H/8 × W/8 × 512) a box of
    `crop_cells` feature cells is cropped around each AU centre and resampled to
    `crop_size`×`crop_size` ("region_crops"); each of the 20 crops has its own small network:
    upscale ×2 → 3×3 conv → flatten → dense (centres 2r and 2r+1 belong to region r of
    `fer_utils.attention.AU_REGIONS`). With `region_layers="separate"` these are 20 branches
    of Keras layers `region{k}_upsample`, `region{k}_conv`, `region{k}_flatten`,
    `region{k}_fc` (easy to read in `summary()`); the default "batched" computes the same
    20 networks in one layer "region_nets" (weights indexed by region), which builds and
    compiles several times faster. The 20
    region features (and, with `global_features`, E-Net's pooled group-5 features) are
    concatenated → dense → dropout → one sigmoid per AU. The paper's sizes are
    `region_filters=512, region_units=150, merge_units=2048` at 224 px; the defaults here are
    smaller so a step trains quickly on a CPU.

    Args:
        input_shape: (H, W, C) of the images, H and W at least 32.
        num_aus: number of action units (one sigmoid each).
        weights: "imagenet", None / "none" (random init) or a path to VGG16 weights.
        trainable_from: first trainable conv layer (default: groups 1-2 frozen).
        crop_cells: crop side in group-4 feature cells; default 3 × (feature size / 28), the
            paper's 3 cells at 224 px, at least 2.
        crop_size: crops are resampled to crop_size × crop_size before the ×2 upscale.
        region_filters: filters of each region's 3×3 conv.
        region_units: units of each region's dense layer.
        merge_units: units of the dense layer after concatenation.
        dropout: dropout rate before the outputs.
        global_features: also feed E-Net's globally pooled group-5 features to the merge.
        region_layers: "batched" (one RegionNets layer) or "separate" (20 Keras branches).
        name: model name.
        verbose: print the weight-loading status.

    Returns:
        A Keras Model with inputs ["image", "attention", "centers"] and output "aus".
    """
    who = "eacnet"
    input_shape = _check_input_shape(input_shape, who)
    _check_common(who, num_aus, trainable_from, dropout)
    for arg, value in (("crop_size", crop_size), ("region_filters", region_filters),
                       ("region_units", region_units), ("merge_units", merge_units)):
        if int(value) != value or value < 1:
            raise ValueError(f"{who}: {arg} must be a positive integer, got {value!r}")
    feature_h = _pooled(input_shape[0], 3)
    if crop_cells is None:
        crop_cells = max(2.0, 3.0 * feature_h / 28.0)
    if not crop_cells > 0:
        raise ValueError(f"{who}: crop_cells must be positive, got {crop_cells!r}")
    if region_layers not in ("batched", "separate"):
        raise ValueError(f"{who}: region_layers={region_layers!r}; allowed: 'batched', "
                         f"'separate'")
    keras = _keras()
    _, crops_cls = _layer_classes()
    inputs, x, group4 = _trunk(input_shape, keras, enhance=True)
    centers = keras.Input(shape=(NUM_CENTERS, 2), name="centers")
    inputs.append(centers)
    # C-Net: one local network per AU centre.
    if region_layers == "batched":
        crops = crops_cls(crop_cells=crop_cells, crop_size=crop_size, num_centers=NUM_CENTERS,
                          stacked=True, name="region_crops")([group4, centers])
        parts = [_CLASSES["RegionNets"](filters=int(region_filters), units=int(region_units),
                                        name="region_nets")(crops)]
        crops = []
    else:
        crops = crops_cls(crop_cells=crop_cells, crop_size=crop_size, num_centers=NUM_CENTERS,
                          name="region_crops")([group4, centers])
        parts = []
    for k, crop in enumerate(crops):
        r = keras.layers.UpSampling2D(2, interpolation="bilinear", name=f"region{k}_upsample")(crop)
        r = keras.layers.Conv2D(int(region_filters), 3, padding="same", activation="relu",
                                name=f"region{k}_conv")(r)
        r = keras.layers.Flatten(name=f"region{k}_flatten")(r)
        parts.append(keras.layers.Dense(int(region_units), activation="relu",
                                        name=f"region{k}_fc")(r))
    if global_features:
        parts.append(keras.layers.GlobalAveragePooling2D(name="global_pool")(x))
    merged = keras.layers.Concatenate(name="cnet_concat")(parts)
    outputs = _head(merged, int(num_aus), int(merge_units), dropout, keras, prefix="merge_")
    model = keras.Model(inputs, outputs, name=name)
    return _finish(model, weights, trainable_from, who, verbose)


# --- losses and training ---------------------------------------------------------------------


def smoothed_bce(y_true, y_pred, smooth: float = 0.05):
    """EAC-Net's smoothed binary cross-entropy, averaged over AUs.

    `-(t·log((o + s)/(1 + s)) + (1 - t)·log((1 + s - o)/(1 + s)))` with s = 0.05: the log never
    sees 0, so a confidently wrong sigmoid gives a bounded loss (at most -log(s/(1+s)) ≈ 3.04).
    """
    import keras.ops as ops

    t = ops.cast(y_true, "float32")
    o = ops.cast(y_pred, "float32")
    loss = -(t * ops.log((o + smooth) / (1.0 + smooth))
             + (1.0 - t) * ops.log((1.0 + smooth - o) / (1.0 + smooth)))
    return ops.mean(loss, axis=-1)


def _loss_class():
    """Build (once) the registered Loss class AUBinaryCrossentropy."""
    if "AUBinaryCrossentropy" in _CLASSES:
        return _CLASSES["AUBinaryCrossentropy"]
    keras = _keras()

    class _AUBinaryCrossentropy(keras.losses.Loss):
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
            import keras.ops as ops

            t = ops.cast(y_true, "float32")
            o = ops.clip(ops.cast(y_pred, "float32"), 1e-7, 1.0 - 1e-7)
            s = self.smooth
            pos = -t * ops.log((o + s) / (1.0 + s))
            neg = -(1.0 - t) * ops.log((1.0 + s - o) / (1.0 + s))
            if self.pos_weight is not None:
                pos = pos * ops.convert_to_tensor(self.pos_weight, "float32")
            return ops.mean(pos + neg, axis=-1)

        def get_config(self):
            return {**super().get_config(), "pos_weight": self.pos_weight, "smooth": self.smooth}

    _AUBinaryCrossentropy.__name__ = _AUBinaryCrossentropy.__qualname__ = "AUBinaryCrossentropy"
    _CLASSES["AUBinaryCrossentropy"] = _register(_AUBinaryCrossentropy)
    return _CLASSES["AUBinaryCrossentropy"]


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
    keras = _keras()
    if optimizer == "adam":
        opt = keras.optimizers.Adam(learning_rate)
    elif optimizer == "sgd":
        opt = keras.optimizers.SGD(learning_rate, momentum=0.9, nesterov=True)
    else:
        raise ValueError(f"compile_au_model: optimizer={optimizer!r}; allowed: 'adam', 'sgd'")
    loss = _loss_class()(pos_weight=pos_weight, smooth=smooth)
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

    keras = _keras()
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
