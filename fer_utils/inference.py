"""Use a trained model on new photos: detect faces, crop them like the training faces, predict.

Why predictions collapse on real photos: a model only knows faces framed the way its training
faces were framed. FER2013 and the built-in set show a face filling a small square, eyes level,
at a fixed place; a raw detector box (too tight, or the whole photo) shows the network something
it never saw, and it answers with its most frequent class. So the crop convention is measured
on the training set and stored with the model (`meta.json`):

- ``"landmarks"`` (training set with 68 landmarks, e.g. the built-in set): the mean landmark
  layout of the training faces, normalised to the frame, is the template; a new face is mapped
  onto it with the similarity transform (rotation, scale, shift) that best fits its eye corners
  and nose (dlib's 68 points), so eyes end up level and at the same place and size.
- ``"box"`` (no landmarks, e.g. FER2013 or an image folder): the detector's square box,
  enlarged by ``scale`` around its centre (FER2013-style framing), optionally rotated so that
  the eyes are level.

The crop is then converted to the data set's channels and sent through the SAME
`fer_utils.data.to_tf_dataset` conversion as the training batches (resize, channels,
"scale" / "vgg" / raw preprocessing), so inference preprocesses exactly like training.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

__all__ = [
    "ALIGN_POINTS", "DEFAULT_BOX_SCALE", "META_FILE", "read_image", "crop_convention",
    "make_meta", "save_meta", "load_meta", "load_model", "meta_candidates", "crop_faces",
    "preprocess_faces", "predict_faces", "predict_image", "annotate", "result_record",
]

META_FILE = "meta.json"
META_FORMAT = 1
# dlib indices used to fit the alignment: nose bridge and base (27-35) and eye corners.
ALIGN_POINTS = (27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 39, 42, 45)
# "box" convention: the square crop is this many times the detector box (FER2013-like framing).
DEFAULT_BOX_SCALE = 1.3
PREPROCESS_CHOICES = ("scale", "vgg", None)


# --- images -----------------------------------------------------------------------------------


def read_image(path) -> np.ndarray:
    """Read a picture as RGB uint8 H×W×3; errors name the file (missing, not a picture).

    Args:
        path: path of a picture OpenCV can decode (PNG, JPEG, BMP, TIFF, WebP, ...).

    Returns:
        uint8 H×W×3 RGB array.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is a folder, empty, or not a picture OpenCV can decode.
    """
    import cv2

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"image not found: {path}")
    if not path.is_file():
        raise ValueError(f"cannot read image {path}: it is a folder, not a picture")
    data = np.fromfile(str(path), dtype=np.uint8)  # imdecode also copes with non-ASCII paths
    if data.size == 0:
        raise ValueError(f"cannot read image {path}: the file is empty")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot read image {path}: not a picture OpenCV can decode "
                         f"(PNG, JPEG, BMP, TIFF, WebP, ...)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _as_uint8_image(image, what: str = "image") -> np.ndarray:
    """A uint8 H×W×C (C 1 or 3) array, or a ValueError that shows the bad shape."""
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{what} must be a grey H×W(×1) or RGB H×W×3 image, "
                         f"got shape {array.shape}")
    if array.shape[-1] == 4:
        array = array[..., :3]
    if array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.floating) and array.size and np.nanmax(array) <= 1.0:
            array = array * 255.0
        array = np.clip(np.nan_to_num(array.astype(np.float64)), 0, 255).round().astype(np.uint8)
    return np.ascontiguousarray(array)


def _to_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """Convert uint8 N×H×W×C images to `channels` (1 grey or 3 RGB) with OpenCV's weights."""
    import cv2

    if images.shape[-1] == channels:
        return images
    if channels == 1:
        return np.stack([cv2.cvtColor(im, cv2.COLOR_RGB2GRAY) for im in images])[..., None]
    return np.repeat(images, 3, axis=-1)


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


