"""Use a trained model on new photos: detect faces, crop them like the training faces, predict.

Photos are read with `fer_utils.data.read_image` (the loaders' reader and its checks), faces
are found and cropped by `fer_utils.faces` following the crop convention measured on the
training set (`meta.json`, or a default box crop without it), and the crops are resized and
converted to the model's channels by the SAME `fer_utils.data.to_tf_dataset` code as the
training batches. Every kit model preprocesses its raw pixels itself (its `preprocess`
layer), so `meta.json` describes a model; it is not needed to predict.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from .faces import (ALIGN_POINTS, DEFAULT_BOX_SCALE, DEFAULT_MIN_SCORE, as_uint8_image,
                    crop_convention, crop_faces, to_channels)

__all__ = [
    "ALIGN_POINTS", "DEFAULT_BOX_SCALE", "DEFAULT_MIN_SCORE", "META_FILE", "crop_convention",
    "make_meta", "save_meta", "load_meta", "load_model", "load_any_model", "meta_candidates",
    "crop_faces",
    "preprocess_faces", "predict_faces", "predict_image", "annotate", "probability_panel",
    "result_record",
]

META_FILE = "meta.json"
# 2: the model takes raw pixels and preprocesses them itself ("preprocess" only describes
# its layer); 1 (older runs): the input pipeline applied "preprocess" before the model.
META_FORMAT = 2
# What a model does to its raw pixels first (format 2: its own layer; format 1: the pipeline).
PREPROCESS_CHOICES = ("scale", "vgg", "rescaling", "normalization", None)


def make_meta(faces, input_size, channels: int, preprocess="scale", model_name: str = "",
              convention: dict | None = None, **extra) -> dict:
    """The `meta.json` of a trained model: classes, input, preprocessing and crop convention.

    Args:
        faces: the training FaceSet (class names, image size, landmarks for the template).
        input_size: model input size (int or (h, w)).
        channels: model input channels (1 or 3).
        preprocess: the model's own preprocessing layer ("scale", "vgg"; None: none), recorded
            for the reader: the model applies it to raw pixels itself.
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
    from .models.preprocess import preprocessing_of

    shape = model.input_shape
    if isinstance(shape, (list, dict)):
        raise ValueError("this model takes several inputs; `predict` needs a one-image model")
    own = preprocessing_of(model)
    if own is None:
        raise ValueError(f"model {getattr(model, 'name', '')!r} has no preprocessing layer and "
                         f"no meta.json says how its input was made: put its meta.json next to "
                         f"it, or save a model that starts with `fu.models.Preprocess`")
    _, height, width, channels = shape
    return _default_meta(height, width, channels, int(model.output_shape[-1]),
                         getattr(model, "name", ""), own if own in ("scale", "vgg") else None)


def _default_meta(height, width, channels, num_classes: int, name: str, preprocess) -> dict:
    """The meta of a raw-pixel model known only by its shapes: FER2013's class names for 7
    outputs, a box crop at its input size."""
    from .faceset import EXPRESSIONS

    names = list(EXPRESSIONS) if num_classes == len(EXPRESSIONS) else \
        [f"class_{i}" for i in range(num_classes)]
    return {"format": META_FORMAT, "model": name, "class_names": names,
            "input_size": [int(height), int(width)], "channels": int(channels),
            "preprocess": preprocess, "crop": crop_convention(size=height, channels=channels),
            "note": "no meta.json was found: class names and a box crop assumed (the model "
                    "preprocesses its raw pixels itself)"}


