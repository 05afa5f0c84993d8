"""The kit's own Keras layers (E-Net's attention fusion, C-Net's crops and local networks,
the mirror image of test-time flips).

Each is a top-level class registered for `.keras` saving under the package "fer_utils", so a
saved E-Net or EAC-Net loads with a plain `keras.models.load_model(path)`.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

__all__ = ["AttentionEnhance", "RegionCrops", "RegionNets", "HorizontalFlip", "NUM_CENTERS"]

# EAC-Net crops around 20 AU centres (two per region of fer_utils.attention.AU_REGIONS).
NUM_CENTERS = 20


@keras.saving.register_keras_serializable(package="fer_utils")
class AttentionEnhance(keras.layers.Layer):
    """E-Net fusion: features F (N×h×w×C) and a map A (N×h×w×1) → F + F ⊙ A.

    With `residual=False` the layer computes F ⊙ A alone (the ablation without the residual
    path: features far from every AU centre are switched off).
    """

    def __init__(self, residual: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.residual = bool(residual)

    def call(self, inputs):
        """F + F ⊙ A (or F ⊙ A without the residual path)."""
        features, attention = inputs
        attention = keras.ops.cast(attention, features.dtype)
        enhanced = features * attention
        return features + enhanced if self.residual else enhanced

    def compute_output_shape(self, input_shape):
        """The shape of the features."""
        return input_shape[0]

    def get_config(self):
        """The layer's arguments, for saving."""
        return {**super().get_config(), "residual": self.residual}


