"""Pose changes as 2×3 affine matrices, crops, the 30× expansion and one random variant."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .pixel import (_BORDERS, MAX_ANGLE, MAX_SHIFT, MEAN_BLUR_KSIZE, NOISE_SIGMA, PIXEL_OPS,
                    UNSHARP_AMOUNT, UNSHARP_SIGMA, VARIANTS_PER_IMAGE, _as_rng, _check_batch,
                    _check_image, _check_landmarks, add_noise, color_lut, color_shift,
                    motion_kernel)

class Pose(NamedTuple):
    """One pose of the grid: rotation in degrees, shift as a fraction of width and height."""

    name: str
    angle: float
    shift_x: float
    shift_y: float

    def matrix(self, height: int, width: int) -> np.ndarray:
        """The 2×3 float32 [R | T] matrix of this pose for an image of height×width pixels."""
        return affine_matrix(self.angle, self.shift_x * width, self.shift_y * height,
                             center=((width - 1) / 2.0, (height - 1) / 2.0))


POSES = (
    Pose("identity", 0.0, 0.0, 0.0),
    Pose("rotate +10°", MAX_ANGLE, 0.0, 0.0),
    Pose("rotate -10°", -MAX_ANGLE, 0.0, 0.0),
    Pose("shift right-down", 0.0, MAX_SHIFT, MAX_SHIFT / 2),
    Pose("shift left-up", 0.0, -MAX_SHIFT, -MAX_SHIFT / 2),
    Pose("rotate -6° + shift", -6.0, MAX_SHIFT * 0.75, -MAX_SHIFT / 2),
)


def affine_matrix(angle: float, tx: float = 0.0, ty: float = 0.0, scale: float = 1.0,
                  center=None) -> np.ndarray:
    """Build the 2×3 affine matrix M = [R | T] that maps a point p to R @ p + T.

    Args:
        angle: rotation in degrees; positive turns counter-clockwise as displayed (y down).
        tx, ty: translation in pixels (x right, y down), applied after the rotation.
        scale: zoom factor (R = scale · rotation).
        center: (cx, cy) point the rotation turns about; None: the origin (0, 0). Use the
            image centre ((W-1)/2, (H-1)/2) to turn a face in place.

    Returns:
        float32 2×3 array [[r00, r01, t0], [r10, r11, t1]]; T = (I - R)·c + (tx, ty).
    """
    values = dict(angle=angle, tx=tx, ty=ty, scale=scale)
    for key, value in values.items():
        if not isinstance(value, (int, float, np.integer, np.floating)) or not math.isfinite(value):
            raise ValueError(f"affine_matrix: {key} must be a finite number, got {value!r}")
    if scale <= 0:
        raise ValueError(f"affine_matrix: scale must be > 0, got {scale!r}")
    theta = math.radians(angle)
    a, b = scale * math.cos(theta), scale * math.sin(theta)
    rot = np.array([[a, b], [-b, a]], dtype=np.float64)
    if center is None:
        c = np.zeros(2)
    else:
        c = np.asarray(center, dtype=np.float64).ravel()
        if c.shape != (2,) or not np.all(np.isfinite(c)):
            raise ValueError(f"affine_matrix: center must be (cx, cy), got {center!r}")
    shift = (np.eye(2) - rot) @ c + np.array([tx, ty], dtype=np.float64)
    return np.hstack([rot, shift[:, None]]).astype(np.float32)


def pose_matrices(height: int, width: int, poses=POSES) -> np.ndarray:
    """The matrices of a pose grid for height×width images: float32 P×2×3."""
    if int(height) < 2 or int(width) < 2:
        raise ValueError(f"image size must be at least 2×2, got {height}×{width}")
    return np.stack([Pose(*p).matrix(int(height), int(width)) for p in poses])


def _check_matrix(M) -> np.ndarray:
    """Return M as float64 2×3 after checking its shape."""
    M = np.asarray(M, dtype=np.float64)
    if M.shape != (2, 3) or not np.all(np.isfinite(M)):
        raise ValueError(f"the affine matrix must be a finite 2×3 [R | T] array, "
                         f"got shape {M.shape}")
    return M


def apply_affine(image: np.ndarray, M, border: str = "reflect", size=None) -> np.ndarray:
    """Warp an image with the 2×3 matrix M (bilinear).

    Args:
        image: uint8 H×W or H×W×C.
        M: 2×3 [R | T] matrix mapping input pixel coordinates to output coordinates.
        border: how to fill pixels that come from outside: "reflect", "replicate" or "constant".
        size: output (width, height); default: the input's size.

    Returns:
        The warped uint8 image (same number of channels).
    """
    import cv2

    image = _check_image(image)
    M = _check_matrix(M)
    if border not in _BORDERS:
        raise ValueError(f"border must be one of {sorted(_BORDERS)}, got {border!r}")
    h, w = image.shape[:2]
    if size is not None:
        w, h = (int(v) for v in size)
        if w < 1 or h < 1:
            raise ValueError(f"size must be a positive (width, height), got {size!r}")
    channels = 1 if image.ndim == 2 else image.shape[-1]
    if channels in (1, 3, 4):
        out = cv2.warpAffine(image, M, (w, h), flags=cv2.INTER_LINEAR, borderMode=_BORDERS[border])
        return out.reshape((h, w) + image.shape[2:])
    # OpenCV's exact fixed-point path serves 1, 3 and 4 channels: warp other counts per channel.
    return np.stack([cv2.warpAffine(np.ascontiguousarray(image[..., c]), M, (w, h),
                                    flags=cv2.INTER_LINEAR, borderMode=_BORDERS[border])
                     for c in range(channels)], axis=-1)


def crop_matrix(box, size) -> np.ndarray:
    """The 2×3 [R | T] matrix that maps the crop box (x, y, w, h) onto a size×size image.

    A crop is an affine map too: R = s·I with s = size / w (zoom) and T moves the box's corner
    to the origin, T = s·(0.5 - x) - 0.5 (pixel centres at integers).
    """
    x, y, w, h = (float(v) for v in box)
    if w <= 0 or h <= 0 or int(size) < 1:
        raise ValueError(f"crop box (x, y, w, h) needs w, h > 0 and size >= 1, "
                         f"got {box!r}, {size!r}")
    sx, sy = int(size) / w, int(size) / h
    return np.array([[sx, 0.0, sx * (0.5 - x) - 0.5], [0.0, sy, sy * (0.5 - y) - 0.5]], np.float32)


def crop(image: np.ndarray, box, size: int | None = None, landmarks=None):
    """Cut the box (x, y, w, h) out of an image and resize it to size×size (default: w).

    Args:
        image: uint8 H×W or H×W×C.
        box: (x, y, w, h) in pixels, inside the image.
        size: output side in pixels; default: the box width (no resize).
        landmarks: optional K×2 (x, y) points, moved into the crop's coordinates.

    Returns:
        The uint8 crop, or (crop, float32 landmarks) when landmarks are given.
    """
    image = _check_image(image)
    x, y, w, h = (int(round(float(v))) for v in box)
    if x < 0 or y < 0 or w < 1 or h < 1 or x + w > image.shape[1] or y + h > image.shape[0]:
        raise ValueError(f"crop box (x={x}, y={y}, w={w}, h={h}) must lie inside the "
                         f"{image.shape[1]}×{image.shape[0]} image")
    size = w if size is None else int(size)
    M = crop_matrix((x, y, w, h), size)
    out = apply_affine(image, M, border="replicate", size=(size, round(size * h / w)))
    if landmarks is None:
        return out
    return out, transform_landmarks(_check_landmarks(landmarks, None), M)


def random_crops(image: np.ndarray, count: int = 5, fraction: float = 0.85, landmarks=None,
                 rng=None, size: int | None = None):
    """`count` random square crops covering `fraction` of the side, resized back to the image size.

    Returns:
        uint8 count×H×W[×C] crops, or (crops, count×K×2 landmarks) when landmarks are given.
    """
    image = _check_image(image)
    if not 0 < fraction <= 1 or int(count) < 1:
        raise ValueError(f"random_crops needs 0 < fraction <= 1 and count >= 1, got "
                         f"fraction={fraction!r}, count={count!r}")
    rng = _as_rng(rng)
    h, w = image.shape[:2]
    side = max(1, int(round(min(h, w) * fraction)))
    size = w if size is None else int(size)
    crops, points = [], []
    for _ in range(int(count)):
        x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        result = crop(image, (x, y, side, side), size, landmarks)
        crops.append(result if landmarks is None else result[0])
        if landmarks is not None:
            points.append(result[1])
    return np.stack(crops) if landmarks is None else (np.stack(crops), np.stack(points))


def transform_landmarks(landmarks, M) -> np.ndarray:
    """Move (x, y) points with the same 2×3 matrix that warps the image: p' = R @ p + T.

    Args:
        landmarks: K×2 or N×K×2 (x, y) pixel coordinates.
        M: 2×3 matrix, or N×2×3 (one per row of an N×K×2 input).

    Returns:
        float32 array of the input's shape.
    """
    points = np.asarray(landmarks, dtype=np.float64)
    if points.ndim not in (2, 3) or points.shape[-1] != 2:
        raise ValueError(f"landmarks must be K×2 or N×K×2 (x, y) points, "
                         f"got shape {points.shape}")
    M = np.asarray(M, dtype=np.float64)
    if M.shape == (2, 3):
        return (points @ M[:, :2].T + M[:, 2]).astype(np.float32)
    if M.ndim == 3 and M.shape[1:] == (2, 3) and points.ndim == 3 and len(M) == len(points):
        moved = np.einsum("nkj,nij->nki", points, M[:, :, :2]) + M[:, None, :, 2]
        return moved.astype(np.float32)
    raise ValueError(f"M must be 2×3 (or N×2×3 matching N×K×2 landmarks), got M {M.shape} "
                     f"for landmarks {points.shape}")


# ---------------------------------------------------------------------------------------------
# Offline 30× expansion
# ---------------------------------------------------------------------------------------------

def expand_30x(images: np.ndarray, landmarks=None, seed: int = 0, border: str = "reflect",
               progress: bool = False):
    """Expand every image 30×: the 5 pixel ops (PIXEL_OPS) × the 6 poses (POSES).

    Each pixel op is computed once per image; each of its outputs is then warped by the 5
    non-identity poses (pose 0, the identity, is a plain copy). Output order: for each input
    image, for each pixel op, for each pose, i.e. row `i * 30 + op * 6 + pose`.

    Args:
        images: uint8 N×H×W×C.
        landmarks: optional N×K×2 (x, y) points (e.g. 68 dlib landmarks), moved by exactly the
            matrices that warp the pixels.
        seed: seed of the noise op (the noise of image i is the i-th draw of one Generator).
        border: border mode of the warps ("reflect", "replicate", "constant").
        progress: show a tqdm bar over the images.

    Returns:
        uint8 (N·30)×H×W×C images, or (images, float32 (N·30)×K×2 landmarks) when landmarks
        are given. Repeat labels with `np.repeat(labels, 30)`.
    """
    import cv2

    images = _check_batch(images)
    n, h, w, c = images.shape
    if n == 0:
        raise ValueError(f"images is an empty batch, got shape {images.shape}")
    points = None if landmarks is None else _check_landmarks(landmarks, n)
    if border not in _BORDERS:
        raise ValueError(f"border must be one of {sorted(_BORDERS)}, got {border!r}")
    n_ops, n_poses = len(PIXEL_OPS), len(POSES)
    matrices = pose_matrices(h, w)
    out = np.empty((n, n_ops, n_poses, h, w, c), dtype=np.uint8)
    rng = np.random.default_rng(seed)
    lut = color_lut(c).reshape(1, 256, c) if c > 1 else color_lut(1)
    # Colour is a LUT: one call for the whole batch, written straight into pose 0.
    flat = images.reshape(n * h, w, c) if c > 1 else images.reshape(n * h, w)
    out[:, 4, 0] = cv2.LUT(flat, lut).reshape(n, h, w, c)
    kernel = motion_kernel()
    flags, mode = cv2.INTER_LINEAR, _BORDERS[border]
    rows = range(n)
    if progress:
        from tqdm.auto import tqdm

        rows = tqdm(rows, desc="expand 30x", unit="img")
    for i in rows:
        image = images[i] if c > 1 else images[i, :, :, 0]
        variants = out[i, :, 0] if c > 1 else out[i, :, 0, :, :, 0]  # views: pose 0 of each op
        cv2.blur(image, (MEAN_BLUR_KSIZE, MEAN_BLUR_KSIZE), dst=variants[0])
        blurred = cv2.GaussianBlur(image, (0, 0), UNSHARP_SIGMA)
        cv2.addWeighted(image, 1.0 + UNSHARP_AMOUNT, blurred, -UNSHARP_AMOUNT, 0.0, dst=variants[1])
        cv2.filter2D(image, -1, kernel, dst=variants[2])
        noise = rng.standard_normal(images.shape[1:], dtype=np.float32)
        noisy = images[i].astype(np.float32) + np.float32(NOISE_SIGMA) * noise
        np.clip(np.rint(noisy), 0, 255, out=noisy)
        out[i, 3, 0] = noisy
        targets = out[i] if c > 1 else out[i, :, :, :, :, 0]
        for op in range(n_ops):
            source = targets[op, 0]
            for p in range(1, n_poses):
                cv2.warpAffine(source, matrices[p], (w, h), dst=targets[op, p], flags=flags,
                               borderMode=mode)
    out = out.reshape(n * n_ops * n_poses, h, w, c)
    if points is None:
        return out
    rotations = matrices[:, :, :2].astype(np.float64)
    moved = np.einsum("nkj,pij->npki", points.astype(np.float64), rotations)
    moved += matrices[None, :, None, :, 2]
    moved = np.broadcast_to(moved[:, None], (n, n_ops, n_poses) + points.shape[1:])
    return out, moved.reshape(n * n_ops * n_poses, *points.shape[1:]).astype(np.float32)


def expand_faceset(faces, seed: int = 0, progress: bool = True):
    """A FaceSet 30× as large: `expand_30x` on its images and landmarks, labels repeated."""
    from ..faceset import FaceSet

    if not isinstance(faces, FaceSet):
        raise TypeError(f"expand_faceset needs a fer_utils.data.FaceSet, "
                        f"got {type(faces).__name__}")
    k = VARIANTS_PER_IMAGE
    result = expand_30x(faces.images, faces.landmarks, seed=seed, progress=progress)
    images, landmarks = result if faces.landmarks is not None else (result, None)
    rep = (lambda a: None if a is None else np.repeat(a, k, axis=0))
    return FaceSet(images=images, labels=rep(faces.labels), class_names=faces.class_names,
                   aus=rep(faces.aus), au_names=faces.au_names, landmarks=landmarks,
                   intensity=rep(faces.intensity), split=rep(faces.split),
                   groups=rep(faces.groups), source=f"{faces.source} ×{k} (augment.expand_30x)")


# ---------------------------------------------------------------------------------------------
# On-the-fly augmentation
# ---------------------------------------------------------------------------------------------

RANDOM_OPS = ("none",) + tuple(PIXEL_OPS)


def _check_ops(pixel_ops) -> tuple:
    """Validate a selection of pixel-op names for the random augmentations."""
    names = (pixel_ops,) if isinstance(pixel_ops, str) else tuple(pixel_ops)
    unknown = [n for n in names if n not in RANDOM_OPS]
    if not names or unknown:
        raise ValueError(f"pixel_ops must be a non-empty selection of {RANDOM_OPS}, "
                         f"got {pixel_ops!r}")
    return names


def random_augment(image: np.ndarray, landmarks=None, rng=None, max_angle: float = MAX_ANGLE,
                   max_shift: float = MAX_SHIFT, pixel_ops=RANDOM_OPS, border: str = "reflect"):
    """One random variant of one image (NumPy): a random pixel op (or none) + a random pose.

    Args:
        image: uint8 H×W or H×W×C.
        landmarks: optional K×2 (x, y) points, moved with the image.
        rng: numpy Generator or int seed.
        max_angle: rotations are drawn uniformly in ±max_angle degrees.
        max_shift: shifts are drawn uniformly in ±max_shift of the width / height.
        pixel_ops: the names to draw the pixel op from (RANDOM_OPS: "none" + PIXEL_OPS).
        border: border mode of the warp.

    Returns:
        (image, landmarks): the uint8 variant and the moved float32 points (None if not given).
    """
    image = _check_image(image)
    points = None if landmarks is None else _check_landmarks(landmarks, None)
    names = _check_ops(pixel_ops)
    rng = _as_rng(rng)
    h, w = image.shape[:2]
    name = names[int(rng.integers(len(names)))]
    if name == "noise":
        image = add_noise(image, rng=rng)
    elif name == "color":
        image = color_shift(image, brightness=rng.uniform(-25, 25),
                            contrast=rng.uniform(0.75, 1.3),
                            gains=rng.uniform(0.88, 1.12, size=3)[:image.shape[-1]]
                            if image.ndim == 3 and image.shape[-1] > 1 else 1.0,
                            gamma=rng.uniform(0.75, 1.33))
    elif name != "none":
        image = PIXEL_OPS[name](image)
    M = affine_matrix(rng.uniform(-max_angle, max_angle), rng.uniform(-max_shift, max_shift) * w,
                      rng.uniform(-max_shift, max_shift) * h, center=((w - 1) / 2, (h - 1) / 2))
    image = apply_affine(image, M, border=border)
    return image, (None if points is None else transform_landmarks(points, M))