def load_model(path):
    """Load a model saved by `python -m fer_utils train` (or any .keras) and its meta.json.

    Args:
        path: a `.keras` file, or the folder `train --out` wrote (holding model.keras).

    Returns:
        (keras.Model, meta dict). Without a meta.json next to the model, the meta is derived
        from the model's input shape (FER2013's class names for 7 outputs, a box crop) and
        says so in "note"; the model's own `preprocess` layer prepares its raw pixels.
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


def load_any_model(path):
    """(model, meta) for a `.keras` file, a run folder or a `.tflite` file; meta.json optional.

    A `.tflite` file the kit exported takes raw pixels like its Keras model; without a
    meta.json its meta is read from its input and output shapes (and says so in "note").
    """
    from . import export
    from .models import layers, preprocess  # noqa: F401  (registers the kit's layers)

    path = Path(path)
    if path.suffix != ".tflite":
        return load_model(path)
    runner = export.TFLiteModel(path)
    for candidate in meta_candidates(path):
        if candidate.is_file():
            return runner, load_meta(candidate)
    _, height, width, channels = (int(v) for v in runner.input_shape)
    return runner, _default_meta(height, width, channels, runner.num_outputs, path.stem,
                                 preprocess=None)


def meta_candidates(model_path) -> list:
    """Where a model's meta.json may be: `NAME.meta.json`, or `meta.json` beside the files a
    run or an export writes (`model.*`, the checkpoint `best.keras`)."""
    path = Path(model_path)
    candidates = [path.with_suffix(".meta.json")]
    if path.stem in ("model", "best"):
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


# --- predicting -------------------------------------------------------------------------------


def preprocess_faces(crops, meta: dict) -> np.ndarray:
    """Turn uint8 crops into the model's input batch, through the training pipeline's own code.

    The crops go through `fer_utils.data.to_tf_dataset` with the meta's input size and
    channels, i.e. the very conversion the training batches went through: raw pixels (float
    0-255) for the kit's models, which preprocess them themselves; a model of an older run
    (meta format 1) gets the preprocessing its meta.json names.

    Args:
        crops: uint8 N×H×W×C faces (from `crop_faces`, or faces of the data set itself).
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
    crops = to_channels(as_uint8_image(crops.reshape(-1, *crops.shape[2:]))
                         .reshape(crops.shape), int(meta["crop"].get("channels", crops.shape[-1])))
    height, width = meta["input_size"]
    if len(crops) == 0:
        return np.zeros((0, height, width, meta["channels"]), np.float32)
    outside = meta["preprocess"] if meta.get("format", 1) < 2 else None
    faces = data.FaceSet(images=crops, labels=np.zeros(len(crops), np.int64),
                         class_names=tuple(meta["class_names"]), source="inference")
    dataset = data.to_tf_dataset(faces, batch_size=len(crops), shuffle=False,
                                 image_size=(height, width) if height != width else height,
                                 channels=int(meta["channels"]), preprocess=outside)
    return np.concatenate([np.asarray(x) for x, _ in dataset])


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


def predict_image(model, image, meta: dict, faces=None, min_score: float | None = None,
                  detector: str = "hog") -> list[dict]:
    """Detect, crop and classify every face in a photo.

    Args:
        model: a Keras model (or a callable batch → probabilities, e.g. a TFLite runner).
        image: RGB H×W×3 (or grey) uint8 photo.
        meta: the model's meta dict (`load_model`).
        faces: optional boxes instead of running the detector.
        min_score: drop detections scored below this (see `crop_faces`).
        detector: "hog" or "cnn" (see `fer_utils.attention.detect_faces`).

    Returns:
        One dict per face, most confident detection first: {"box": [x, y, w, h], "score",
        "label", "probabilities": {class name: p}}; an empty list when no face is found.
    """
    crops, boxes = crop_faces(image, faces=faces, convention=meta["crop"], min_score=min_score,
                              detector=detector)
    probs = predict_faces(model, crops, meta)
    return [result_record(box, p, meta["class_names"]) for box, p in zip(boxes, probs)]


