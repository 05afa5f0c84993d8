"""tf.data pipelines: faces stay uint8 in memory and become float one batch at a time."""

from __future__ import annotations

import dataclasses

import numpy as np

from ..faceset import FaceSet
from .normalise import VGG_MEAN_RGB

__all__ = ["TARGETS", "PREPROCESS", "to_tf_dataset", "vgg_preprocess"]

TARGETS = ("label", "onehot", "aus", "label+intensity")
PREPROCESS = ("scale", "vgg", None)


def vgg_preprocess(x):
    """VGG16's input conversion of float RGB 0-255 images (B×H×W×3, or ×1 grey).

    Three channels go through `keras.applications.vgg16.preprocess_input` itself (RGB → BGR,
    minus the ImageNet means, caffe mode). A grey channel has the mean of the three
    subtracted (the grey version of the same centring).
    """
    import keras
    import tensorflow as tf

    x = tf.convert_to_tensor(x, tf.float32)
    if x.shape[-1] == 3:
        return keras.applications.vgg16.preprocess_input(x)
    return x - float(np.mean(VGG_MEAN_RGB))


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What each batch becomes: sizes, channels, preprocessing, target, attention."""

    src: tuple  # (H, W, C) of the stored faces
    height: int
    width: int
    channels: int
    target: str
    preprocess: str | None
    attention: bool
    augment: bool
    num_classes: int


def _check_args(fs, batch_size, target, preprocess, channels, image_size, attention) -> _Plan:
    """Validate to_tf_dataset's arguments (errors echo the bad value) and plan the batches."""
    if not isinstance(fs, FaceSet):
        raise TypeError(f"to_tf_dataset expects a FaceSet, got {type(fs).__name__}")
    if len(fs) == 0:
        raise ValueError("to_tf_dataset: the FaceSet is empty")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"to_tf_dataset: batch_size must be a positive integer, "
                         f"got {batch_size!r}")
    if target not in TARGETS:
        raise ValueError(f"to_tf_dataset: target={target!r} is not one of {TARGETS}")
    if preprocess not in PREPROCESS:
        raise ValueError(f"to_tf_dataset: preprocess={preprocess!r} is not one of {PREPROCESS}")
    channels = fs.image_shape[2] if channels is None else channels
    if channels not in (1, 3):
        raise ValueError(f"to_tf_dataset: channels must be 1 or 3, got {channels!r}")
    if image_size is None:
        height, width = fs.image_shape[:2]
    elif np.isscalar(image_size):
        height = width = int(image_size)
    else:
        height, width = (int(v) for v in image_size)
    if height < 1 or width < 1:
        raise ValueError(f"to_tf_dataset: image_size must be positive, got {image_size!r}")
    if target == "aus" and fs.aus is None:
        raise ValueError("to_tf_dataset: target='aus' needs a FaceSet with AU labels (fs.aus)")
    if target == "label+intensity" and fs.intensity is None:
        raise ValueError("to_tf_dataset: target='label+intensity' needs fs.intensity")
    if attention and fs.landmarks is None:
        raise ValueError("to_tf_dataset: attention=True needs landmarks (fs.landmarks)")
    return _Plan(src=fs.image_shape, height=height, width=width, channels=channels,
                 target=target, preprocess=preprocess, attention=attention, augment=False,
                 num_classes=fs.num_classes)


def _index_dataset(fs: FaceSet, batch_size, shuffle, seed, balanced, repeat, drop_remainder):
    """Batches of face indices: shuffled, balanced across classes, repeated as asked."""
    import tensorflow as tf

    if balanced:
        present = [c for c in range(fs.num_classes) if np.any(fs.labels == c)]
        per_class = []
        for k, c in enumerate(present):
            members = np.flatnonzero(fs.labels == c)
            ds_c = tf.data.Dataset.from_tensor_slices(members).shuffle(
                len(members), seed=None if seed is None else seed + 1 + k,
                reshuffle_each_iteration=True)
            per_class.append(ds_c.repeat())
        # A shuffled round-robin over the classes: every run of K draws holds each class once.
        choice = tf.data.Dataset.range(len(present)).shuffle(
            len(present), seed=seed, reshuffle_each_iteration=True).repeat()
        index = tf.data.Dataset.choose_from_datasets(per_class, choice)
    else:
        index = tf.data.Dataset.range(len(fs))
        if shuffle:
            index = index.shuffle(len(fs), seed=seed, reshuffle_each_iteration=True)
        if repeat:
            index = index.repeat()
    return index.batch(batch_size, drop_remainder=drop_remainder)


def _attention_inputs(landmarks, height: int, width: int):
    """(maps B×H×W×1, centres B×20×2 in [0, 1]) from B×68×2 landmarks (fer_utils.attention)."""
    import tensorflow as tf

    from .. import attention

    maps, centers = attention.tf_attention_inputs(landmarks, height, width)  # runs in tf.data
    maps = tf.reshape(tf.cast(maps, tf.float32), [-1, height, width, 1])
    centers = tf.reshape(tf.cast(centers, tf.float32), [-1, 20, 2])
    return maps, centers


