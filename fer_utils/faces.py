"""Find and crop faces the way the training faces are framed: one home for `predict` and loaders.

Why predictions collapse on real photos: a model only knows faces framed the way its training
faces were framed. FER2013 and the built-in set show a face filling a small square, eyes level,
at a fixed place; a raw detector box (too tight, or the whole photo) shows the network something
it never saw, and it answers with its most frequent class. So the crop convention is measured
on the training set and stored with the model (`meta.json`, see `fer_utils.inference`):

- ``"landmarks"`` (training set with 68 landmarks, e.g. the built-in set): the mean landmark
  layout of the training faces, normalised to the frame, is the template; a new face is mapped
  onto it with the similarity transform (rotation, scale, shift) that best fits its eye corners
  and nose (dlib's 68 points), so eyes end up level and at the same place and size.
- ``"box"`` (no landmarks, e.g. FER2013 or an image folder): the detector's square box,
  enlarged by ``scale`` around its centre (FER2013-style framing), optionally rotated so that
  the eyes are level.

`predict` crops photos with `crop_faces`, and `load_image_folder(fit="face")` crops the photos
of a raw folder with the very same call, so a model trained on such a folder sees its faces
framed exactly as `predict` will show them.
"""

from __future__ import annotations

import numpy as np

from . import attention
from .images import as_uint8_image, to_channels

__all__ = ["ALIGN_POINTS", "DEFAULT_BOX_SCALE", "DEFAULT_MIN_SCORE", "crop_convention",
           "crop_faces", "as_uint8_image", "to_channels"]

# dlib indices used to fit the alignment: nose bridge and base (27-35) and eye corners.
ALIGN_POINTS = (27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 39, 42, 45)
# "box" convention: the square crop is this many times the detector box (FER2013-like framing).
DEFAULT_BOX_SCALE = 1.3
# Detections scored below this are dropped by `predict` and fit="face" (false alarms such as
# badges and patterns score lower; dlib's own threshold is 0).
DEFAULT_MIN_SCORE = 0.5


# --- the crop convention (measured on the training set, stored in meta.json) ------------------


def crop_convention(faces=None, method: str = "auto", size=None, channels=None,
                    box_scale: float = DEFAULT_BOX_SCALE, align: bool = True,
                    max_faces: int = 2000) -> dict:
    """Describe how the training faces are framed, so that inference crops the same way.

    Args:
        faces: the training FaceSet (its landmarks give the template); None for the defaults.
        method: "landmarks" (template alignment; needs landmarks), "box" (enlarged detector
            box) or "auto" ("landmarks" when the set has landmarks, else "box").
        size: crop size in pixels (default: the set's image size, or 48).
        channels: channels of the crops (default: the set's channels, or 1).
        box_scale: for "box": side of the crop / side of dlib's box.
        align: for "box": rotate so that the eyes are level.
        max_faces: at most this many faces are averaged into the template.

    Returns:
        A JSON-ready dict: method, size (h, w), channels, and template/points or scale/align.
    """
    if method not in ("auto", "landmarks", "box"):
        raise ValueError(f"method must be 'auto', 'landmarks' or 'box', got {method!r}")
    if not box_scale > 0:
        raise ValueError(f"box_scale must be positive, got {box_scale!r}")
    if faces is not None:
        height, width, data_channels = faces.image_shape
    else:
        height = width = 48
        data_channels = 1
    if size is not None:
        height = width = int(size)
    channels = int(channels or data_channels)
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    has_landmarks = faces is not None and faces.landmarks is not None and len(faces) > 0
    if method == "landmarks" and not has_landmarks:
        raise ValueError("method='landmarks' needs a training set with 68 landmarks "
                         "(FaceSet.landmarks); use method='box' for sets without them")
    convention = {"size": [int(height), int(width)], "channels": channels}
    if method in ("auto", "landmarks") and has_landmarks:
        h0, w0 = faces.image_shape[:2]
        points = faces.landmarks[:max_faces] / np.array([w0, h0], dtype=np.float32)
        template = np.median(points, axis=0).astype(np.float64)  # robust to odd poses
        convention.update(method="landmarks", points=list(ALIGN_POINTS),
                          template=np.round(template, 5).tolist())
    else:
        convention.update(method="box", scale=float(box_scale), align=bool(align))
    return convention


