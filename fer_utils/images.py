"""Image arrays and shapes: uint8 (0-255), grey ↔ RGB, a model's input shape: one home each."""

from __future__ import annotations

import numpy as np

__all__ = ["to_uint8", "to_channels", "as_uint8_image", "check_input_shape"]


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Any dtype → uint8 on the 0-255 scale.

    uint16 is rescaled (65535 → 255), bool is 0/255, floats in [0, 1] are scaled by 255, and
    anything else (floats on the 0-255 scale, other integers) is rounded and clipped.
    """
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if image.dtype == bool:
        return image.astype(np.uint8) * 255
    values = np.nan_to_num(image.astype(np.float64))
    if np.issubdtype(image.dtype, np.floating) and values.size and values.max() <= 1.0:
        values = values * 255.0
    return np.clip(values, 0, 255).round().astype(np.uint8)


def to_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """uint8 images (…×H×W×C, or one H×W) → `channels`: 1 (grey, OpenCV's weights) or 3 (RGB)."""
    import cv2

    images = np.asarray(images)
    if images.ndim == 2:
        images = images[..., None]
    if images.shape[-1] == channels:
        return images
    if images.size == 0:
        return np.zeros((*images.shape[:-1], channels), np.uint8)
    if channels == 1:
        flat = images.reshape(-1, images.shape[-2], images.shape[-1])  # rows of RGB pixels
        return cv2.cvtColor(flat, cv2.COLOR_RGB2GRAY).reshape(*images.shape[:-1], 1)
    return np.repeat(images, 3, axis=-1)


def as_uint8_image(image, what: str = "image") -> np.ndarray:
    """A uint8 H×W×C (C 1 or 3; alpha dropped) array, or a ValueError that shows the bad shape."""
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{what} must be a grey H×W(×1) or RGB H×W×3 image, "
                         f"got shape {array.shape}")
    return np.ascontiguousarray(to_uint8(array[..., :3]))


def check_input_shape(input_shape, who: str, min_side: int = 1) -> tuple:
    """(height, width, channels) as ints (channels 1 or 3, sides ≥ min_side), or a ValueError.

    Args:
        input_shape: what a model builder was given.
        who: the builder's name, which starts the error message.
        min_side: the smallest height and width the model accepts (VGG16's five poolings: 32).
    """
    try:
        shape = tuple(int(v) for v in input_shape)
    except (TypeError, ValueError):
        raise ValueError(f"{who}: input_shape must be (height, width, channels), "
                         f"got {input_shape!r}") from None
    if len(shape) != 3 or min(shape[:2]) < min_side or shape[2] not in (1, 3):
        raise ValueError(f"{who}: input_shape must be (height, width, channels) with height and "
                         f"width >= {min_side} and 1 or 3 channels, got {input_shape!r}")
    return shape
