"""Small CNNs built from scratch and the heads for the three task types.

The three task types of the course (notebook 02):

- classification: one softmax over the expressions (`small_cnn`);
- classification + regression: expression (softmax) and its intensity (sigmoid or linear),
  two outputs and two losses (`expression_intensity_model`);
- multi-label: one sigmoid per action unit, several may be on at once (`au_model`).

All three share the same convolutional trunk (`conv_trunk`), so only the head differs.
`SMALL_RECIPE` holds the settings of the small CNN that `python -m fer_utils train` builds, and
`with_flip_tta` wraps a trained classifier so that it averages each face with its mirror image.
"""

from __future__ import annotations

import math

from .preprocess import Preprocess

# The output layers compute in float32 even under a mixed-precision policy (Keras' advice:
# a softmax or sigmoid in float16/bfloat16 loses precision).

__all__ = [
    "SMALL_RECIPE",
    "KERNELS",
    "HEADS",
    "POOLINGS",
    "small_cnn",
    "conv_trunk",
    "classification_head",
    "multilabel_head",
    "regression_head",
    "expression_intensity_model",
    "au_model",
    "with_flip_tta",
    "conv_stack",
    "count_conv_weights",
    "conv_weights_per_channel_pair",
    "receptive_field",
]

# kernel choice -> kernel sizes of the convolutions in one block
KERNELS = {"3x3": (3,), "3x3x2": (3, 3), "5x5": (5,)}
# head choice -> activation of the last Dense layer of `small_cnn`
HEADS = {"softmax": "softmax", "sigmoid": "sigmoid", "logits": None}
# how the last feature maps become one vector: global average / max pooling, or flatten
POOLINGS = ("flatten", "avg", "max")

# The small CNN of `python -m fer_utils train --model small` (issue 12's recipe): four blocks of
# two 3×3 convolutions (no bias) + batch norm + ReLU, each ending in a 2×2 max-pool; flatten;
# dropout 0.3; Dense 256 (no bias) + batch norm + ReLU; dropout 0.3; softmax. About 1.8 M
# weights. With the training half of the recipe (`fer_utils.__main__`: Adam 2e-3, batch 128,
# flips + shifts of up to 4 px, cosine decay to 0 over the time budget) it reaches 64-67 %
# on FER2013's PrivateTest in 30 minutes on 2 CPU cores (figures in README.md).
SMALL_RECIPE = {"filters": (32, 64, 128, 256), "kernel": "3x3x2", "batch_norm": True,
                "feature_dropout": 0.3, "hidden_units": 256, "dropout": 0.3,
                "pooling": "flatten"}


