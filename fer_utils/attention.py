"""Faces, landmarks, AU centres and attention maps: the front end of EAC-Net (Li et al., 2017).

Pipeline: image → `detect_faces` (dlib's HOG detector) → `detect_landmarks` (dlib's 68-point
model shipped by `face-recognition-models`, offline) → `au_centers` (the EAC-Net rule table,
20 centres) → `attention_map` (1 at each centre, falling linearly with Manhattan distance).

The map follows the authors' code (`get_attention_map_dlib.py` in wiibrew/EAC-Net): on a
100×100 grid (the face's width and height scaled to 0-100), the cells of a square window of
±`window` cells around each centre get `1 - decay * d`, `d` the Manhattan distance to the
centre; cells outside every window are 0; overlaps take the maximum. The all-AU map that
E-Net is trained with uses decay 0.07 on ±7 cells (`DECAY`, `WINDOW`; 0.02 in the window's
corners); the single-AU maps use 0.095 on ±5 cells (`SINGLE_AU_DECAY`, `SINGLE_AU_WINDOW`).
The map is evaluated directly at the requested H×W, the distance measured in 100-grid units
(`100 * |x - cx| / W + 100 * |y - cy| / H`), which equals computing it on the grid and
resizing, without resampling blur (the authors round each centre down to a whole grid cell
and resize bilinearly). The network max-pools it to its feature grids (`max_pool_maps`).
Everything is vectorised (NumPy / TensorFlow).
"""

from __future__ import annotations

import collections
import functools

import numpy as np

__all__ = [
    "AU_REGIONS", "AURegion", "NoFaceFoundError", "DECAY", "WINDOW", "SINGLE_AU_DECAY",
    "SINGLE_AU_WINDOW", "DETECTORS", "detect_faces", "detect_landmarks", "au_centers",
    "au_centers_batch", "attention_map", "attention_maps", "single_au_map", "max_pool_maps",
    "relative_centers", "tf_au_centers", "tf_attention_map", "tf_attention_inputs",
    "region_of_au", "centers_of_au",
]

# The authors' all-AU map (E-Net's input): 1 - 0.07 d on a square window of ±7 grid cells.
DECAY = 0.07
WINDOW = 7
# The authors' single-AU maps: 1 - 0.095 d on ±5 cells.
SINGLE_AU_DECAY = 0.095
SINGLE_AU_WINDOW = 5
NUM_LANDMARKS = 68
DETECTORS = ("hog", "cnn")

AURegion = collections.namedtuple("AURegion", ["aus", "landmarks", "y_offset"])
AURegion.__doc__ = "One EAC-Net region: the AUs it serves, its landmark pair, y offset in rulers."

# EAC-Net's rule table (the authors' get_attention_map_dlib.py): y offsets in units of
# ruler = |x39 - x42| (scaled frame).
AU_REGIONS = (
    AURegion(aus=(1,), landmarks=(21, 22), y_offset=-1 / 2),  # inner brow raiser
    AURegion(aus=(2,), landmarks=(18, 25), y_offset=-1 / 3),  # outer brow raiser
    AURegion(aus=(4,), landmarks=(19, 24), y_offset=+1 / 3),  # brow lowerer
    AURegion(aus=(6,), landmarks=(41, 46), y_offset=+1.0),  # cheek raiser
    AURegion(aus=(7,), landmarks=(38, 43), y_offset=0.0),  # lid tightener
    AURegion(aus=(10,), landmarks=(49, 53), y_offset=0.0),  # upper lip raiser
    AURegion(aus=(12, 14, 15), landmarks=(48, 54), y_offset=0.0),  # lip corners
    AURegion(aus=(17,), landmarks=(51, 57), y_offset=0.0),  # chin raiser
    AURegion(aus=(23, 24), landmarks=(61, 63), y_offset=0.0),  # lip tightener / pressor
    AURegion(aus=(23,), landmarks=(56, 58), y_offset=+1 / 2),  # lip tightener (lower lip)
)
NUM_CENTERS = 2 * len(AU_REGIONS)

# Index arrays derived from the table: centre k comes from landmark _CENTER_LANDMARKS[k].
_CENTER_LANDMARKS = np.array([lm for r in AU_REGIONS for lm in r.landmarks], dtype=np.int64)
_CENTER_OFFSETS = np.array([r.y_offset for r in AU_REGIONS for _ in r.landmarks],
                           dtype=np.float32)


