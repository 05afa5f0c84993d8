"""The kit's own Keras layers (C-Net's crops, local networks and feature normalisation as
the authors of EAC-Net built them; the mirror image of test-time flips).

Each is a top-level class registered for `.keras` saving under the package "fer_utils", so a
saved EAC-Net loads with a plain `keras.models.load_model(path)`.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

__all__ = ["RegionCrops", "RegionNets", "LocalResponseNorm", "HorizontalFlip", "NUM_CENTERS"]

# EAC-Net crops around 20 AU centres (two per region of fer_utils.attention.AU_REGIONS).
NUM_CENTERS = 20


@keras.saving.register_keras_serializable(package="fer_utils")
class RegionCrops(keras.layers.Layer):
    """C-Net's crops: features N×h×w×C and centres N×K×2 (x, y in 0-1) → N×K×s×s×C.

    As in the authors' code (`prep_model_input` in BP4D_EAC_dlib_train.py): the centre's cell
    is `floor(x·w)`, `floor(y·h)`, moved inside so that the s×s block around it fits the map
    (at 28×28 and s = 3: cells 1-26), and the crop is the s×s block of whole cells around it.
    """

    def __init__(self, size: int = 3, **kwargs):
        super().__init__(**kwargs)
        if isinstance(size, bool) or int(size) != size or size < 1 or size % 2 == 0:
            raise ValueError(f"RegionCrops: size must be a positive odd integer, got {size!r}")
        self.size = int(size)

    def _cells(self, centers, n: int):
        """Clipped cell index of every centre along one axis of n cells (centers: N×K)."""
        half = self.size // 2
        cell = tf.cast(tf.floor(tf.cast(centers, tf.float32) * tf.cast(n, tf.float32)), tf.int32)
        return tf.clip_by_value(cell, half, n - 1 - half)

    def call(self, inputs):
        """Gather the s×s block of cells around every centre."""
        features, centers = inputs
        shape = tf.shape(features)
        h, w = shape[1], shape[2]
        steps = tf.range(self.size) - self.size // 2  # -1, 0, 1 for s = 3
        rows = self._cells(centers[..., 1], h)[..., None] + steps  # N×K×s
        cols = self._cells(centers[..., 0], w)[..., None] + steps
        flat = rows[..., :, None] * w + cols[..., None, :]  # N×K×s×s indices into h·w
        cells = tf.reshape(features, (shape[0], h * w, features.shape[-1]))
        return tf.gather(cells, flat, batch_dims=1)  # N×K×s×s×C

    def compute_output_shape(self, input_shape):
        """N×K×s×s×C."""
        features_shape, centers_shape = input_shape
        return (features_shape[0], centers_shape[1], self.size, self.size, features_shape[-1])

    def get_config(self):
        """The layer's arguments, for saving."""
        return {**super().get_config(), "size": self.size}


@keras.saving.register_keras_serializable(package="fer_utils")
class RegionNets(keras.layers.Layer):
    """C-Net's K local networks side by side: N×K×s×s×C crops → N×(K·units).

    Region k has its own weights (`conv_kernel[k]`, `fc_kernel[k]`, ...), as in the authors'
    code: upscale ×2 (each cell copied into a 2×2 block) → 3×3 conv without padding (ReLU; a
    3×3 crop gives 6×6, then 4×4) → flatten → dense (ReLU). The same networks as K branches of
    Keras layers (UpSampling2D, Conv2D(padding="valid"), Flatten, Dense) in one layer, which
    builds and compiles several times faster.
    """

    def __init__(self, filters: int = 512, units: int = 150, **kwargs):
        super().__init__(**kwargs)
        for arg, value in (("filters", filters), ("units", units)):
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"RegionNets: {arg} must be a positive integer, got {value!r}")
        self.filters = int(filters)
        self.units = int(units)

    def build(self, input_shape):
        """One conv kernel and one dense kernel per region (Glorot-uniform, zero biases)."""
        _, k, s, _, c = input_shape
        u = 2 * s - 2  # ×2, then a 3×3 conv without padding
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
        _, k, s, _, _ = crops.shape
        n = tf.shape(crops)[0]
        x = tf.cast(crops, self.compute_dtype)
        x = tf.repeat(tf.repeat(x, 2, axis=2), 2, axis=3)  # N×K×2s×2s×C: each cell a 2×2 block
        outs = []
        for i in range(k):  # one conv + dense per region (oneDNN convs beat batched einsums)
            r = tf.nn.conv2d(x[:, i], self.conv_kernel[i], 1, "VALID") + self.conv_bias[i]
            r = tf.reshape(tf.nn.relu(r), (n, -1))
            outs.append(tf.nn.relu(tf.matmul(r, self.fc_kernel[i]) + self.fc_bias[i]))
        return tf.concat(outs, axis=-1)

    def compute_output_shape(self, input_shape):
        """N × (K·units)."""
        return (input_shape[0], input_shape[1] * self.units)

    def get_config(self):
        """The layer's arguments, for saving."""
        return {**super().get_config(), "filters": self.filters, "units": self.units}


@keras.saving.register_keras_serializable(package="fer_utils")
class LocalResponseNorm(keras.layers.Layer):
    """Local response normalisation across channels: x / (bias + alpha·Σ x²)^beta.

    The sum runs over `2·depth_radius + 1` neighbouring channels (`tf.nn.local_response_
    normalization`); the defaults are the authors' normalisation of E-Net's group-4 features
    before C-Net crops them (Lasagne's LocalResponseNormalization2DLayer(alpha=0.002, k=2,
    beta=0.75, n=5)).
    """

    def __init__(self, depth_radius: int = 2, bias: float = 2.0, alpha: float = 0.002,
                 beta: float = 0.75, **kwargs):
        super().__init__(**kwargs)
        self.depth_radius = int(depth_radius)
        self.bias = float(bias)
        self.alpha = float(alpha)
        self.beta = float(beta)

    def call(self, x):
        """Normalise every feature by its neighbouring channels."""
        return tf.nn.local_response_normalization(
            tf.cast(x, tf.float32), depth_radius=self.depth_radius, bias=self.bias,
            alpha=self.alpha, beta=self.beta)

    def compute_output_shape(self, input_shape):
        """The shape of the features."""
        return input_shape

    def get_config(self):
        """The layer's arguments, for saving."""
        return {**super().get_config(), "depth_radius": self.depth_radius, "bias": self.bias,
                "alpha": self.alpha, "beta": self.beta}


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
