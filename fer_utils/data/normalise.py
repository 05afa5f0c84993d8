"""Normalisation helpers: mean image, per-channel mean, 0-1 scaling, mean subtraction, resizing."""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["VGG_MEAN_RGB", "mean_image", "channel_mean", "scale_01", "subtract_mean",
           "resize_images"]

# The ImageNet channel means (R, G, B) that keras.applications.vgg16.preprocess_input subtracts
# (caffe mode, after flipping RGB to BGR). The kit's only copy of these numbers.
VGG_MEAN_RGB = (123.68, 116.779, 103.939)


def mean_image(images, batch: int = 4096) -> np.ndarray:
    """The mean face: float32 H×W×C average over N images (computed in chunks, no big copy)."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if len(images) == 0:
        raise ValueError("mean_image needs at least one image, got an empty array")
    total = np.zeros(images.shape[1:], dtype=np.float64)
    for start in range(0, len(images), batch):
        total += images[start:start + batch].sum(axis=0, dtype=np.float64)
    return (total / len(images)).astype(np.float32)


def channel_mean(images) -> np.ndarray:
    """Per-channel mean: float32 array of C values (one number per colour channel)."""
    mean = mean_image(images)
    return mean.reshape(-1, mean.shape[-1]).mean(axis=0)


def scale_01(images) -> np.ndarray:
    """uint8 0..255 → float32 0..1."""
    return np.asarray(images, dtype=np.float32) / 255.0


def subtract_mean(images, mean="channel") -> np.ndarray:
    """Zero-centre images: float32 images minus a mean.

    Args:
        images: N×H×W×C (or one H×W×C) uint8/float images on the 0-255 scale.
        mean: "channel" (this set's per-channel mean), "image" (this set's mean face), "vgg"
            (ImageNet's RGB means, as VGG16 was trained; the channel order stays RGB, unlike
            `to_tf_dataset(preprocess="vgg")` which also flips to BGR; grey images use the
            average of the three), or an array broadcastable to the images (a mean image or
            per-channel means).

    Returns:
        float32 array of the images' shape.
    """
    x = np.asarray(images, dtype=np.float32)
    if isinstance(mean, str):
        if mean == "channel":
            mean = channel_mean(x)
        elif mean == "image":
            mean = mean_image(x if x.ndim == 4 else x[None])
        elif mean == "vgg":
            mean = np.array(VGG_MEAN_RGB, np.float32)
            if x.shape[-1] == 1:
                mean = mean.mean(keepdims=True)
        else:
            raise ValueError(f"subtract_mean: mean={mean!r} is not one of 'channel', 'image', "
                             f"'vgg' or an array")
    return x - np.asarray(mean, dtype=np.float32)


def resize_images(images, size, interpolation=None) -> np.ndarray:
    """Resize a batch N×H×W[×C] of images to size×size or (height, width), keeping dtype and C."""
    images = np.asarray(images)
    squeeze = images.ndim == 3
    if squeeze:
        images = images[..., None]
    if images.ndim != 4:
        raise ValueError(f"resize_images expects N×H×W or N×H×W×C images, got shape "
                         f"{images.shape}")
    height, width = (int(size), int(size)) if np.isscalar(size) else tuple(int(s) for s in size)
    if height < 1 or width < 1:
        raise ValueError(f"resize_images: size must be positive, got {size!r}")
    if images.shape[1:3] == (height, width):
        out = images.copy()
    else:
        if interpolation is None:
            interpolation = cv2.INTER_AREA if height < images.shape[1] else cv2.INTER_LINEAR
        out = np.empty((len(images), height, width, images.shape[-1]), dtype=images.dtype)
        for i, image in enumerate(images):
            out[i] = cv2.resize(image, (width, height),
                                interpolation=interpolation).reshape(height, width, -1)
    return out[..., 0] if squeeze else out