class NoFaceFoundError(ValueError):
    """The face detector found no face in an image."""


def region_of_au(au: int) -> list[int]:
    """Indices of the regions in `AU_REGIONS` that serve action unit `au` (e.g. 23 → [8, 9])."""
    regions = [k for k, r in enumerate(AU_REGIONS) if int(au) in r.aus]
    if not regions:
        served = sorted({a for r in AU_REGIONS for a in r.aus})
        raise ValueError(f"AU{au} has no EAC-Net region; regions exist for AUs {served}")
    return regions


def centers_of_au(au: int) -> list[int]:
    """Indices of the centres (of the 20) that belong to action unit `au` (AU12 → [12, 13])."""
    return [2 * r + j for r in region_of_au(au) for j in (0, 1)]


# --- faces and landmarks (dlib) -------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _face_detector():
    """dlib's HOG frontal-face detector (built once)."""
    import dlib

    return dlib.get_frontal_face_detector()


@functools.lru_cache(maxsize=1)
def _cnn_face_detector():
    """dlib's CNN (MMOD) face detector from the face-recognition-models package (loaded once)."""
    import dlib

    try:
        import face_recognition_models
    except ImportError as err:  # pragma: no cover - pinned in requirements.txt
        raise ImportError("detector='cnn' needs the 'face-recognition-models' package "
                          "(mmod_human_face_detector.dat); pip install "
                          "face-recognition-models") from err
    return dlib.cnn_face_detection_model_v1(
        face_recognition_models.cnn_face_detector_model_location())


@functools.lru_cache(maxsize=1)
def _shape_predictor():
    """dlib's 68-point shape predictor from the face-recognition-models package (loaded once)."""
    import dlib

    try:
        import face_recognition_models
    except ImportError as err:  # pragma: no cover - pinned in requirements.txt
        raise ImportError("detect_landmarks needs the 'face-recognition-models' package "
                          "(dlib's 68-point model); pip install face-recognition-models") from err
    return dlib.shape_predictor(face_recognition_models.pose_predictor_model_location())


def _as_dlib_image(image, what: str = "image") -> np.ndarray:
    """A contiguous uint8 H×W or H×W×3 array dlib accepts, or a clear error."""
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    elif array.ndim == 3 and array.shape[-1] == 4:
        array = array[..., :3]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] != 3):
        raise ValueError(f"{what} must be a grey H×W(×1) or RGB H×W×3 image, "
                         f"got shape {array.shape}")
    if array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.floating) and array.size and np.nanmax(array) <= 1.0:
            array = array * 255.0
        array = np.clip(np.nan_to_num(array.astype(np.float64)), 0, 255).round().astype(np.uint8)
    return np.ascontiguousarray(array)


def detect_faces(image, upsample: int | None = None, detector: str = "hog") -> list[tuple]:
    """Faces found by one of dlib's detectors, most confident first.

    Args:
        image: grey H×W(×1) or RGB H×W×3 image (uint8; floats in [0, 1] are scaled).
        upsample: how many times the image is doubled before detecting (finds smaller faces);
            default 1 for "hog", 0 for "cnn" (each doubling makes the CNN about 4× slower).
        detector: "hog" (dlib's HOG + linear SVM frontal-face detector: fast, frontal faces of
            about 40 px or more at upsample=1) or "cnn" (dlib's CNN MMOD detector,
            mmod_human_face_detector.dat from face-recognition-models: slower, about 1.6 s for
            a 512×512 photo on one CPU core, but finds turned, tilted and partly hidden faces).

    Returns:
        A list of (x, y, w, h, score) tuples in pixels (ints, score a float: the HOG SVM's
        margin, or the CNN's confidence); empty if none.
    """
    if detector not in DETECTORS:
        raise ValueError(f"detector must be one of {DETECTORS}, got {detector!r}")
    if upsample is None:
        upsample = 1 if detector == "hog" else 0
    if int(upsample) != upsample or upsample < 0:
        raise ValueError(f"upsample must be a non-negative integer, got {upsample!r}")
    array = _as_dlib_image(image)
    if detector == "cnn":
        found = _cnn_face_detector()(array, int(upsample))
        pairs = [(d.rect, d.confidence) for d in found]
    else:
        rects, scores, _ = _face_detector().run(array, int(upsample), 0.0)
        pairs = list(zip(rects, scores))
    faces = [(int(r.left()), int(r.top()), int(r.width()), int(r.height()), float(s))
             for r, s in pairs]
    return sorted(faces, key=lambda f: -f[4])


