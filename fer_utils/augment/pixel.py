"""The source's five pixel-level changes (blurs, noise, colour) and the shared input checks."""

from __future__ import annotations

import collections

import numpy as np

# Defaults of the five pixel ops (chosen for 48-96 px faces: visible, but the face stays readable).
MEAN_BLUR_KSIZE = 3
UNSHARP_SIGMA = 1.0
UNSHARP_AMOUNT = 1.0
MOTION_LENGTH = 5
NOISE_SIGMA = 10.0
COLOR_BRIGHTNESS = 12.0
COLOR_CONTRAST = 1.25
COLOR_GAINS = (1.12, 1.0, 0.85)  # R, G, B: a warmer white balance
GREY_GAMMA = 0.8  # grey images: gamma < 1 brightens the shadows

# The 6-pose grid: angle in degrees, shift as a fraction of the image width / height.
# ±10° and ±8 % of the side (≈ 4 px at 48 px, 8 px at 96 px) stay inside what a face detector
# and crop leave over in real data, so the augmented faces look like faces the model will meet.
MAX_ANGLE = 10.0
MAX_SHIFT = 0.08

# cv2.BORDER_REFLECT_101, cv2.BORDER_REPLICATE, cv2.BORDER_CONSTANT
_BORDERS = {"reflect": 4, "replicate": 1, "constant": 0}


# ---------------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------------

def _check_uint8_array(array, name: str, layout: str) -> None:
    """Raise TypeError unless `array` is a NumPy uint8 array (`layout` names its shape)."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{name} must be a NumPy uint8 array {layout}, "
                        f"got {type(array).__name__}")
    if array.dtype != np.uint8:
        raise TypeError(f"{name} must be uint8 (0-255), got dtype {array.dtype}; convert with "
                        f"np.clip(x, 0, 255).astype(np.uint8)")


def _check_image(image, name: str = "image") -> np.ndarray:
    """Return `image` as an ndarray after checking it is a uint8 H×W or H×W×C image."""
    _check_uint8_array(image, name, "H×W or H×W×C")
    if image.ndim not in (2, 3) or min(image.shape[:2]) < 2:
        raise ValueError(f"{name} must be H×W or H×W×C, got shape {image.shape}")
    return image


def _check_batch(images, name: str = "images") -> np.ndarray:
    """Return `images` after checking it is a uint8 N×H×W×C batch."""
    _check_uint8_array(images, name, "N×H×W×C")
    if images.ndim != 4:
        raise ValueError(f"{name} must be N×H×W×C (use images[..., None] for grey N×H×W, or "
                         f"image[None] for one image), got shape {images.shape}")
    if images.shape[-1] not in (1, 3):
        raise ValueError(f"{name} must have 1 (grey) or 3 (RGB) channels, got shape {images.shape}")
    return images


def _check_landmarks(landmarks, n: int | None, name: str = "landmarks") -> np.ndarray:
    """Return landmarks as float32 N×K×2 (or K×2 when n is None) after checking the shape."""
    points = np.asarray(landmarks, dtype=np.float32)
    if n is None:
        if points.ndim != 2 or points.shape[-1] != 2:
            raise ValueError(f"{name} must be K×2 (x, y) points, got shape {points.shape}")
    else:
        if points.ndim != 3 or points.shape[-1] != 2:
            raise ValueError(f"{name} must be N×K×2 (x, y) points (e.g. N×68×2), "
                             f"got shape {points.shape}")
        if len(points) != n:
            raise ValueError(f"{name} has {len(points)} rows but there are {n} images")
    if not np.all(np.isfinite(points)):
        raise ValueError(f"{name} contains NaN or infinite coordinates")
    return points


def _as_rng(rng) -> np.random.Generator:
    """A NumPy Generator from a Generator, an int seed or None (fresh entropy)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng)
    raise TypeError(f"rng must be a numpy.random.Generator, an int seed or None, got {rng!r}")


def _keep_shape(out: np.ndarray, like: np.ndarray) -> np.ndarray:
    """OpenCV drops a trailing channel axis of 1: put it back so shapes round-trip."""
    return out.reshape(like.shape)


# ---------------------------------------------------------------------------------------------
# The five pixel ops
# ---------------------------------------------------------------------------------------------

def mean_blur(image: np.ndarray, ksize: int = MEAN_BLUR_KSIZE) -> np.ndarray:
    """Mean (box) blur: every pixel becomes the average of its ksize×ksize neighbourhood."""
    import cv2

    image = _check_image(image)
    if int(ksize) < 1:
        raise ValueError(f"ksize must be a positive integer, got {ksize!r}")
    return _keep_shape(cv2.blur(image, (int(ksize), int(ksize))), image)


def _gaussian_kernel_1d(sigma: float) -> np.ndarray:
    """The 1-D Gaussian OpenCV's GaussianBlur(ksize=0, sigma) uses for uint8 images."""
    import cv2

    size = int(round(sigma * 3 * 2 + 1)) | 1
    return cv2.getGaussianKernel(size, sigma).astype(np.float32).ravel()