def make_meta(faces, input_size, channels: int, preprocess="scale", model_name: str = "",
              convention: dict | None = None, **extra) -> dict:
    """The `meta.json` of a trained model: classes, input, preprocessing and crop convention.

    Args:
        faces: the training FaceSet (class names, image size, landmarks for the template).
        input_size: model input size (int or (h, w)).
        channels: model input channels (1 or 3).
        preprocess: the `to_tf_dataset` preprocessing used in training ("scale", "vgg", None).
        model_name: a short name of the architecture ("small", "vgg16").
        convention: a `crop_convention` dict; default: measured on `faces`.
        **extra: more JSON-ready fields to record (data set, profile, epochs, accuracy...).

    Returns:
        A JSON-ready dict.
    """
    if preprocess not in PREPROCESS_CHOICES:
        raise ValueError(f"preprocess must be one of {PREPROCESS_CHOICES}, got {preprocess!r}")
    if int(channels) not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    size = [int(input_size)] * 2 if np.isscalar(input_size) else [int(v) for v in input_size]
    return {
        "format": META_FORMAT,
        "model": model_name,
        "class_names": list(faces.class_names),
        "input_size": size,
        "channels": int(channels),
        "preprocess": preprocess,
        "crop": convention if convention is not None else crop_convention(faces),
        **extra,
    }


def save_meta(meta: dict, path) -> Path:
    """Write `meta` as indented JSON to `path` (a file, or a folder that gets meta.json)."""
    path = Path(path)
    if path.is_dir():
        path = path / META_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(meta, indent=1)
    # Numbers-only lists on one line each (the 68-point template stays readable).
    text = re.sub(r"\[\s+([^\[\]{}\"]*?)\s+\]",
                  lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]", text)
    path.write_text(text + "\n")
    return path


def load_meta(path) -> dict:
    """Read a meta.json written by `save_meta`, checking the fields inference needs."""
    path = Path(path)
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"model description not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read {path}: not valid JSON ({err})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: expected a JSON object with class_names, input_size, ..., "
                         f"got a JSON {type(meta).__name__}")
    missing = [k for k in ("class_names", "input_size", "channels", "preprocess", "crop")
               if k not in meta]
    if missing:
        raise ValueError(f"{path} lacks the field(s) {', '.join(missing)}")
    if meta["preprocess"] not in PREPROCESS_CHOICES:
        raise ValueError(f"{path}: preprocess must be one of {PREPROCESS_CHOICES}, "
                         f"got {meta['preprocess']!r}")
    if not isinstance(meta["crop"], dict):
        raise ValueError(f"{path}: crop must be a JSON object with crop.method 'landmarks' or "
                         f"'box', got {meta['crop']!r}")
    if meta["crop"].get("method") not in ("landmarks", "box"):
        raise ValueError(f"{path}: crop.method must be 'landmarks' or 'box', "
                         f"got {meta['crop'].get('method')!r}")
    return meta


def _meta_from_model(model) -> dict:
    """Defaults for a model saved without meta.json (e.g. by a notebook): read its input shape."""
    from .data import EXPRESSIONS

    shape = model.input_shape
    if isinstance(shape, (list, dict)):
        raise ValueError("this model takes several inputs; `predict` needs a one-image model")
    _, height, width, channels = shape
    num_classes = int(model.output_shape[-1])
    names = list(EXPRESSIONS) if num_classes == len(EXPRESSIONS) else \
        [f"class_{i}" for i in range(num_classes)]
    return {"format": META_FORMAT, "model": getattr(model, "name", ""), "class_names": names,
            "input_size": [int(height), int(width)], "channels": int(channels),
            "preprocess": "scale", "crop": crop_convention(size=height, channels=channels),
            "note": "no meta.json was found: defaults assumed (0-1 scaling, box crop)"}


def load_model(path):
    """Load a model saved by `python -m fer_utils train` (or any .keras) and its meta.json.

    Args:
        path: a `.keras` file, or the folder `train --out` wrote (holding model.keras).

    Returns:
        (keras.Model, meta dict). Without a meta.json next to the model, the meta is derived
        from the model's input shape (0-1 scaling, FER2013-style box crop) and says so in "note".
    """
    path = Path(path)
    if path.is_dir():
        path = path / "model.keras"
    if not path.exists():
        raise FileNotFoundError(f"model not found: {path}")
    if path.suffix != ".keras":
        raise ValueError(f"cannot load model {path}: expected a .keras file or the folder "
                         f"`python -m fer_utils train --out` wrote")
    import keras

    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as err:  # Keras raises many types for a damaged file
        raise ValueError(f"cannot load model {path}: {str(err).splitlines()[0]}") from None
    for candidate in meta_candidates(path):
        if candidate.is_file():
            meta = load_meta(candidate)
            _check_meta_fits(model, meta, candidate)
            return model, meta
    return model, _meta_from_model(model)