# --- cropping ---------------------------------------------------------------------------------


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2×3 least-squares similarity transform (rotation, uniform scale, shift) mapping src→dst."""
    from skimage.transform import SimilarityTransform

    transform = SimilarityTransform.from_estimate(src, dst)
    if not transform:  # a FailedEstimation is falsy
        raise ValueError("cannot align the face: its landmarks are degenerate")
    return np.asarray(transform.params[:2], dtype=np.float64)


def _box_transform(box, landmarks, out_h: int, out_w: int, scale: float) -> np.ndarray:
    """2×3 transform: the square of side `scale`×box around the box centre → out_w×out_h,
    rotated so that the eyes are level when landmarks are given."""
    x, y, w, h = (float(v) for v in box[:4])
    cx, cy = x + w / 2.0, y + h / 2.0
    side = scale * max(w, h)
    angle = 0.0
    if landmarks is not None:
        left_eye = landmarks[36:42].mean(axis=0)
        right_eye = landmarks[42:48].mean(axis=0)
        dx, dy = right_eye - left_eye
        angle = float(np.arctan2(dy, dx))
    s = out_w / side
    cos, sin = np.cos(-angle) * s, np.sin(-angle) * s
    # Rotate by -angle about the box centre, scale, then move the centre to the crop centre.
    return np.array([[cos, -sin, out_w / 2.0 - (cos * cx - sin * cy)],
                     [sin, cos, out_h / 2.0 - (sin * cx + cos * cy)]], dtype=np.float64)


def _warp(image: np.ndarray, matrix: np.ndarray, out_w: int, out_h: int) -> np.ndarray:
    """warpAffine with an area pre-shrink when the crop is much smaller (no aliasing)."""
    import cv2

    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    if scale < 0.5:  # shrink the whole image first, then warp at about 1:1
        factor = 2.0 * scale
        small = cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        matrix = matrix.copy()
        matrix[:, :2] /= factor
        image = small
    warped = cv2.warpAffine(image, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REPLICATE)
    return warped.reshape(out_h, out_w, -1)


def crop_faces(image, faces=None, convention: dict | None = None, size=None,
               min_score: float | None = None, detector: str = "hog"):
    """Crop faces from a photo the way the training faces are framed.

    Args:
        image: RGB H×W×3 (or grey) photo, uint8.
        faces: (x, y, w, h[, score]) boxes; default: `fer_utils.attention.detect_faces(image)`
            (most confident first).
        convention: a `crop_convention` dict (meta["crop"]); default: FER2013-style box crop.
        size: override the crop size (int or (h, w)).
        min_score: drop detections whose dlib score is below this (dlib's own threshold is 0;
            DEFAULT_MIN_SCORE, 0.5, removes most false alarms such as badges and patterns).
        detector: "hog" or "cnn" when `faces` is None (see `attention.detect_faces`).

    Returns:
        (crops uint8 N×h×w×C in the convention's channels, boxes: list of (x, y, w, h, score)).
    """
    image = as_uint8_image(image)
    convention = convention or crop_convention()
    if size is None:
        out_h, out_w = convention["size"]
    else:
        out_h, out_w = (int(size), int(size)) if np.isscalar(size) else (int(v) for v in size)
    channels = int(convention.get("channels", 1))
    if faces is None:
        faces = attention.detect_faces(image, detector=detector)
    boxes = [tuple(f) if len(f) == 5 else (*f[:4], 1.0) for f in faces]
    if min_score is not None:
        boxes = [b for b in boxes if b[4] >= min_score]
    crops = []
    for box in boxes:
        landmarks = None
        if convention["method"] == "landmarks" or convention.get("align", False):
            landmarks = attention.detect_landmarks(image, box=box)
        if convention["method"] == "landmarks":
            points = list(convention.get("points", ALIGN_POINTS))
            template = np.asarray(convention["template"], dtype=np.float64)[points]
            matrix = _similarity(landmarks[points].astype(np.float64),
                                 template * np.array([out_w, out_h], dtype=np.float64))
        else:
            matrix = _box_transform(box, landmarks, out_h, out_w,
                                    float(convention.get("scale", DEFAULT_BOX_SCALE)))
        crops.append(_warp(image, matrix, out_w, out_h))
    if not crops:
        return np.zeros((0, out_h, out_w, channels), np.uint8), boxes
    return to_channels(np.stack(crops), channels), boxes
