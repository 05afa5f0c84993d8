"""The cached path: frozen, deterministic layers run once per image, not once per step.

When a model starts with frozen layers (e.g. VGG16 blocks 1-4 with pretrained weights) and
nothing upstream of the trainable layers changes from step to step (no augmentation, no
dropout), their output is the same at every epoch: `split_frozen` cuts the model there,
`frozen_features` computes that output once, and the epochs train only the tail on it.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import tensorflow as tf

__all__ = ["split_frozen", "CachePlan", "plan_cache", "frozen_features", "feature_batches"]


_RANDOM_LAYERS = (keras.layers.Dropout, keras.layers.GaussianNoise, keras.layers.GaussianDropout,
                  keras.layers.AlphaDropout, keras.layers.SpatialDropout2D)


def _chain_problem(model, layers) -> str | None:
    """Why `model` is not a single chain of layers (None when it is)."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        return f"model {model.name!r} has several inputs or outputs"
    previous = model.inputs[0]
    for layer in layers:
        try:
            if layer.input is not previous:
                return f"layer {layer.name!r} does not take the previous layer's output"
        except (AttributeError, ValueError):
            return f"layer {layer.name!r} has several inputs"
        previous = layer.output
    return None


def split_frozen(model):
    """Split a chain model at its first trainable layer: (frozen_part, trainable_part).

    `frozen_part` maps the model input to the input of the first trainable layer (None when
    nothing is frozen); `trainable_part` maps those features to the output and SHARES the
    layer objects with `model`, so training it trains `model`. Frozen layers run in
    inference mode, so `trainable_part(frozen_part(x)) == model(x)`.

    Raises:
        ValueError: the model is not a chain of layers, has no trainable layer, or holds a
            random layer (dropout, noise) before the first trainable one; the message says so.
    """
    layers = [layer for layer in model.layers
              if not isinstance(layer, keras.layers.InputLayer)]
    problem = _chain_problem(model, layers)
    if problem:
        raise ValueError(f"{problem}: its frozen part cannot be split off")
    first = next((i for i, layer in enumerate(layers)
                  if layer.trainable and layer.trainable_weights), None)
    if first is None:
        raise ValueError(f"model {model.name!r} has no trainable layer: nothing to train")
    for layer in layers[:first]:
        if isinstance(layer, _RANDOM_LAYERS) or type(layer).__name__.startswith("Random"):
            raise ValueError(f"layer {layer.name!r} before the first trainable layer is random "
                             f"at every step, so its output cannot be computed once")
    if not any(layer.weights for layer in layers[:first]):  # e.g. only the preprocessing
        return None, model
    frozen = keras.Model(model.inputs, layers[first - 1].output, name=f"{model.name}_frozen")
    inputs = keras.Input(shape=tuple(layers[first - 1].output.shape[1:]), name="features")
    x = inputs
    for layer in layers[first:]:
        x = layer(x)
    return frozen, keras.Model(inputs, x, name=f"{model.name}_trainable")


@dataclasses.dataclass
class CachePlan:
    """The chosen path: cached (frozen part + trainable tail) or full, and why."""

    cached: bool
    reason: str
    frozen: object = None
    tail: object = None


def plan_cache(model, train, val, augment: bool, cache, max_cache_mb: float,
               precision: str) -> CachePlan:
    """Choose the cached path when nothing upstream of the trainable layers changes per step."""
    if augment:
        return CachePlan(False, "augmentation changes the images at every step, so every "
                                "layer runs every step")
    if cache is False:
        return CachePlan(False, "cache=False")
    try:
        frozen, tail = split_frozen(model)
    except ValueError as error:
        if cache is True:
            raise
        return CachePlan(False, str(error))
    first = next(layer.name for layer in tail.layers if layer.weights)
    if frozen is None:
        if cache is True:
            raise ValueError(f"cache=True, but nothing of {model.name!r} is frozen")
        return CachePlan(False, f"nothing is frozen ({first} trains), so every layer runs "
                                f"every step")
    images = len(train) + (0 if val is None else len(val))
    per_image = int(np.prod(frozen.output_shape[1:])) * (4 if precision == "fp32" else 2)
    mb = images * per_image / 2**20
    if mb > max_cache_mb:
        if cache is True:
            raise ValueError(f"cache=True, but the frozen part's output takes {mb:,.0f} MB "
                             f"> max_cache_mb={max_cache_mb:,.0f}")
        return CachePlan(False, f"the frozen part's output would take {mb:,.0f} MB, more "
                                f"than max_cache_mb={max_cache_mb:,.0f}")
    last = frozen.layers[-1].name
    return CachePlan(True, f"the layers up to {last} are frozen and deterministic, so they run "
                           f"once per image ({images} images, {mb:,.1f} MB of features); {first} "
                           f"and the layers after it train", frozen, tail)


def frozen_features(frozen, faces, inputs, batch_size: int, dtype, desc: str, verbose: int):
    """Run the frozen part once over the faces, batch by batch: one tensor of features."""
    step = tf.function(lambda x: tf.cast(frozen(x, training=False), dtype),
                       reduce_retracing=True)
    bar = keras.utils.Progbar(len(faces), unit_name="image") if verbose else None
    if bar is not None:
        print(desc, flush=True)
    chunks = []
    for x, _ in inputs.batches(faces, batch_size, shuffle=False, seed=0):
        chunks.append(step(x))
        if bar is not None:
            bar.add(int(chunks[-1].shape[0]))
    return tf.concat(chunks, axis=0)


def feature_batches(features, labels, batch_size: int, shuffle: bool, seed: int):
    """(features, labels) batches, shuffled each epoch like `to_tf_dataset` shuffles faces."""
    n = int(features.shape[0])
    labels = tf.constant(np.asarray(labels, np.int32))
    index = tf.data.Dataset.range(n)
    if shuffle:
        index = index.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    return (index.batch(batch_size)
            .map(lambda i: (tf.gather(features, i), tf.gather(labels, i)))
            .prefetch(tf.data.AUTOTUNE))