def meta_candidates(model_path) -> list:
    """Where a model's meta.json may be: `NAME.meta.json`, or `meta.json` beside `model.*`."""
    path = Path(model_path)
    candidates = [path.with_suffix(".meta.json")]
    if path.stem == "model":  # the names `train` and `export` write
        candidates.append(path.parent / META_FILE)
    return candidates


def _check_meta_fits(model, meta: dict, source) -> None:
    """Fail clearly when a meta.json describes another model (input shape or class count)."""
    shape = getattr(model, "input_shape", None)
    if isinstance(shape, tuple) and len(shape) == 4:
        expected = (*meta["input_size"], meta["channels"])
        if tuple(shape[1:]) != tuple(expected):
            raise ValueError(f"{source} describes inputs {expected}, but the model takes "
                             f"{tuple(shape[1:])}: it belongs to another model")
    outputs = getattr(model, "output_shape", None)
    if isinstance(outputs, tuple) and outputs[-1] != len(meta["class_names"]):
        raise ValueError(f"{source} lists {len(meta['class_names'])} classes, but the model has "
                         f"{outputs[-1]} outputs: it belongs to another model")


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
               min_score: float | None = None):
    """Crop faces from a photo the way the training faces are framed.

    Args:
        image: RGB H×W×3 (or grey) photo, uint8.
        faces: (x, y, w, h[, score]) boxes; default: `fer_utils.attention.detect_faces(image)`
            (most confident first).
        convention: a `crop_convention` dict (meta["crop"]); default: FER2013-style box crop.
        size: override the crop size (int or (h, w)).
        min_score: drop detections whose dlib score is below this (dlib's own threshold is 0;
            about 0.5 removes most false alarms such as badges and patterns).

    Returns:
        (crops uint8 N×h×w×C in the convention's channels, boxes: list of (x, y, w, h, score)).
    """
    from . import attention

    image = _as_uint8_image(image)
    convention = convention or crop_convention()
    if size is None:
        out_h, out_w = convention["size"]
    else:
        out_h, out_w = (int(size), int(size)) if np.isscalar(size) else (int(v) for v in size)
    channels = int(convention.get("channels", 1))
    if faces is None:
        faces = attention.detect_faces(image)
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
    return _to_channels(np.stack(crops), channels), boxes


# --- predicting -------------------------------------------------------------------------------


def preprocess_faces(crops, meta: dict) -> np.ndarray:
    """Turn uint8 crops into the model's input batch, through the training pipeline's own code.

    The crops go through `fer_utils.data.to_tf_dataset` with the meta's input size, channels
    and preprocessing, i.e. the very conversion the training batches went through.

    Args:
        crops: uint8 N×h×w×C faces (from `crop_faces`, or faces of the data set itself).
        meta: the model's meta dict (`load_model`).

    Returns:
        float32 N×H×W×C batch.
    """
    from . import data

    crops = np.asarray(crops)
    if crops.ndim == 3:
        crops = crops[..., None]
    if crops.ndim != 4 or crops.shape[-1] not in (1, 3):
        raise ValueError(f"crops must be N×H×W×C with C in (1, 3), got shape {crops.shape}")
    crops = _to_channels(_as_uint8_image(crops.reshape(-1, *crops.shape[2:]))
                         .reshape(crops.shape), int(meta["crop"].get("channels", crops.shape[-1])))
    height, width = meta["input_size"]
    faces = data.FaceSet(images=crops, labels=np.zeros(len(crops), np.int64),
                         class_names=tuple(meta["class_names"]), source="inference")
    dataset = data.to_tf_dataset(faces, batch_size=max(1, len(crops)), shuffle=False,
                                 image_size=(height, width) if height != width else height,
                                 channels=int(meta["channels"]), preprocess=meta["preprocess"])
    batches = [np.asarray(x) for x, _ in dataset]
    return np.concatenate(batches) if batches else np.zeros((0, height, width,
                                                             meta["channels"]), np.float32)