def _check_common(input_shape, filters, kernel, dropout, who: str, pooling: str = "flatten"):
    """Validate the arguments shared by the builders; return (input_shape, filters, sizes)."""
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        raise ValueError(f"{who}: input_shape must be (height, width, channels), "
                         f"got {input_shape!r}") from None
    if len(shape) != 3 or min(shape) < 1 or shape[-1] not in (1, 3):
        raise ValueError(f"{who}: input_shape must be (height, width, channels) with channels "
                         f"1 or 3, got {input_shape!r}")
    if isinstance(filters, int) or not filters:
        raise ValueError(f"{who}: filters must be a non-empty sequence of ints (one per block), "
                         f"got {filters!r}")
    try:
        filters = tuple(int(f) for f in filters)
    except (TypeError, ValueError):
        raise ValueError(f"{who}: filters must be a sequence of ints, got {filters!r}") from None
    if min(filters) < 1:
        raise ValueError(f"{who}: every entry of filters must be >= 1, got {filters!r}")
    if kernel not in KERNELS:
        raise ValueError(f"{who}: kernel={kernel!r} is not supported; allowed: "
                         f"{', '.join(map(repr, KERNELS))}")
    if pooling not in POOLINGS:
        raise ValueError(f"{who}: pooling={pooling!r} is not supported; allowed: "
                         f"{', '.join(map(repr, POOLINGS))}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) \
            or not 0 <= dropout < 1:
        raise ValueError(f"{who}: dropout must be a number in [0, 1), got {dropout!r}")
    # each block halves the size with a 2x2 max-pool: the last block needs at least 1 pixel
    smallest = min(shape[0], shape[1])
    if smallest < 2 ** len(filters):
        raise ValueError(f"{who}: input_shape {shape} is too small for {len(filters)} pooling "
                         f"blocks (needs at least {2 ** len(filters)} pixels per side)")
    return shape, filters, KERNELS[kernel]


def conv_trunk(inputs, filters=(32, 64, 128), kernel: str = "3x3x2", dropout: float = 0.3,
               batch_norm: bool = False, hidden_units: int = 0, prefix: str = "",
               pooling: str = "flatten", feature_dropout: float = 0.0):
    """The shared trunk: conv blocks (each ending in a 2×2 max-pool), flatten, dropout.

    Args:
        inputs: a Keras tensor (B×H×W×C).
        filters: output channels of each block.
        kernel: "3x3x2" (two 3×3 convs per block), "5x5" (one 5×5) or "3x3" (one 3×3).
        dropout: dropout rate on the last features, before the head (0 disables it).
        batch_norm: add a BatchNormalization after every convolution and after the hidden
            Dense layer (those layers then have no bias: the normalisation's shift replaces it).
        hidden_units: size of a Dense ReLU layer after pooling (0: none).
        prefix: prepended to every layer name (to build two trunks in one model).
        pooling: "flatten" (keeps where on the face each feature was found: faces are
            aligned, and a raised brow means something else than a raised lip corner) or
            "avg" / "max" (global pooling: one value per channel, fewer weights).
        feature_dropout: dropout rate on the pooled features, before the hidden Dense layer.

    Returns:
        The feature tensor (B×features).
    """
    from keras import layers

    sizes = KERNELS[kernel]
    x = inputs
    for b, width in enumerate(filters, start=1):
        # Block b: conv(s) of the chosen kernel, then halve the resolution
        for c, size in enumerate(sizes, start=1):
            x = layers.Conv2D(width, size, padding="same", use_bias=not batch_norm,
                              activation=None if batch_norm else "relu",
                              kernel_initializer="he_normal",
                              name=f"{prefix}block{b}_conv{c}")(x)
            if batch_norm:
                x = layers.BatchNormalization(name=f"{prefix}block{b}_bn{c}")(x)
                x = layers.Activation("relu", name=f"{prefix}block{b}_relu{c}")(x)
        x = layers.MaxPooling2D(2, name=f"{prefix}block{b}_pool")(x)
    # Head: turn the feature maps into one vector per image
    if pooling == "flatten":  # keeps *where* a feature is (faces are aligned)
        x = layers.Flatten(name=f"{prefix}flatten")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(name=f"{prefix}global_pool")(x)
    else:
        x = layers.GlobalAveragePooling2D(name=f"{prefix}global_pool")(x)
    if feature_dropout:
        x = layers.Dropout(float(feature_dropout), name=f"{prefix}feature_dropout")(x)
    if hidden_units:
        # Hidden layer: Dense (+ batch norm) + ReLU
        x = layers.Dense(int(hidden_units), use_bias=not batch_norm,
                         activation=None if batch_norm else "relu",
                         kernel_initializer="he_normal" if batch_norm else "glorot_uniform",
                         name=f"{prefix}fc1")(x)
        if batch_norm:
            x = layers.BatchNormalization(name=f"{prefix}fc1_bn")(x)
            x = layers.Activation("relu", name=f"{prefix}fc1_relu")(x)
    if dropout:
        x = layers.Dropout(float(dropout), name=f"{prefix}head_dropout")(x)
    return x


def classification_head(features, num_classes: int, name: str = "predictions",
                        activation: str | None = "softmax"):
    """One Dense layer with a softmax over `num_classes` (or logits with activation=None)."""
    from keras import layers

    return layers.Dense(int(num_classes), activation=activation, name=name,
                        dtype="float32")(features)


def multilabel_head(features, num_labels: int, name: str = "aus"):
    """One independent sigmoid per label (several labels may be on at once)."""
    from keras import layers

    return layers.Dense(int(num_labels), activation="sigmoid", name=name,
                        dtype="float32")(features)


def regression_head(features, name: str = "intensity", activation: str | None = "sigmoid"):
    """One output unit: sigmoid for targets in [0, 1], None (linear) for unbounded ones."""
    from keras import layers

    return layers.Dense(1, activation=activation, name=name,
                        dtype="float32")(features)


def small_cnn(input_shape=(48, 48, 1), num_classes: int = 7, filters=(32, 64, 128),
              kernel: str = "3x3x2", dropout: float = 0.3, head: str = "softmax",
              batch_norm: bool = False, hidden_units: int = 0, pooling: str = "flatten",
              feature_dropout: float = 0.0, name: str = "small_cnn"):
    """A small VGG-style CNN trained from scratch: the course's baseline classifier.

    `small_cnn(**SMALL_RECIPE)` is the recipe of `python -m fer_utils train --model small`.

    Args:
        input_shape: (height, width, channels) of the input, channels 1 or 3; raw pixels 0-255
            (the first layer, "preprocess", scales them to 0-1).
        num_classes: number of outputs (7 expressions by default).
        filters: output channels of each conv block (each block ends in a 2×2 max-pool).
        kernel: "3x3x2" (two 3×3 convs per block), "5x5" (one 5×5 conv per block; same
            receptive field, more weights) or "3x3" (one 3×3 conv per block).
        dropout: dropout rate before the last layer, in [0, 1).
        head: "softmax" (classification), "sigmoid" (multi-label) or "logits" (no activation).
        batch_norm: add BatchNormalization after every convolution (and after the hidden
            Dense layer); those layers then have no bias.
        hidden_units: size of an extra Dense ReLU layer before the head (0: none).
        pooling: "flatten" (keep the spatial layout; learns faster on aligned faces) or
            "avg" / "max" (global pooling: fewer weights, any input size).
        feature_dropout: dropout rate on the pooled features before the hidden Dense layer
            (needs `hidden_units`; `dropout` then acts after the hidden layer).
        name: the model's name.

    Returns:
        A `keras.Model` mapping B×H×W×C images to B×num_classes outputs; its last layer is
        named "predictions".
    """
    who = "small_cnn"
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise ValueError(f"{who}: num_classes must be an int >= 2, got {num_classes!r}")
    if head not in HEADS:
        raise ValueError(f"{who}: head={head!r} is not supported; allowed: "
                         f"{', '.join(map(repr, HEADS))}")
    if isinstance(hidden_units, bool) or not isinstance(hidden_units, int) or hidden_units < 0:
        raise ValueError(f"{who}: hidden_units must be an int >= 0, got {hidden_units!r}")
    if isinstance(feature_dropout, bool) or not isinstance(feature_dropout, (int, float)) \
            or not 0 <= feature_dropout < 1:
        raise ValueError(f"{who}: feature_dropout must be a number in [0, 1), "
                         f"got {feature_dropout!r}")
    if feature_dropout and not hidden_units:
        raise ValueError(f"{who}: feature_dropout={feature_dropout!r} acts before the hidden "
                         f"Dense layer, but hidden_units=0 (use dropout alone, or give "
                         f"hidden_units)")
    shape, filters, _ = _check_common(input_shape, filters, kernel, dropout, who, pooling)
    import keras

    inputs = keras.Input(shape=shape, name="image")
    x = Preprocess("scale", name="preprocess")(inputs)  # raw pixels 0-255 -> 0-1
    x = conv_trunk(x, filters, kernel, dropout, batch_norm, hidden_units, pooling=pooling,
                   feature_dropout=feature_dropout)
    outputs = classification_head(x, num_classes, "predictions", HEADS[head])
    return keras.Model(inputs, outputs, name=name)


def expression_intensity_model(input_shape=(48, 48, 1), num_classes: int = 7,
                               filters=(32, 64, 128), kernel: str = "3x3x2",
                               dropout: float = 0.3, intensity_activation: str | None = "sigmoid",
                               batch_norm: bool = False, pooling: str = "flatten",
                               name: str = "expression_intensity"):
    """Classification + regression: one trunk, two outputs "expression" and "intensity".

    Compile it with two losses, e.g. `loss={"expression": "sparse_categorical_crossentropy",
    "intensity": "mse"}`; `fer_utils.data.to_tf_dataset(target="label+intensity")` yields the
    matching dict targets.

    Args:
        input_shape: (height, width, channels) of the input.
        num_classes: number of expression classes.
        filters: output channels of each conv block.
        kernel: "3x3x2", "5x5" or "3x3" (see `small_cnn`).
        dropout: dropout rate on the shared features.
        intensity_activation: "sigmoid" (intensity in [0, 1]) or None (linear).
        batch_norm: add BatchNormalization after every convolution.
        pooling: "flatten", "avg" or "max" (see `small_cnn`).
        name: the model's name.

    Returns:
        A `keras.Model` with dict outputs {"expression": B×num_classes softmax,
        "intensity": B×1}.
    """
    who = "expression_intensity_model"
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise ValueError(f"{who}: num_classes must be an int >= 2, got {num_classes!r}")
    if intensity_activation not in ("sigmoid", None, "linear", "relu"):
        raise ValueError(f"{who}: intensity_activation must be 'sigmoid', 'relu', 'linear' or "
                         f"None, got {intensity_activation!r}")
    shape, filters, _ = _check_common(input_shape, filters, kernel, dropout, who, pooling)
    import keras

    inputs = keras.Input(shape=shape, name="image")
    x = Preprocess("scale", name="preprocess")(inputs)  # raw pixels 0-255 -> 0-1
    x = conv_trunk(x, filters, kernel, dropout, batch_norm, pooling=pooling)
    outputs = {
        "expression": classification_head(x, num_classes, "expression"),
        "intensity": regression_head(x, "intensity", intensity_activation),
    }
    return keras.Model(inputs, outputs, name=name)


def au_model(input_shape=(48, 48, 1), num_aus: int = 12, filters=(32, 64, 128),
             kernel: str = "3x3x2", dropout: float = 0.3, batch_norm: bool = False,
             pooling: str = "flatten", name: str = "au_model"):
    """Multi-label AU detection: the small trunk with one sigmoid per action unit.

    Compile it with `loss="binary_crossentropy"` and 0/1 targets of shape B×num_aus
    (`to_tf_dataset(target="aus")`).

    Args:
        input_shape: (height, width, channels) of the input.
        num_aus: number of action units (12 BP4D AUs by default).
        filters: output channels of each conv block.
        kernel: "3x3x2", "5x5" or "3x3" (see `small_cnn`).
        dropout: dropout rate on the features.
        batch_norm: add BatchNormalization after every convolution.
        pooling: "flatten", "avg" or "max" (see `small_cnn`).
        name: the model's name.

    Returns:
        A `keras.Model` with one output "aus" of shape B×num_aus (probabilities).
    """
    who = "au_model"
    if not isinstance(num_aus, int) or isinstance(num_aus, bool) or num_aus < 1:
        raise ValueError(f"{who}: num_aus must be an int >= 1, got {num_aus!r}")
    shape, filters, _ = _check_common(input_shape, filters, kernel, dropout, who, pooling)
    import keras

    inputs = keras.Input(shape=shape, name="image")
    x = Preprocess("scale", name="preprocess")(inputs)  # raw pixels 0-255 -> 0-1
    x = conv_trunk(x, filters, kernel, dropout, batch_norm, pooling=pooling)
    outputs = multilabel_head(x, num_aus, "aus")
    return keras.Model(inputs, outputs, name=name)


def with_flip_tta(model, name: str | None = None):
    """Test-time flips: a model that averages `model`'s output on each face and its mirror.

    Expressions are left-right symmetric, so a face and its mirror image should get the same
    answer; averaging the two softmax outputs removes part of the model's noise. The mirror
    is a layer of the returned model (`HorizontalFlip`), so everything that loads the saved
    `.keras` file (predict, export, TFLite) gets the average too.

    Args:
        model: a trained classifier with one image input (B×H×W×C) and one output.
        name: the new model's name (default: "<model name>_flip_tta").

    Returns:
        A `keras.Model` with the same input and output shapes that shares `model`'s weights:
        output = (model(x) + model(mirror(x))) / 2, in float32.
    """
    import keras

    from .layers import HorizontalFlip

    if not isinstance(model, keras.Model) or len(model.inputs) != 1 \
            or len(model.outputs) != 1:
        raise ValueError(f"with_flip_tta: expected a Keras model with one image input and one "
                         f"output, got {getattr(model, 'name', type(model).__name__)!r}")
    shape = tuple(model.input_shape[1:])
    if len(shape) != 3:
        raise ValueError(f"with_flip_tta: the model's input must be H×W×C images, got {shape}")
    inputs = keras.Input(shape=shape, name="image")
    plain = model(inputs)
    mirrored = model(HorizontalFlip(name="mirror")(inputs))
    outputs = keras.layers.Average(name="flip_average", dtype="float32")([plain, mirrored])
    return keras.Model(inputs, outputs, name=name or f"{model.name}_flip_tta")


def conv_stack(kernel: str = "3x3x2", channels: int = 1, input_shape=(48, 48, 1),
               use_bias: bool = False, name: str | None = None):
    """Just the convolutions of one block (`kernel` as in `small_cnn`), `channels` wide.

    Used to compare two 3×3 convolutions with one 5×5: same input, same output size,
    same receptive field, different weight counts.
    """
    if kernel not in KERNELS:
        raise ValueError(f"conv_stack: kernel={kernel!r} is not supported; allowed: "
                         f"{', '.join(map(repr, KERNELS))}")
    if not isinstance(channels, int) or channels < 1:
        raise ValueError(f"conv_stack: channels must be an int >= 1, got {channels!r}")
    import keras
    from keras import layers

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = inputs
    for c, size in enumerate(KERNELS[kernel], start=1):
        x = layers.Conv2D(channels, size, padding="same", use_bias=use_bias,
                          name=f"conv{c}_{size}x{size}")(x)
    return keras.Model(inputs, x, name=name or f"stack_{kernel}")


def _conv_layers(model_or_layers):
    """All Conv2D layers (searched recursively) of a model, a layer or a list of them."""
    from keras import layers

    todo = list(model_or_layers) if isinstance(model_or_layers, (list, tuple)) \
        else [model_or_layers]
    found = []
    while todo:
        item = todo.pop(0)
        if isinstance(item, layers.Conv2D):
            found.append(item)
        elif hasattr(item, "layers"):
            todo[:0] = list(item.layers)
        elif not isinstance(item, layers.Layer):
            raise TypeError(f"count_conv_weights: expected a Keras model or layers, "
                            f"got {type(item).__name__}")
    return found


def count_conv_weights(model_or_layers, include_bias: bool = False, per_layer: bool = False):
    """Count the weights of the Conv2D layers of a model (or a list of layers).

    Args:
        model_or_layers: a Keras model, a layer, or a list of them (searched recursively).
        include_bias: also count the biases.
        per_layer: return {layer name: count} instead of the total.

    Returns:
        The total number of convolution weights (int), or a dict per layer.
    """
    counts = {}
    for layer in _conv_layers(model_or_layers):
        if not layer.built:
            raise ValueError(f"count_conv_weights: layer {layer.name!r} is not built yet; "
                             f"call the model on an input first")
        n = int(math.prod(layer.kernel.shape))
        if include_bias and layer.use_bias:
            n += int(math.prod(layer.bias.shape))
        counts[layer.name] = n
    return counts if per_layer else int(sum(counts.values()))


def conv_weights_per_channel_pair(kernel: str = "3x3x2") -> int:
    """Weights one input channel needs to reach one output channel: 3x3x2 -> 18, 5x5 -> 25."""
    if kernel not in KERNELS:
        raise ValueError(f"conv_weights_per_channel_pair: kernel={kernel!r} is not supported; "
                         f"allowed: {', '.join(map(repr, KERNELS))}")
    return int(sum(k * k for k in KERNELS[kernel]))


def receptive_field(kernel_sizes, strides=None) -> int:
    """Receptive field (pixels per side) of stacked convolutions: [3, 3] -> 5, [5] -> 5.

    Args:
        kernel_sizes: kernel size of each layer, or a kernel name of `KERNELS` ("3x3x2").
        strides: stride of each layer (default 1 everywhere).
    """
    if isinstance(kernel_sizes, str):
        if kernel_sizes not in KERNELS:
            raise ValueError(f"receptive_field: kernel={kernel_sizes!r} is not supported; "
                             f"allowed: {', '.join(map(repr, KERNELS))}")
        kernel_sizes = KERNELS[kernel_sizes]
    kernel_sizes = [int(k) for k in kernel_sizes]
    strides = [1] * len(kernel_sizes) if strides is None else [int(s) for s in strides]
    if len(strides) != len(kernel_sizes):
        raise ValueError(f"receptive_field: {len(kernel_sizes)} kernel sizes but "
                         f"{len(strides)} strides")
    if any(k < 1 for k in kernel_sizes) or any(s < 1 for s in strides):
        raise ValueError(f"receptive_field: sizes and strides must be >= 1, got "
                         f"{kernel_sizes} and {strides}")
    field, jump = 1, 1
    for k, s in zip(kernel_sizes, strides):
        field += (k - 1) * jump
        jump *= s
    return field