def _images(x, points, plan: _Plan, batch_seed):
    """uint8 faces of a batch → augmented, resized, channel-converted, preprocessed floats."""
    import tensorflow as tf

    src_h, src_w, src_c = plan.src
    x = tf.cast(x, tf.float32)
    if plan.augment:
        from ..augment import tf_random_augment

        x, new_points = tf_random_augment(x, points, seed=batch_seed)
        points = points if new_points is None else new_points
        x = tf.ensure_shape(x, [None, src_h, src_w, src_c])
    if (plan.height, plan.width) != (src_h, src_w):
        x = tf.image.resize(x, (plan.height, plan.width), method="bilinear")
        if points is not None:
            points = points * tf.constant([plan.width / src_w, plan.height / src_h], tf.float32)
    if plan.channels != src_c:
        x = tf.image.grayscale_to_rgb(x) if plan.channels == 3 else tf.image.rgb_to_grayscale(x)
    x = tf.clip_by_value(x, 0.0, 255.0)
    if plan.preprocess == "scale":
        x = x / 255.0
    elif plan.preprocess == "vgg":
        x = vgg_preprocess(x)
    return x, points


def _targets(idx, tensors: dict, plan: _Plan):
    """The y of a batch for `plan.target`."""
    import tensorflow as tf

    y_label = tf.gather(tensors["labels"], idx)
    if plan.target == "label":
        return y_label
    if plan.target == "onehot":
        return tf.one_hot(y_label, plan.num_classes, dtype=tf.float32)
    if plan.target == "aus":
        return tf.gather(tensors["aus"], idx)
    return {"expression": y_label, "intensity": tf.gather(tensors["intensity"], idx)}


def _batch_maker(fs: FaceSet, plan: _Plan):
    """The tf.data map function: a batch of indices (and a seed) → (x, y)."""
    import tensorflow as tf

    tensors = {"images": tf.constant(fs.images),  # the uint8 faces: the only full copy in TF
               "labels": tf.constant(fs.labels.astype(np.int32))}
    if fs.landmarks is not None:
        tensors["landmarks"] = tf.constant(fs.landmarks)
    if fs.aus is not None:
        tensors["aus"] = tf.constant(fs.au_present.astype(np.float32))
    if fs.intensity is not None:
        tensors["intensity"] = tf.constant(fs.intensity)

    def make_batch(idx, batch_seed=None):
        idx = tf.cast(idx, tf.int32)
        points = tf.gather(tensors["landmarks"], idx) if "landmarks" in tensors else None
        x, points = _images(tf.gather(tensors["images"], idx), points, plan, batch_seed)
        if plan.attention:
            maps, centers = _attention_inputs(points, plan.height, plan.width)
            x = {"image": x, "attention": maps, "centers": centers}
        return x, _targets(idx, tensors, plan)

    return make_batch


def to_tf_dataset(fs: FaceSet, batch_size: int = 32, shuffle: bool = True, seed: int | None = None,
                  image_size=None, channels: int | None = None, target: str = "label",
                  augment: bool = False, balanced: bool = False, preprocess: str | None = None,
                  attention: bool = False, repeat: bool = False, drop_remainder: bool = False):
    """A tf.data.Dataset of (x, y) batches that keeps the faces uint8 until each batch is built.

    Args:
        fs: the faces.
        batch_size: faces per batch.
        shuffle: reshuffle the order every epoch.
        seed: seed of shuffling, balanced sampling and augmentation (None: not reproducible).
        image_size: output size (int or (height, width)); default: the set's own size.
        channels: 1 (grey) or 3 (RGB); default: the set's own. A grey set asked for 3 channels
            stays grey in memory and is copied to RGB per batch.
        target: "label" (int32), "onehot" (float32 B×K), "aus" (float32 0/1 B×num_aus) or
            "label+intensity" ({"expression": int32, "intensity": float32}).
        augment: random augmentation per batch via `fer_utils.augment.tf_random_augment`
            (landmarks move with the image).
        balanced: draw every batch evenly across the classes (infinite: give steps_per_epoch).
        preprocess: None (default: raw pixels, float 0-255, what every `fu.models` model
            takes: the model preprocesses them itself), "scale" (0-1) or "vgg"
            (`keras.applications.vgg16.preprocess_input`: RGB → BGR minus the ImageNet means;
            see `vgg_preprocess`), for models without their own preprocessing layer.
        attention: x becomes {"image", "attention" B×H×W×1, "centers" B×20×2 in [0, 1]} from
            the (augmented, resized) landmarks via `fer_utils.attention`.
        repeat: repeat forever (balanced sets always repeat).
        drop_remainder: drop the last, smaller batch.

    Returns:
        tf.data.Dataset of (x, y) batches, prefetched.
    """
    import tensorflow as tf

    plan = _check_args(fs, batch_size, target, preprocess, channels, image_size, attention)
    plan = dataclasses.replace(plan, augment=bool(augment))
    index = _index_dataset(fs, batch_size, shuffle, seed, balanced, repeat, drop_remainder)
    if augment and seed is not None:
        # A fresh stateless seed per batch (and per epoch): reproducible, never repeating.
        batch_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).map(
            lambda r: tf.stack([tf.constant(seed, tf.int64), r]))
        index = tf.data.Dataset.zip(index, batch_seeds)
    # Batches keep their order unless the order is random anyway (unseeded shuffling): an
    # unshuffled set must line up with its labels, e.g. for model.predict.
    random_order = (shuffle or balanced) and seed is None
    ds = index.map(_batch_maker(fs, plan), num_parallel_calls=tf.data.AUTOTUNE,
                   deterministic=not random_order)
    return ds.prefetch(tf.data.AUTOTUNE)