def predict_faces(model, crops, meta: dict) -> np.ndarray:
    """Class probabilities N×K for uint8 face crops (preprocessed like the training faces)."""
    if len(crops) == 0:
        return np.zeros((0, len(meta["class_names"])), np.float32)
    x = preprocess_faces(crops, meta)
    if callable(model) and not hasattr(model, "predict_on_batch"):
        probs = np.asarray(model(x))  # e.g. a TFLite runner
    else:
        probs = np.asarray(model(x, training=False))
    if probs.shape != (len(x), len(meta["class_names"])):
        raise ValueError(f"the model returned shape {probs.shape}; expected "
                         f"({len(x)}, {len(meta['class_names'])}) for classes "
                         f"{meta['class_names']}")
    return probs.astype(np.float32)


def result_record(box, probs, class_names) -> dict:
    """One face's JSON record: box [x, y, w, h], detector score, label and probabilities."""
    probs = np.asarray(probs, dtype=np.float64)
    return {
        "box": [int(round(float(v))) for v in box[:4]],
        "score": round(float(box[4]), 4) if len(box) > 4 else None,
        "label": class_names[int(np.argmax(probs))],
        "probabilities": {name: float(p) for name, p in zip(class_names, probs)},
    }


def predict_image(model, image, meta: dict, faces=None,
                  min_score: float | None = None) -> list[dict]:
    """Detect, crop and classify every face in a photo.

    Args:
        model: a Keras model (or a callable batch → probabilities, e.g. a TFLite runner).
        image: RGB H×W×3 (or grey) uint8 photo.
        meta: the model's meta dict (`load_model`).
        faces: optional boxes instead of running the detector.
        min_score: drop detections scored below this (see `crop_faces`).

    Returns:
        One dict per face, most confident detection first: {"box": [x, y, w, h], "score",
        "label", "probabilities": {class name: p}}; an empty list when no face is found.
    """
    crops, boxes = crop_faces(image, faces=faces, convention=meta["crop"], min_score=min_score)
    probs = predict_faces(model, crops, meta)
    return [result_record(box, p, meta["class_names"]) for box, p in zip(boxes, probs)]


def _palette(i: int) -> tuple:
    """A distinct RGB colour per class index (matplotlib's tab10)."""
    colours = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
               (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
    return colours[i % len(colours)]


def annotate(image, results: list[dict], class_names=None) -> np.ndarray:
    """Draw each face's box and "label p" on a copy of the photo (RGB uint8, OpenCV).

    Args:
        image: the RGB (or grey) photo.
        results: the dicts `predict_image` returned.
        class_names: class order for the colours (default: each result's probability keys).

    Returns:
        RGB uint8 H×W×3 annotated copy.
    """
    import cv2

    canvas = _as_uint8_image(image)
    canvas = np.ascontiguousarray(np.repeat(canvas, 3, axis=-1) if canvas.shape[-1] == 1
                                  else canvas.copy())
    height, width = canvas.shape[:2]
    thickness = max(1, int(round(min(height, width) / 250)))
    font_scale = max(0.4, min(height, width) / 700)
    for rank, result in enumerate(results):
        names = list(class_names or result["probabilities"])
        x, y, w, h = result["box"]
        colour = _palette(names.index(result["label"]) if result["label"] in names else rank)
        cv2.rectangle(canvas, (x, y), (x + w, y + h), colour, thickness, cv2.LINE_AA)
        text = f"{result['label']} {result['probabilities'][result['label']]:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        top = y - th - base - 2 if y - th - base - 2 >= 0 else y + h
        cv2.rectangle(canvas, (x, top), (x + tw + 4, top + th + base + 2), colour, cv2.FILLED)
        cv2.putText(canvas, text, (x + 2, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                    (255, 255, 255), thickness, cv2.LINE_AA)
    return canvas