def detect_landmarks(image, box=None, upsample: int | None = None, source: str | None = None,
                     detector: str = "hog") -> np.ndarray:
    """The 68 dlib landmarks of the most confident face in an image.

    Args:
        image: grey H×W(×1) or RGB H×W×3 image (uint8; floats in [0, 1] are scaled).
        box: optional face box (x, y, w, h[, score]); default: the most confident detection.
        upsample: passed to `detect_faces` when no box is given (default: its default).
        source: optional name of the image (file name) used in error messages.
        detector: passed to `detect_faces` when no box is given ("hog" or "cnn").

    Returns:
        float32 68×2 array of (x, y) pixel coordinates in dlib's order.

    Raises:
        NoFaceFoundError: no face was detected (and no box given).
    """
    import dlib

    array = _as_dlib_image(image)
    if box is None:
        upsample = (1 if detector == "hog" else 0) if upsample is None else upsample
        faces = detect_faces(array, upsample=upsample, detector=detector)
        if not faces:
            where = f" in {source}" if source else ""
            raise NoFaceFoundError(
                f"no face found{where} (image shape {np.asarray(image).shape}, dlib {detector} "
                f"detector, "
                f"upsample={upsample}); frontal faces of at least ~{80 // 2 ** upsample} px are "
                f"needed, or pass box=(x, y, w, h)")
        box = faces[0]
    if len(box) not in (4, 5):
        raise ValueError(f"box must be (x, y, w, h) or (x, y, w, h, score), got {box!r}")
    x, y, w, h = (int(round(float(v))) for v in box[:4])
    if w <= 0 or h <= 0:
        raise ValueError(f"box must have a positive width and height, got {box!r}")
    shape = _shape_predictor()(array, dlib.rectangle(x, y, x + w, y + h))
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)


# --- AU centres -------------------------------------------------------------------------------


def _check_size(height, width) -> tuple[int, int]:
    """Validate an image size (positive ints)."""
    try:
        h, w = int(height), int(width)
    except (TypeError, ValueError):
        raise ValueError(f"height and width must be positive integers, got {height!r}, "
                         f"{width!r}") from None
    if h <= 0 or w <= 0 or h != height or w != width:
        raise ValueError(f"height and width must be positive integers, got {height!r}, {width!r}")
    return h, w


def au_centers_batch(landmarks, height: int, width: int) -> np.ndarray:
    """EAC-Net's 20 AU centres for a batch: N×68×2 landmarks (pixels) → float32 N×20×2 pixels."""
    h, w = _check_size(height, width)
    points = np.asarray(landmarks, dtype=np.float32)
    if points.ndim != 3 or points.shape[1:] != (NUM_LANDMARKS, 2):
        raise ValueError(f"landmarks must be N×68×2 (x, y) pixels, got shape {points.shape}")
    finite = np.isfinite(points).all(axis=(1, 2))
    if not finite.all():
        raise ValueError(f"landmarks hold NaN or infinite coordinates ({int((~finite).sum())} "
                         f"face(s), first at index {int(np.flatnonzero(~finite)[0])}): AU "
                         f"centres need 68 finite (x, y) points per face")
    scaled = points * np.array([100.0 / w, 100.0 / h], dtype=np.float32)  # 0-100 frame
    ruler = np.abs(scaled[:, 39, 0] - scaled[:, 42, 0])  # inner eye corners, N
    centers = scaled[:, _CENTER_LANDMARKS, :].copy()  # N×20×2
    centers[:, :, 1] += _CENTER_OFFSETS[None, :] * ruler[:, None]
    return (centers * np.array([w / 100.0, h / 100.0], dtype=np.float32)).astype(np.float32)