def _palette(i: int) -> tuple:
    """A distinct RGB colour per class index (matplotlib's tab10)."""
    colours = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
               (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
    return colours[i % len(colours)]


def _text_size(text: str, scale: float, thickness: int) -> tuple[int, int, int]:
    import cv2

    (width, height), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    return width, height, base


def probability_panel(probabilities: dict, colour=(0, 0, 0), font_scale: float = 0.45,
                      thickness: int = 1) -> np.ndarray:
    """An RGB uint8 panel with one bar per class: name, a bar as long as p, and p (OpenCV).

    Args:
        probabilities: {class name: probability}, drawn in this order.
        colour: RGB of the most probable class's bar (the others are grey).
        font_scale: OpenCV font scale of the text.
        thickness: text thickness in pixels.

    Returns:
        uint8 h×w×3 panel (white background, a frame in `colour`).
    """
    import cv2

    names = list(probabilities)
    if not names:
        raise ValueError("probability_panel needs at least one class")
    top = max(names, key=lambda n: probabilities[n])
    name_w = max(_text_size(n, font_scale, thickness)[0] for n in names)
    value_w, text_h, base = _text_size("0.00", font_scale, thickness)
    row, pad = text_h + base + 4, 4
    bar_w = max(40, int(round(1.2 * name_w)))
    width, height = pad + name_w + pad + bar_w + pad + value_w + pad, pad + row * len(names) + pad
    panel = np.full((height, width, 3), 255, np.uint8)
    for k, name in enumerate(names):
        p = float(np.clip(probabilities[name], 0.0, 1.0))
        y = pad + k * row
        baseline = y + text_h + 2
        cv2.putText(panel, name, (pad, baseline), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                    (0, 0, 0), thickness, cv2.LINE_AA)
        x0 = pad + name_w + pad
        cv2.rectangle(panel, (x0, y + 2), (x0 + bar_w, y + row - 2), (225, 225, 225), cv2.FILLED)
        if p > 0:
            cv2.rectangle(panel, (x0, y + 2), (x0 + max(1, int(round(p * bar_w))), y + row - 2),
                          colour if name == top else (150, 150, 150), cv2.FILLED)
        cv2.putText(panel, f"{p:.2f}", (x0 + bar_w + pad, baseline), cv2.FONT_HERSHEY_SIMPLEX,
                    font_scale, (0, 0, 0), thickness, cv2.LINE_AA)
    cv2.rectangle(panel, (0, 0), (width - 1, height - 1), colour, 1)
    return panel


def _place(box, panel_shape, canvas_shape, margin: int, taken=()) -> tuple[int, int]:
    """(x, y) for a panel beside the box: right of it, else left, below or above, preferring
    a place that covers none of the `taken` rectangles (other faces, other panels); when no
    free place fits inside the photo, right of it (the canvas then grows)."""
    x, y, w, h = box
    ph, pw = panel_shape[:2]
    height, width = canvas_shape[:2]
    top = int(np.clip(y, 0, max(0, height - ph)))
    left = int(np.clip(x, 0, max(0, width - pw)))
    candidates = []
    if x + w + margin + pw <= width:
        candidates.append((x + w + margin, top))
    if x - margin - pw >= 0:
        candidates.append((x - margin - pw, top))
    if y + h + margin + ph <= height and pw <= width:
        candidates.append((left, y + h + margin))
    if y - margin - ph >= 0 and pw <= width:
        candidates.append((left, y - margin - ph))

    def free(px, py):
        return all(px + pw <= tx or tx + tw <= px or py + ph <= ty or ty + th <= py
                   for tx, ty, tw, th in taken)

    for px, py in candidates:
        if free(px, py):
            return px, py
    return max(0, x + w + margin), top


def annotate(image, results: list[dict], class_names=None) -> np.ndarray:
    """Draw each face's box, "label p" and a bar per class next to it (RGB uint8, OpenCV).

    Args:
        image: the RGB (or grey) photo.
        results: the dicts `predict_image` returned.
        class_names: class order of the bars and colours (default: each result's keys).

    Returns:
        RGB uint8 annotated copy: the photo's size, or wider/taller (white margin) when a
        face's probability bars do not fit beside it inside the photo.
    """
    import cv2

    canvas = as_uint8_image(image)
    canvas = np.ascontiguousarray(np.repeat(canvas, 3, axis=-1) if canvas.shape[-1] == 1
                                  else canvas.copy())
    height, width = canvas.shape[:2]
    thickness = max(1, int(round(min(height, width) / 250)))
    font_scale = max(0.4, min(height, width) / 700)
    panels = []
    faces = [tuple(result["box"]) for result in results]
    for rank, result in enumerate(results):
        names = list(class_names or result["probabilities"])
        x, y, w, h = result["box"]
        colour = _palette(names.index(result["label"]) if result["label"] in names else rank)
        cv2.rectangle(canvas, (x, y), (x + w, y + h), colour, thickness, cv2.LINE_AA)
        text = f"{result['label']} {result['probabilities'][result['label']]:.2f}"
        tw, th, base = _text_size(text, font_scale, thickness)
        top = y - th - base - 2 if y - th - base - 2 >= 0 else y + h
        cv2.rectangle(canvas, (x, top), (x + tw + 4, top + th + base + 2), colour, cv2.FILLED)
        cv2.putText(canvas, text, (x + 2, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                    (255, 255, 255), thickness, cv2.LINE_AA)
        probs = {n: result["probabilities"].get(n, 0.0) for n in names}
        panel = probability_panel(probs, colour, font_scale=0.8 * font_scale,
                                  thickness=max(1, thickness - 1))
        taken = [f for f in faces if f != (x, y, w, h)] + [
            (px, py, p.shape[1], p.shape[0]) for p, (px, py) in panels]
        panels.append((panel, _place((x, y, w, h), panel.shape, canvas.shape, 2 * thickness,
                                     taken)))
    grow_x = max([px + p.shape[1] - width for p, (px, _) in panels] + [0])
    grow_y = max([py + p.shape[0] - height for p, (_, py) in panels] + [0])
    if grow_x or grow_y:
        canvas = cv2.copyMakeBorder(canvas, 0, grow_y, 0, grow_x, cv2.BORDER_CONSTANT,
                                    value=(255, 255, 255))
    for panel, (px, py) in panels:
        canvas[py:py + panel.shape[0], px:px + panel.shape[1]] = panel
    return canvas


# --- videos and folders: `inference.predict_video`, `inference.predict_folder` ---------------
# They live in fer_utils.video, .camera and .photo_folder, which build on this module; they
# are looked up on first use (PEP 562) so that importing this module does not import them.
_ELSEWHERE = {"predict_video": "video", "predict_camera": "camera",
              "predict_folder": "photo_folder"}


def __getattr__(name: str):
    """`predict_video`, `predict_camera` and `predict_folder`, from their own modules."""
    if name in _ELSEWHERE:
        import importlib

        return getattr(importlib.import_module(f".{_ELSEWHERE[name]}", __package__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