@keras.saving.register_keras_serializable(package="fer_utils")
class RegionCrops(keras.layers.Layer):
    """C-Net crops: features N×h×w×C and centres N×K×2 (x, y, 0-1) → K tensors N×s×s×C.

    Each crop is a box of `crop_cells`×`crop_cells` feature cells centred on the AU centre,
    resampled bilinearly to `crop_size`×`crop_size` (tf.image.crop_and_resize), so the same
    layer works at 224 px (28×28 features, 3-cell crops as in the paper) and at 48 px (6×6
    features). Parts of a box outside the feature map read as 0. With `stacked=True` the
    output is one N×K×s×s×C tensor instead of K tensors.
    """

    def __init__(self, crop_cells: float = 3.0, crop_size: int = 3,
                 num_centers: int = NUM_CENTERS, stacked: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.crop_cells = float(crop_cells)
        self.crop_size = int(crop_size)
        self.num_centers = int(num_centers)
        self.stacked = bool(stacked)

    def _boxes(self, centers, height, width):
        """(y1, x1, y2, x2) boxes in crop_and_resize's normalised coordinates, one per centre."""
        c = tf.reshape(tf.cast(centers, tf.float32), (-1, 2))  # (N·K)×2, x y in 0-1
        # Feature-cell coordinates (cell centres at integers). The crop covers crop_cells
        # cells around the centre; its crop_size samples sit at the centres of equal
        # sub-cells (crop_cells = crop_size = 3: exactly cells f-1, f, f+1).
        fx = c[:, 0] * width - 0.5
        fy = c[:, 1] * height - 0.5
        half = self.crop_cells / 2.0 - 0.5 * self.crop_cells / self.crop_size
        span_y, span_x = tf.maximum(height - 1.0, 1.0), tf.maximum(width - 1.0, 1.0)
        return tf.stack([(fy - half) / span_y, (fx - half) / span_x,
                         (fy + half) / span_y, (fx + half) / span_x], axis=1)

    def call(self, inputs):
        """Crop every centre's box out of the features."""
        features, centers = inputs
        shape = tf.shape(features)
        n = shape[0]
        height, width = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
        k, s, channels = self.num_centers, self.crop_size, features.shape[-1]
        box_indices = tf.repeat(tf.range(n), k)
        crops = tf.image.crop_and_resize(tf.cast(features, tf.float32),
                                         self._boxes(centers, height, width), box_indices,
                                         (s, s), extrapolation_value=0.0)
        crops = tf.cast(tf.reshape(crops, (n, k, s, s, shape[3])), features.dtype)
        if self.stacked:
            crops.set_shape((None, k, s, s, channels))
            return crops
        out = []
        for i in range(k):
            crop = crops[:, i]
            crop.set_shape((None, s, s, channels))
            out.append(crop)
        return out

    def compute_output_shape(self, input_shape):
        """K shapes N×s×s×C (or one N×K×s×s×C when stacked)."""
        features_shape = input_shape[0]
        one = (features_shape[0], self.crop_size, self.crop_size, features_shape[-1])
        if self.stacked:
            return (features_shape[0], self.num_centers) + one[1:]
        return [one] * self.num_centers

    def get_config(self):
        """The layer's arguments, for saving."""
        return {**super().get_config(), "crop_cells": self.crop_cells,
                "crop_size": self.crop_size, "num_centers": self.num_centers,
                "stacked": self.stacked}


@keras.saving.register_keras_serializable(package="fer_utils")
class RegionNets(keras.layers.Layer):
    """C-Net's K local networks side by side: N×K×s×s×C crops → N×(K·units).

    Region k has its own weights (`conv_kernel[k]`, `fc_kernel[k]`, ...): upscale ×`upsample`
    (bilinear) → 3×3 conv ('same', ReLU) → flatten → dense (ReLU). The same networks as K
    separate branches of Keras layers (`eacnet(..., region_layers="separate")`), in one
    layer, which builds and compiles several times faster.
    """

    def __init__(self, filters: int = 64, units: int = 64, upsample: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.units = int(units)
        self.upsample = int(upsample)

    def build(self, input_shape):
        """One conv kernel and one dense kernel per region (Glorot-uniform, zero biases)."""
        _, k, s, _, c = input_shape
        u = s * self.upsample
        f, units = self.filters, self.units
        lim_conv = float(np.sqrt(6.0 / (9 * c + 9 * f)))
        lim_fc = float(np.sqrt(6.0 / (u * u * f + units)))
        uniform = keras.initializers.RandomUniform
        self.conv_kernel = self.add_weight(name="conv_kernel", shape=(k, 3, 3, c, f),
                                           initializer=uniform(-lim_conv, lim_conv))
        self.conv_bias = self.add_weight(name="conv_bias", shape=(k, f), initializer="zeros")
        self.fc_kernel = self.add_weight(name="fc_kernel", shape=(k, u * u * f, units),
                                         initializer=uniform(-lim_fc, lim_fc))
        self.fc_bias = self.add_weight(name="fc_bias", shape=(k, units), initializer="zeros")

    def call(self, crops):
        """Run region k's network on crop k, for every k; concatenate the K outputs."""
        _, k, s, _, c = crops.shape
        u = s * self.upsample
        n = tf.shape(crops)[0]
        x = tf.image.resize(tf.reshape(crops, (-1, s, s, c)), (u, u), method="bilinear")
        x = tf.cast(tf.reshape(x, (n, k, u, u, c)), self.compute_dtype)
        outs = []
        for i in range(k):  # one conv + dense per region (oneDNN convs beat batched einsums)
            r = tf.nn.conv2d(x[:, i], self.conv_kernel[i], 1, "SAME") + self.conv_bias[i]
            r = tf.reshape(tf.nn.relu(r), (n, u * u * self.filters))
            outs.append(tf.nn.relu(tf.matmul(r, self.fc_kernel[i]) + self.fc_bias[i]))
        return tf.concat(outs, axis=-1)

    def compute_output_shape(self, input_shape):
        """N × (K·units)."""
        return (input_shape[0], input_shape[1] * self.units)

    def get_config(self):
        """The layer's arguments, for saving."""
        return {**super().get_config(), "filters": self.filters, "units": self.units,
                "upsample": self.upsample}


@keras.saving.register_keras_serializable(package="fer_utils")
class HorizontalFlip(keras.layers.Layer):
    """Mirror images left to right (B×H×W×C → B×H×W×C), in training and at inference.

    Unlike `keras.layers.RandomFlip`, it always flips: the second pass of test-time flips
    (`fer_utils.models.with_flip_tta`) sees every face mirrored.
    """

    def call(self, images):
        """The images with their columns in reverse order."""
        return keras.ops.flip(images, axis=-2)

    def compute_output_shape(self, input_shape):
        """The shape of the images."""
        return input_shape