def unsharp(image: np.ndarray, sigma: float = UNSHARP_SIGMA,
            amount: float = UNSHARP_AMOUNT) -> np.ndarray:
    """Unsharp masking (sharpen): image + amount · (image − Gaussian blur of image)."""
    import cv2

    image = _check_image(image)
    if sigma <= 0 or amount < 0:
        raise ValueError(f"unsharp needs sigma > 0 and amount >= 0, got sigma={sigma!r}, "
                         f"amount={amount!r}")
    blurred = cv2.GaussianBlur(image, (0, 0), float(sigma))
    return _keep_shape(cv2.addWeighted(image, 1.0 + amount, blurred, -float(amount), 0.0), image)


def motion_kernel(length: int = MOTION_LENGTH, angle: float = 0.0) -> np.ndarray:
    """A length×length float32 kernel: a normalised line at `angle` degrees (0 = horizontal)."""
    import cv2

    length = int(length)
    if length < 1:
        raise ValueError(f"motion-blur length must be a positive integer, got {length!r}")
    kernel = np.zeros((length, length), np.float32)
    kernel[length // 2, :] = 1.0
    if angle % 180:
        centre = ((length - 1) / 2, (length - 1) / 2)
        rot = cv2.getRotationMatrix2D(centre, float(angle), 1.0)
        kernel = cv2.warpAffine(kernel, rot, (length, length), flags=cv2.INTER_LINEAR)
    return kernel / kernel.sum()


def motion_blur(image: np.ndarray, length: int = MOTION_LENGTH, angle: float = 0.0) -> np.ndarray:
    """Motion blur: average along a line of `length` pixels at `angle` degrees (camera shake)."""
    import cv2

    image = _check_image(image)
    return _keep_shape(cv2.filter2D(image, -1, motion_kernel(length, angle)), image)


def add_noise(image: np.ndarray, sigma: float = NOISE_SIGMA, rng=None) -> np.ndarray:
    """Additive Gaussian noise of standard deviation `sigma` grey levels, clipped to 0-255.

    Args:
        image: uint8 H×W or H×W×C.
        sigma: noise standard deviation in grey levels (0-255 scale).
        rng: a numpy Generator or an int seed (reproducible); None draws fresh entropy.

    Returns:
        The noisy uint8 image, same shape.
    """
    image = _check_image(image)
    if sigma < 0:
        raise ValueError(f"noise sigma must be >= 0, got {sigma!r}")
    noise = _as_rng(rng).standard_normal(image.shape, dtype=np.float32)
    noisy = image.astype(np.float32) + np.float32(sigma) * noise
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def color_lut(channels: int, brightness: float = COLOR_BRIGHTNESS,
              contrast: float = COLOR_CONTRAST, gains=COLOR_GAINS,
              gamma: float | None = None) -> np.ndarray:
    """The 256-entry look-up table(s) of `color_shift`: uint8 256 (grey) or 256×C (colour)."""
    levels = np.arange(256, dtype=np.float32) / 255.0
    if gamma is None:
        gamma = GREY_GAMMA if channels == 1 else 1.0
    if gamma <= 0 or contrast < 0:
        raise ValueError(f"color_shift needs gamma > 0 and contrast >= 0, got gamma={gamma!r}, "
                         f"contrast={contrast!r}")
    base = 255.0 * levels ** float(gamma)
    base = (base - 127.5) * float(contrast) + 127.5 + float(brightness)
    if channels == 1:
        return np.clip(np.rint(base), 0, 255).astype(np.uint8)
    gains = np.asarray(gains, dtype=np.float32).ravel()
    if gains.size not in (1, channels):
        raise ValueError(f"color_shift gains must have 1 or {channels} values (one per channel), "
                         f"got {gains.size}")
    gains = np.broadcast_to(gains, (channels,))
    return np.clip(np.rint(base[:, None] * gains[None, :]), 0, 255).astype(np.uint8)


def color_shift(image: np.ndarray, brightness: float = COLOR_BRIGHTNESS,
                contrast: float = COLOR_CONTRAST, gains=COLOR_GAINS,
                gamma: float | None = None) -> np.ndarray:
    """Colour change: brightness + contrast (about mid-grey), per-channel gains, gamma.

    Colour images get a white-balance shift (`gains` per channel, RGB order); grey images get a
    brightness/contrast/gamma change (`gamma` defaults to 0.8 for grey, 1.0 for colour).
    Implemented as a look-up table (cv2.LUT), so it costs one memory pass.
    """
    import cv2

    image = _check_image(image)
    channels = 1 if image.ndim == 2 else image.shape[-1]
    lut = color_lut(channels, brightness, contrast, gains, gamma)
    if channels == 1:
        return _keep_shape(cv2.LUT(image, lut), image)
    if channels <= 4:
        return cv2.LUT(image, lut.reshape(1, 256, channels))
    return np.stack([cv2.LUT(np.ascontiguousarray(image[..., c]), lut[:, c])
                     for c in range(channels)], axis=-1)


PIXEL_OPS = collections.OrderedDict([
    ("mean_blur", mean_blur),
    ("unsharp", unsharp),
    ("motion_blur", motion_blur),
    ("noise", add_noise),
    ("color", color_shift),
])
VARIANTS_PER_IMAGE = 30


# ---------------------------------------------------------------------------------------------
# Poses: explicit [R | T] affine matrices
# ---------------------------------------------------------------------------------------------