def au_centers(landmarks, height: int, width: int) -> np.ndarray:
    """EAC-Net's 20 AU centres (x, y) in pixels from 68 landmarks (x, y) in pixels.

    Args:
        landmarks: 68×2 (x, y) pixel coordinates in dlib's order (N×68×2 gives N×20×2).
        height: image height in pixels.
        width: image width in pixels.

    Returns:
        float32 20×2 array: region 0's first landmark, region 0's second, region 1's first, ...
        (the order of `AU_REGIONS`). Centres may lie outside the image (e.g. above the brows).
    """
    points = np.asarray(landmarks, dtype=np.float32)
    if points.ndim == 3:
        return au_centers_batch(points, height, width)
    if points.shape != (NUM_LANDMARKS, 2):
        raise ValueError(f"landmarks must be 68×2 (x, y) pixels, got shape {points.shape}")
    return au_centers_batch(points[None], height, width)[0]


def relative_centers(centers, height: int, width: int, clip: bool = True) -> np.ndarray:
    """Pixel centres (…×2, x y) → relative (x / W, y / H), clipped to [0, 1] by default."""
    h, w = _check_size(height, width)
    rel = np.asarray(centers, dtype=np.float32) / np.array([w, h], dtype=np.float32)
    return np.clip(rel, 0.0, 1.0) if clip else rel


# --- attention maps ---------------------------------------------------------------------------


def _check_map_args(decay, window):
    """Reject a non-positive decay or window."""
    if not decay > 0:
        raise ValueError(f"decay must be positive, got {decay!r}")
    if not window > 0:
        raise ValueError(f"window must be positive (grid cells either side), got {window!r}")


def attention_maps(centers, height: int, width: int, decay: float = DECAY,
                   window: float = WINDOW) -> np.ndarray:
    """Attention maps for a batch: N×K×2 pixel centres → float32 N×H×W in [0, 1]."""
    h, w = _check_size(height, width)
    _check_map_args(decay, window)
    c = np.asarray(centers, dtype=np.float32)
    if c.ndim != 3 or c.shape[-1] != 2:
        raise ValueError(f"centers must be N×K×2 (x, y) pixels, got shape {c.shape}")
    out = np.zeros((len(c), h, w), dtype=np.float32)
    if c.shape[1] == 0:
        return out
    # Separable distances in 100-grid units: dx (N×K×W) + dy (N×K×H); the window is square.
    dx = np.abs(np.arange(w, dtype=np.float32)[None, None, :] - c[:, :, 0:1]) * (100.0 / w)
    dy = np.abs(np.arange(h, dtype=np.float32)[None, None, :] - c[:, :, 1:2]) * (100.0 / h)
    dx = np.where(dx <= window, dx, np.inf)  # outside the window: no value
    dy = np.where(dy <= window, dy, np.inf)
    chunk = max(1, int(4e6 // max(1, h * w * c.shape[1])))  # bound memory of the N×K×H×W block
    for start in range(0, len(c), chunk):
        d = dy[start:start + chunk, :, :, None] + dx[start:start + chunk, :, None, :]
        out[start:start + chunk] = np.clip(1.0 - decay * d.min(axis=1), 0.0, 1.0)
    return out


def attention_map(centers, height: int, width: int, decay: float = DECAY,
                  window: float = WINDOW) -> np.ndarray:
    """EAC-Net attention map: 1 at each centre, `1 - decay * d` within its window, else 0.

    Args:
        centers: K×2 (x, y) pixel centres, e.g. from `au_centers` (N×K×2 gives N×H×W).
        height: map height in pixels.
        width: map width in pixels.
        decay: fall-off per grid cell of Manhattan distance (0.07: the authors' all-AU map).
        window: half-side of the square window around each centre, in grid cells (7).

    Returns:
        float32 H×W array in [0, 1]; overlapping regions take the maximum.
    """
    c = np.asarray(centers, dtype=np.float32)
    if c.ndim == 3:
        return attention_maps(c, height, width, decay, window)
    if c.ndim != 2 or c.shape[-1] != 2:
        raise ValueError(f"centers must be K×2 (x, y) pixels, got shape {c.shape}")
    return attention_maps(c[None], height, width, decay, window)[0]


def single_au_map(centers, au: int, height: int, width: int) -> np.ndarray:
    """The authors' map of one AU: its centres only, decay 0.095 on a ±5-cell window."""
    c = np.asarray(centers, dtype=np.float32)
    if c.ndim not in (2, 3) or c.shape[-2:] != (NUM_CENTERS, 2):
        raise ValueError(f"centers must be 20×2 or N×20×2 (x, y) pixels, got shape {c.shape}")
    return attention_map(c[..., centers_of_au(au), :], height, width, SINGLE_AU_DECAY,
                         SINGLE_AU_WINDOW)


def max_pool_maps(maps, times: int = 1) -> np.ndarray:
    """H×W (or N×H×W) maps max-pooled 2×2 `times` times, as E-Net does (sizes floored)."""
    m = np.asarray(maps, dtype=np.float32)
    if m.ndim not in (2, 3) or int(times) != times or times < 0:
        raise ValueError(f"max_pool_maps: maps must be H×W or N×H×W and times a non-negative "
                         f"integer, got shape {m.shape}, times={times!r}")
    for _ in range(int(times)):
        h, w = m.shape[-2] // 2, m.shape[-1] // 2
        if h == 0 or w == 0:
            raise ValueError(f"max_pool_maps: a {m.shape[-2]}×{m.shape[-1]} map cannot be "
                             f"pooled again")
        m = m[..., :2 * h, :2 * w].reshape(m.shape[:-2] + (h, 2, w, 2)).max(axis=(-3, -1))
    return m


# --- TensorFlow versions (for tf.data pipelines and graphs) -----------------------------------


def tf_au_centers(landmarks, height: int, width: int):
    """TensorFlow version of `au_centers_batch`: B×68×2 pixel landmarks → float32 B×20×2 pixels."""
    import tensorflow as tf

    h, w = _check_size(height, width)
    points = tf.cast(landmarks, tf.float32)
    scale = tf.constant([100.0 / w, 100.0 / h], tf.float32)
    scaled = points * scale
    ruler = tf.abs(scaled[:, 39, 0] - scaled[:, 42, 0])
    centers = tf.gather(scaled, _CENTER_LANDMARKS, axis=1)
    shift = tf.constant(_CENTER_OFFSETS)[None, :] * ruler[:, None]
    centers = centers + tf.stack([tf.zeros_like(shift), shift], axis=-1)
    return centers * tf.constant([w / 100.0, h / 100.0], tf.float32)


def tf_attention_map(centers, height: int, width: int, decay: float = DECAY,
                     window: float = WINDOW):
    """TensorFlow version of `attention_maps`: B×K×2 pixel centres → float32 B×H×W."""
    import tensorflow as tf

    h, w = _check_size(height, width)
    _check_map_args(decay, window)
    c = tf.cast(centers, tf.float32)
    dx = tf.abs(tf.range(w, dtype=tf.float32)[None, None, :] - c[:, :, 0:1]) * (100.0 / w)
    dy = tf.abs(tf.range(h, dtype=tf.float32)[None, None, :] - c[:, :, 1:2]) * (100.0 / h)
    inside = (dy[:, :, :, None] <= window) & (dx[:, :, None, :] <= window)  # B×K×H×W
    value = tf.where(inside, 1.0 - decay * (dy[:, :, :, None] + dx[:, :, None, :]), 0.0)
    return tf.clip_by_value(tf.reduce_max(value, axis=1), 0.0, 1.0)


def tf_attention_inputs(landmarks, height: int, width: int, decay: float = DECAY,
                        window: float = WINDOW):
    """Model inputs from a batch of landmarks, in TensorFlow (usable inside `tf.data.map`).

    Args:
        landmarks: B×68×2 (x, y) pixel landmarks of the (possibly augmented) images.
        height: image height in pixels (the images the model sees).
        width: image width in pixels.
        decay: see `attention_map`.
        window: see `attention_map`.

    Returns:
        (maps float32 B×H×W×1 in [0, 1], centers float32 B×20×2 (x, y) relative 0-1, clipped).
    """
    import tensorflow as tf

    h, w = _check_size(height, width)
    centers = tf_au_centers(landmarks, h, w)
    maps = tf_attention_map(centers, h, w, decay, window)[..., None]
    rel = tf.clip_by_value(centers / tf.constant([w, h], tf.float32), 0.0, 1.0)
    return maps, rel
