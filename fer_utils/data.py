"""Face data sets: the FaceSet container, real data-set loaders and tf.data pipelines."""

from __future__ import annotations

import csv
import dataclasses
import re
import warnings
from pathlib import Path

import cv2
import numpy as np

# FER2013's class order (its `emotion` column): the order of every expression label in the kit.
EXPRESSIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
# The 12 action units annotated in BP4D (and EAC-Net's evaluation), in this order everywhere.
BP4D_AUS = (1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24)
AU_NAMES = tuple(f"AU{n}" for n in BP4D_AUS)
# An AU counts as present (occurrence label) from FACS intensity A = 1 upwards (scale 0-5).
AU_PRESENT_THRESHOLD = 1.0


@dataclasses.dataclass
class FaceSet:
    """Faces with their labels, kept as uint8 so that big sets stay small in memory.

    Attributes:
        images: uint8 array N×H×W×C (C = 1 grey or 3 RGB).
        labels: int64 array N of expression indices into `class_names`.
        class_names: names of the classes, in label order.
        aus: optional float32 N×len(au_names) AU intensities on FACS' 0-5 scale (0 = absent).
        au_names: names of the AU columns.
        landmarks: optional float32 N×68×2 (x, y) pixel coordinates in dlib's 68-point order.
        intensity: optional float32 N expression intensity in [0, 1] (0 = neutral).
        split: optional array N of "train" / "val" / "test" (e.g. FER2013's Usage column).
        source: a short description of where the faces came from.
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple = EXPRESSIONS
    aus: np.ndarray | None = None
    au_names: tuple = AU_NAMES
    landmarks: np.ndarray | None = None
    intensity: np.ndarray | None = None
    split: np.ndarray | None = None
    source: str = ""

    def __post_init__(self):
        """Check shapes and dtypes so that a bad set fails here, not deep inside training."""
        self.images = np.asarray(self.images)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        self.class_names = tuple(self.class_names)
        self.au_names = tuple(self.au_names)
        if self.images.dtype != np.uint8:
            raise TypeError(f"FaceSet.images must be uint8, got {self.images.dtype}")
        if self.images.ndim == 3:
            self.images = self.images[..., None]
        if self.images.ndim != 4 or self.images.shape[-1] not in (1, 3):
            raise ValueError(f"FaceSet.images must be N×H×W×C with C in (1, 3), "
                             f"got shape {self.images.shape}")
        n = len(self.images)
        if len(self.labels) != n:
            raise ValueError(f"FaceSet has {n} images but {len(self.labels)} labels")
        if n and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise ValueError(f"FaceSet labels must lie in 0..{len(self.class_names) - 1} "
                             f"({len(self.class_names)} classes), got {self.labels.min()}.."
                             f"{self.labels.max()}")
        if self.aus is not None:
            self.aus = np.asarray(self.aus, dtype=np.float32)
            if self.aus.shape != (n, len(self.au_names)):
                raise ValueError(f"FaceSet.aus must be {n}×{len(self.au_names)}, "
                                 f"got {self.aus.shape}")
        if self.landmarks is not None:
            self.landmarks = np.asarray(self.landmarks, dtype=np.float32)
            if self.landmarks.shape != (n, 68, 2):
                raise ValueError(f"FaceSet.landmarks must be {n}×68×2, got {self.landmarks.shape}")
        if self.intensity is not None:
            self.intensity = np.asarray(self.intensity, dtype=np.float32).reshape(-1)
            if len(self.intensity) != n:
                raise ValueError(f"FaceSet.intensity must have {n} values, "
                                 f"got {len(self.intensity)}")
        if self.split is not None:
            self.split = np.asarray(self.split).astype(str)
            if len(self.split) != n:
                raise ValueError(f"FaceSet.split must have {n} values, got {len(self.split)}")

    def __len__(self) -> int:
        """Number of faces."""
        return len(self.images)

    def __repr__(self) -> str:
        """A one-line summary (shape, classes, which optional labels are present)."""
        extras = [name for name in ("aus", "landmarks", "intensity", "split")
                  if getattr(self, name) is not None]
        return (f"FaceSet({len(self)} faces {self.images.shape[1]}×{self.images.shape[2]}×"
                f"{self.images.shape[3]}, {len(self.class_names)} classes, "
                f"with: {', '.join(extras) or 'labels only'}, source: {self.source or '?'})")

    @property
    def num_classes(self) -> int:
        """Number of expression classes."""
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple:
        """(H, W, C) of one image."""
        return tuple(self.images.shape[1:])

    @property
    def au_present(self) -> np.ndarray | None:
        """uint8 N×num_aus occurrence labels (intensity ≥ FACS A), or None without AUs."""
        if self.aus is None:
            return None
        return (self.aus >= AU_PRESENT_THRESHOLD).astype(np.uint8)

    def class_counts(self) -> np.ndarray:
        """Number of faces per class, in class order."""
        return np.bincount(self.labels, minlength=self.num_classes)

    def subset(self, index) -> "FaceSet":
        """A new FaceSet with the faces selected by `index` (indices or a boolean mask)."""
        index = np.asarray(index)
        take = (lambda a: None if a is None else a[index])
        return FaceSet(images=self.images[index], labels=self.labels[index],
                       class_names=self.class_names, aus=take(self.aus), au_names=self.au_names,
                       landmarks=take(self.landmarks), intensity=take(self.intensity),
                       split=take(self.split), source=self.source)


# =============================================================================================
# Errors, warnings and small helpers
# =============================================================================================

# FER2013's Usage column ↔ the kit's split names.
USAGE_TO_SPLIT = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
SPLIT_TO_USAGE = {v: k for k, v in USAGE_TO_SPLIT.items()}
FER2013_SIZE = 48
# ImageNet channel means that keras.applications.vgg16.preprocess_input subtracts (RGB order).
VGG_MEAN_RGB = (123.68, 116.779, 103.939)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".jpe", ".bmp", ".dib", ".tif", ".tiff", ".webp",
                    ".gif", ".pgm", ".ppm", ".pbm", ".pnm")
TARGETS = ("label", "onehot", "aus", "label+intensity")
PREPROCESS = ("scale", "vgg", None)
# How many bad lines/files a warning lists with their reasons (the rest are named by number).
_MAX_REASONS = 50


class DataError(ValueError):
    """A data file or folder holds something the kit cannot load (strict mode, nothing usable)."""


class DataWarning(UserWarning):
    """Some rows or files of a data set were skipped; the message names each one and why."""


def _problem_report(path, problems: list, what: str) -> str:
    """One message naming every bad line/file: the first ones with reasons, the rest by name."""
    head = [f"{where}: {why}" for where, why in problems[:_MAX_REASONS]]
    text = f"{path}: {len(problems)} {what} skipped:\n  " + "\n  ".join(head)
    if len(problems) > _MAX_REASONS:
        text += "\n  and also " + ", ".join(where for where, _ in problems[_MAX_REASONS:])
    return text


def _report(path, problems: list, what: str, strict: bool) -> None:
    """Raise (strict) or warn once about the skipped rows/files in `problems`."""
    if not problems:
        return
    message = _problem_report(path, problems, what)
    if strict:
        raise DataError(message.replace(" skipped:", " found (strict=True):", 1))
    warnings.warn(message, DataWarning, stacklevel=3)


def _check_path(path, kind: str = "file") -> Path:
    """Return `path` as a Path, or raise FileNotFoundError / a clear error naming it."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{kind} not found: {path}")
    if kind == "file" and not path.is_file():
        raise DataError(f"expected a file, but {path} is a folder")
    if kind == "folder" and not path.is_dir():
        raise DataError(f"expected a folder with one sub-folder per class, but {path} is a file")
    return path


def _text_csv(loader):
    """Turn a CSV loader's decoding error into a DataError naming the file."""
    import functools

    @functools.wraps(loader)
    def wrapper(path, *args, **kwargs):
        try:
            return loader(path, *args, **kwargs)
        except UnicodeDecodeError as error:
            raise DataError(f"{path}: not a UTF-8 text CSV ({error.reason})") from None
        except csv.Error as error:
            raise DataError(f"{path}: not a readable CSV ({error})") from None

    return wrapper


def _to_grey_or_rgb(image: np.ndarray, channels: int) -> np.ndarray:
    """Convert an H×W[×C] uint8 RGB/grey image to `channels` (1 or 3), keeping H×W×C."""
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] == channels:
        return image
    if channels == 1:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None]
    return np.repeat(image, 3, axis=-1)


# =============================================================================================
# Normalisation helpers
# =============================================================================================

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
            average of the three), or an
            array broadcastable to the images (a mean image or per-channel means).

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


# =============================================================================================
# FER2013 (Kaggle CSV: emotion,pixels,Usage)
# =============================================================================================

@_text_csv
def load_fer2013(path, strict: bool = False, max_rows: int | None = None,
                 progress: bool = True) -> FaceSet:
    """Read the Kaggle FER2013 CSV (`emotion,pixels[,Usage]`) into a 48×48×1 FaceSet.

    Args:
        path: the CSV file (e.g. data/fer2013.csv).
        strict: raise DataError on the first pass over a malformed file instead of skipping the
            bad rows (wrong pixel count, non-numeric or out-of-range value, label out of range,
            missing columns, unknown Usage).
        max_rows: read at most this many data rows (None: all).
        progress: show a progress bar for big files (the full FER2013 takes a few seconds).

    Returns:
        FaceSet with FER2013's class names; `split` holds train/val/test from Usage
        (Training/PublicTest/PrivateTest) when the column is there. Skipped rows are reported in
        one DataWarning naming each as `line N` (1-based; the header is line 1).
    """
    path = _check_path(path)
    n_pixels = FER2013_SIZE * FER2013_SIZE
    images, labels, splits, problems = [], [], [], []
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path} is empty: expected a header 'emotion,pixels,Usage'")
        names = [h.strip().lower() for h in header]
        missing = [c for c in ("emotion", "pixels") if c not in names]
        if missing:
            raise DataError(f"{path}: header {header} lacks the column(s) {missing}; a FER2013 "
                            f"CSV has 'emotion,pixels,Usage'")
        i_label, i_pixels = names.index("emotion"), names.index("pixels")
        i_usage = names.index("usage") if "usage" in names else None
        n_fields = len(names)
        rows = reader
        if progress and path.stat().st_size > 20 * 2**20:
            from tqdm.auto import tqdm

            rows = tqdm(reader, desc=f"reading {path.name}", unit=" rows", mininterval=0.5)
        for row in rows:
            line = reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            if max_rows is not None and len(labels) >= max_rows:
                break
            if len(row) < n_fields:
                problems.append((f"line {line}", f"{len(row)} field(s), expected {n_fields} "
                                 f"({','.join(header)})"))
                continue
            raw_label = row[i_label].strip()
            try:
                label = int(raw_label)
            except ValueError:
                problems.append((f"line {line}", f"emotion {raw_label!r} is not an integer"))
                continue
            if not 0 <= label < len(EXPRESSIONS):
                problems.append((f"line {line}", f"emotion {label} is out of range "
                                 f"0..{len(EXPRESSIONS) - 1}"))
                continue
            split = None
            if i_usage is not None:
                usage = row[i_usage].strip()
                split = USAGE_TO_SPLIT.get(usage, usage.lower() if usage.lower() in
                                           SPLIT_TO_USAGE else None)
                if split is None:
                    problems.append((f"line {line}", f"Usage {usage!r} is not one of "
                                     f"{', '.join(USAGE_TO_SPLIT)}"))
                    continue
            try:
                pixels = np.fromstring(row[i_pixels], dtype=np.int64, sep=" ")
            except ValueError:
                bad = next((t for t in row[i_pixels].split() if not t.isdigit()), "?")
                problems.append((f"line {line}", f"pixels hold a non-numeric value {bad[:20]!r}"))
                continue
            if pixels.size != n_pixels:
                problems.append((f"line {line}", f"{pixels.size} pixel values, expected "
                                 f"{n_pixels} (48×48)"))
                continue
            if pixels.min() < 0 or pixels.max() > 255:
                bad = pixels[(pixels < 0) | (pixels > 255)][0]
                problems.append((f"line {line}", f"pixel value {bad} is outside 0..255"))
                continue
            images.append(pixels.astype(np.uint8))
            labels.append(label)
            splits.append(split)
    _report(path, problems, "malformed row(s)", strict)
    if not labels:
        raise DataError(f"{path}: no usable row (a FER2013 CSV has 'emotion,pixels,Usage' and "
                        f"48×48 = 2304 pixel values per row)")
    images = np.stack(images).reshape(-1, FER2013_SIZE, FER2013_SIZE, 1)
    return FaceSet(images=images, labels=np.array(labels), class_names=EXPRESSIONS,
                   split=None if i_usage is None else np.array(splits),
                   source=f"fer2013:{path}")


def _fer2013_labels(fs: FaceSet) -> np.ndarray:
    """Labels of `fs` as FER2013 emotion indices (class names mapped by name when they differ)."""
    if fs.class_names == EXPRESSIONS:
        return fs.labels
    lower = [c.lower() for c in fs.class_names]
    if all(c in EXPRESSIONS for c in lower):
        return np.array([EXPRESSIONS.index(c) for c in lower])[fs.labels]
    if fs.num_classes <= len(EXPRESSIONS):
        warnings.warn(f"write_fer2013_csv: class names {fs.class_names} are not FER2013's "
                      f"{EXPRESSIONS}; writing the label indices as they are", DataWarning,
                      stacklevel=3)
        return fs.labels
    raise ValueError(f"write_fer2013_csv: FER2013 has {len(EXPRESSIONS)} emotions, this set has "
                     f"{fs.num_classes} classes {fs.class_names}")


def write_fer2013_csv(fs: FaceSet, path) -> Path:
    """Write any FaceSet in Kaggle FER2013 format (grey, 48×48; `split` written as Usage).

    Args:
        fs: the faces; RGB is converted to grey and other sizes are resized to 48×48.
        path: the CSV file to write (folders are created).

    Returns:
        The path written.
    """
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    labels = _fer2013_labels(fs)
    if fs.split is not None:
        unknown = sorted(set(np.unique(fs.split)) - set(SPLIT_TO_USAGE))
        if unknown:
            raise ValueError(f"write_fer2013_csv: split values {unknown} have no FER2013 Usage; "
                             f"allowed: {sorted(SPLIT_TO_USAGE)}")
    numbers = [str(v) for v in range(256)]
    with open(path, "w", newline="") as handle:
        handle.write("emotion,pixels,Usage\n")
        for start in range(0, len(fs), 1024):
            block = fs.images[start:start + 1024]
            if block.shape[-1] == 3:
                block = np.stack([cv2.cvtColor(im, cv2.COLOR_RGB2GRAY) for im in block])[..., None]
            block = resize_images(block, FER2013_SIZE).reshape(len(block), -1)
            lines = []
            for offset, row in enumerate(block):
                i = start + offset
                usage = "Training" if fs.split is None else SPLIT_TO_USAGE[fs.split[i]]
                pixels = " ".join([numbers[v] for v in row.tolist()])
                lines.append(f"{labels[i]},{pixels},{usage}\n")
            handle.write("".join(lines))
    return path


# =============================================================================================
# Subsets and splits
# =============================================================================================

def _allocate(counts: np.ndarray, total: int) -> np.ndarray:
    """Share `total` out over groups in proportion to `counts` (largest remainder, ≥1 each)."""
    share = counts / counts.sum() * total
    take = np.floor(share).astype(int)
    take = np.minimum(np.maximum(take, (counts > 0) & (total >= np.count_nonzero(counts))), counts)
    while take.sum() < total:
        room = np.where(take < counts, share - take, -np.inf)
        take[int(np.argmax(room))] += 1
    while take.sum() > total:
        take[int(np.argmax(np.where(take > 1, take - share, -np.inf)))] -= 1
    return take


def stratified_subsample(fs: FaceSet, n: int | None, seed: int = 0) -> FaceSet:
    """At most `n` faces with the class (and split) proportions of `fs`; None or n ≥ len: all."""
    if n is None or n >= len(fs):
        return fs
    if n < 1:
        raise ValueError(f"stratified_subsample: n must be ≥ 1 (or None for all), got {n}")
    keys = fs.labels.astype(str) if fs.split is None else np.char.add(
        fs.labels.astype(str), np.char.add("/", fs.split))
    groups, inverse = np.unique(keys, return_inverse=True)
    counts = np.bincount(inverse, minlength=len(groups))
    take = _allocate(counts, n)
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(inverse == g), size=k, replace=False)
              for g, k in enumerate(take) if k]
    return fs.subset(np.sort(np.concatenate(chosen)))


def _stratified_indices(labels, fraction: float, seed: int):
    """Split indices 0..N-1 into (rest, part) with `fraction` in part, stratified when possible."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    if fraction <= 0:
        return index, index[:0]
    counts = np.bincount(labels)
    stratify = labels if counts[counts > 0].min() >= 2 else None
    try:
        return train_test_split(index, test_size=fraction, random_state=seed, stratify=stratify)
    except ValueError:  # a part smaller than the number of classes: fall back to a random split
        pass
    try:
        return train_test_split(index, test_size=fraction, random_state=seed, stratify=None)
    except ValueError:
        raise ValueError(f"split: {len(index)} face(s) are too few to take a {fraction:.3g} "
                         f"part out and keep some for training; use more faces or val=0, "
                         f"test=0") from None


def _with_split(fs: FaceSet, name: str) -> FaceSet:
    fs.split = np.full(len(fs), name)
    return fs


def split(fs: FaceSet, val: float = 0.1, test: float = 0.1, seed: int = 0):
    """Stratified train/val/test split; a set's own `split` column (FER2013 Usage) is kept.

    Args:
        fs: the faces.
        val: fraction for validation (0 ≤ val < 1).
        test: fraction for testing (0 ≤ test, val + test < 1).
        seed: random seed of the split.

    Returns:
        (train, val, test) FaceSets, each with its `split` set. When `fs.split` exists, its
        train/val/test rows are used; a missing val (or test) part is carved out of train.
    """
    for name, value in (("val", val), ("test", test)):
        if not 0 <= value < 1:
            raise ValueError(f"split: {name}={value!r} must be a fraction in [0, 1)")
    if val + test >= 1:
        raise ValueError(f"split: val + test = {val + test} leaves nothing to train on")
    if len(fs) == 0:
        raise ValueError("split: the FaceSet is empty")
    if fs.split is not None and "train" in set(fs.split):
        parts = {name: np.flatnonzero(fs.split == name) for name in ("train", "val", "test")}
        train_idx = parts["train"]
        for name, fraction in (("test", test), ("val", val)):
            if len(parts[name]) == 0 and fraction > 0:
                share = fraction / (1 - (test if name == "val" and len(parts["test"]) == 0
                                         else 0))
                keep, part = _stratified_indices(fs.labels[train_idx], share, seed)
                parts[name], train_idx = train_idx[np.sort(part)], train_idx[np.sort(keep)]
        parts["train"] = train_idx
    else:
        rest, test_idx = _stratified_indices(fs.labels, test, seed)
        keep, val_idx = _stratified_indices(fs.labels[rest], val / (1 - test), seed + 1) \
            if val > 0 else (np.arange(len(rest)), np.arange(0))
        parts = {"train": np.sort(rest[keep]), "val": np.sort(rest[val_idx]),
                 "test": np.sort(test_idx)}
    return tuple(_with_split(fs.subset(parts[name]), name) for name in ("train", "val", "test"))


def summary(fs: FaceSet, *more: FaceSet):
    """Faces per class (rows) and split (columns), with totals, as a pandas DataFrame.

    Several sets (e.g. the train, val, test parts of `split`) are counted together.
    """
    import pandas as pd

    sets = (fs, *more)
    for other in more:
        if other.class_names != fs.class_names:
            raise ValueError(f"summary: the sets have different classes: {fs.class_names} vs "
                             f"{other.class_names}")
    labels = np.concatenate([s.labels for s in sets])
    split_col = np.concatenate([s.split if s.split is not None else np.full(len(s), "all")
                                for s in sets])
    frame = pd.crosstab(pd.Categorical(np.array(fs.class_names)[labels],
                                       categories=fs.class_names),
                        pd.Series(split_col, name="split"), dropna=False)
    order = [c for c in ("train", "val", "test") if c in frame.columns]
    frame = frame[order + [c for c in frame.columns if c not in order]]
    frame.index.name = "class"
    frame.columns = list(frame.columns)
    if frame.shape[1] > 1:
        frame["total"] = frame.sum(axis=1)
    return frame


def class_balance(fs: FaceSet):
    """Faces per class as a pandas DataFrame: count, fraction, and ratio to the largest class."""
    import pandas as pd

    counts = fs.class_counts()
    return pd.DataFrame({"count": counts, "fraction": counts / max(counts.sum(), 1),
                         "ratio_to_largest": counts / max(counts.max(), 1)},
                        index=pd.Index(fs.class_names, name="class"))


# =============================================================================================
# load_dataset: one call for every FER_DATASET value
# =============================================================================================

def load_dataset(spec: str | None = None, profile=None, settings=None, seed: int | None = None,
                 progress: bool = True) -> FaceSet:
    """Load the data set named by `spec` (a FER_DATASET value), subsampled to the profile.

    Args:
        spec: "synthetic", "fer2013", "fer2013:PATH", "folder:PATH" or "au-csv:PATH"; default:
            the `FER_DATASET` setting.
        profile: a Profile or profile name ("ci", "laptop", "full"); default: the setting.
        settings: Settings to take the defaults from; default: `get_settings()`.
        seed: seed for rendering and subsampling; default: the settings' seed.
        progress: show progress bars while rendering/reading.

    Returns:
        FaceSet with at most `profile.num_images` faces (stratified by class and split).
    """
    from . import config

    if settings is None:
        settings = config.get_settings()
    if profile is None:
        profile = settings.profile
    elif isinstance(profile, str):
        profile = config.parse_profile(profile, variable="profile")
    seed = settings.seed if seed is None else int(seed)
    spec = settings.dataset if spec is None else config.parse_dataset(
        str(spec), settings.data_dir, variable="spec")
    kind, _, path = spec.partition(":")
    if kind == "synthetic":
        from . import synth

        fs = synth.make_dataset(profile.synthetic_size, seed=seed, size=48, channels=1,
                                data_dir=settings.data_dir, progress=progress)
    elif kind == "fer2013":
        fs = load_fer2013(path, progress=progress)
    elif kind == "folder":
        fs = load_image_folder(path, size=profile.image_size, progress=progress)
    else:  # au-csv (parse_dataset allows nothing else)
        fs = load_au_csv(path, size=profile.image_size, progress=progress)
    return stratified_subsample(fs, profile.num_images, seed=seed)


# =============================================================================================
# tf.data pipelines: uint8 in memory, float per batch
# =============================================================================================

def _attention_inputs(landmarks, height: int, width: int):
    """(maps B×H×W×1, centres B×20×2 in [0, 1]) from B×68×2 landmarks (fer_utils.attention)."""
    import tensorflow as tf

    from . import attention

    maps, centers = attention.tf_attention_inputs(landmarks, height, width)  # runs in tf.data
    maps = tf.reshape(tf.cast(maps, tf.float32), [-1, height, width, 1])
    centers = tf.reshape(tf.cast(centers, tf.float32), [-1, 20, 2])
    return maps, centers


def to_tf_dataset(fs: FaceSet, batch_size: int = 32, shuffle: bool = True, seed: int | None = None,
                  image_size=None, channels: int | None = None, target: str = "label",
                  augment: bool = False, balanced: bool = False, preprocess: str | None = "scale",
                  attention: bool = False, repeat: bool = False, drop_remainder: bool = False):
    """A tf.data.Dataset of (x, y) batches that keeps the faces uint8 until each batch is built.

    Args:
        fs: the faces.
        batch_size: faces per batch.
        shuffle: reshuffle the order every epoch.
        seed: seed of shuffling, balanced sampling and augmentation (None: not reproducible).
        image_size: output size (int or (height, width)); default: the set's own size.
        channels: 1 (grey) or 3 (RGB); default: the set's own.
        target: "label" (int32), "onehot" (float32 B×K), "aus" (float32 0/1 B×num_aus) or
            "label+intensity" ({"expression": int32, "intensity": float32}).
        augment: random augmentation per batch via `fer_utils.augment.tf_random_augment`
            (landmarks move with the image).
        balanced: draw every batch evenly across the classes (infinite: give steps_per_epoch).
        preprocess: "scale" (0-1), "vgg" (RGB→BGR minus ImageNet means, as
            keras.applications.vgg16.preprocess_input) or None (float 0-255).
        attention: x becomes {"image", "attention" B×H×W×1, "centers" B×20×2 in [0, 1]} from
            the (augmented, resized) landmarks via `fer_utils.attention`.
        repeat: repeat forever (balanced sets always repeat).
        drop_remainder: drop the last, smaller batch.

    Returns:
        tf.data.Dataset of (x, y) batches, prefetched.
    """
    import tensorflow as tf

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

    src_h, src_w, src_c = fs.image_shape
    images_t = tf.constant(fs.images)  # the uint8 faces: the only full copy in TF memory
    labels_t = tf.constant(fs.labels.astype(np.int32))
    landmarks_t = None if fs.landmarks is None else tf.constant(fs.landmarks)
    aus_t = None if fs.aus is None else tf.constant(fs.au_present.astype(np.float32))
    intensity_t = None if fs.intensity is None else tf.constant(fs.intensity)
    n, num_classes = len(fs), fs.num_classes

    if balanced:
        present = [c for c in range(num_classes) if np.any(fs.labels == c)]
        per_class = []
        for k, c in enumerate(present):
            ds_c = tf.data.Dataset.from_tensor_slices(np.flatnonzero(fs.labels == c))
            ds_c = ds_c.shuffle(int(np.sum(fs.labels == c)), seed=None if seed is None
                                else seed + 1 + k, reshuffle_each_iteration=True)
            per_class.append(ds_c.repeat())
        # A shuffled round-robin over the classes: every run of K draws holds each class once.
        choice = tf.data.Dataset.range(len(present)).shuffle(
            len(present), seed=seed, reshuffle_each_iteration=True).repeat()
        index = tf.data.Dataset.choose_from_datasets(per_class, choice)
    else:
        index = tf.data.Dataset.range(n)
        if shuffle:
            index = index.shuffle(n, seed=seed, reshuffle_each_iteration=True)
        if repeat:
            index = index.repeat()
    index = index.batch(batch_size, drop_remainder=drop_remainder)

    augment_fn = None
    if augment:
        from .augment import tf_random_augment as augment_fn

    mean_bgr = tf.constant(VGG_MEAN_RGB[::-1], tf.float32)

    def make_batch(idx, batch_seed=None):
        idx = tf.cast(idx, tf.int32)
        x = tf.cast(tf.gather(images_t, idx), tf.float32)
        points = None if landmarks_t is None else tf.gather(landmarks_t, idx)
        if augment_fn is not None:
            x, new_points = augment_fn(x, points, seed=batch_seed)
            points = points if new_points is None else new_points
            x = tf.ensure_shape(x, [None, src_h, src_w, src_c])
        if (height, width) != (src_h, src_w):
            x = tf.image.resize(x, (height, width), method="bilinear")
            if points is not None:
                points = points * tf.constant([width / src_w, height / src_h], tf.float32)
        if channels != src_c:
            x = tf.image.grayscale_to_rgb(x) if channels == 3 else tf.image.rgb_to_grayscale(x)
        x = tf.clip_by_value(x, 0.0, 255.0)
        if preprocess == "scale":
            x = x / 255.0
        elif preprocess == "vgg":
            x = (x[..., ::-1] - mean_bgr) if channels == 3 else x - tf.reduce_mean(mean_bgr)
        if attention:
            maps, centers = _attention_inputs(points, height, width)
            x = {"image": x, "attention": maps, "centers": centers}
        y_label = tf.gather(labels_t, idx)
        if target == "label":
            y = y_label
        elif target == "onehot":
            y = tf.one_hot(y_label, num_classes, dtype=tf.float32)
        elif target == "aus":
            y = tf.gather(aus_t, idx)
        else:
            y = {"expression": y_label, "intensity": tf.gather(intensity_t, idx)}
        return x, y

    if augment and seed is not None:
        # A fresh stateless seed per batch (and per epoch): reproducible, never repeating.
        batch_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).map(
            lambda r: tf.stack([tf.constant(seed, tf.int64), r]))
        index = tf.data.Dataset.zip(index, batch_seeds)
    # Batches keep their order unless the order is random anyway (unseeded shuffling): an
    # unshuffled set must line up with its labels, e.g. for model.predict.
    random_order = (shuffle or balanced) and seed is None
    ds = index.map(make_batch, num_parallel_calls=tf.data.AUTOTUNE,
                   deterministic=not random_order)
    return ds.prefetch(tf.data.AUTOTUNE)


# =============================================================================================
# Image files: reading with integrity checks, fitting to the kit's size
# =============================================================================================

class _BadImage(Exception):
    """An image file that cannot be used; the message says why."""


def _sniff(data: bytes) -> str | None:
    """The image format from the file's first bytes, or None when it is not an image."""
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data[:2] == b"BM":
        return "BMP"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if len(data) > 2 and data[:1] == b"P" and data[1:2] in b"123456" and data[2:3].isspace():
        return "PNM"
    return None


def _check_complete(data: bytes, kind: str) -> None:
    """Raise _BadImage when the file is cut short (decoders often fill the rest with grey)."""
    tail = data.rstrip(b"\x00\r\n\t ")
    if kind == "JPEG" and not tail.endswith(b"\xff\xd9"):
        raise _BadImage("truncated JPEG (no end-of-image marker FFD9)")
    if kind == "PNG" and b"IEND" not in data[-64:]:
        raise _BadImage("truncated PNG (no IEND chunk)")
    if kind == "GIF" and not tail.endswith(b";"):
        raise _BadImage("truncated GIF (no trailer)")
    if kind == "WEBP" and int.from_bytes(data[4:8], "little") + 8 > len(data):
        raise _BadImage("truncated WebP (shorter than its RIFF header says)")
    if kind == "BMP" and len(data) >= 6 and int.from_bytes(data[2:6], "little") > len(data):
        raise _BadImage("truncated BMP (shorter than its header says)")


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """Any decoded dtype (uint16, float, bool, ...) → uint8 on the 0-255 scale."""
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if image.dtype == bool:
        return image.astype(np.uint8) * 255
    image = image.astype(np.float64)
    if np.issubdtype(image.dtype, np.floating) and np.nanmax(image) <= 1.0:
        image = image * 255.0
    return np.clip(np.nan_to_num(image), 0, 255).round().astype(np.uint8)


def _decode_pil(data: bytes) -> np.ndarray:
    """Decode with Pillow (fully, so truncation raises) into an RGB / RGBA / grey array."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image.load()
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            return np.array(image).astype(np.uint16 if image.mode.startswith("I;16") else np.int32)
        modes = {"1": "L", "L": "L", "LA": "RGBA", "P": "RGBA", "RGBA": "RGBA"}
        mode = modes.get(image.mode, "RGB")
        return np.array(image.convert(mode))


def read_image(path, channels: int = 3) -> np.ndarray:
    """Read one image file (any common type, grey/RGB/RGBA, 8/16-bit) as uint8 H×W×channels.

    Transparent pixels are composited over white; a JPEG's EXIF rotation is applied. Raises
    FileNotFoundError for a missing file and DataError naming the file and the reason for a
    non-image, truncated or undecodable one.
    """
    if channels not in (1, 3):
        raise ValueError(f"read_image: channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    path = _check_path(path)
    try:
        return _read_image(path, channels)
    except _BadImage as error:
        raise DataError(f"{path}: {error}") from None


def _read_image(path, channels: int) -> np.ndarray:
    """`read_image` without the argument checks; raises _BadImage with the reason."""
    data = Path(path).read_bytes()
    if not data:
        raise _BadImage("empty file")
    kind = _sniff(data)
    if kind is None:
        raise _BadImage("not an image (unrecognised content)")
    _check_complete(data, kind)
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        # JPEGs have no alpha but may carry an EXIF rotation, which IMREAD_UNCHANGED ignores.
        flags = (cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH) if kind == "JPEG" else \
            cv2.IMREAD_UNCHANGED
        image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error:
        image = None
    finally:
        cv2.utils.logging.setLogLevel(level)
    rgb_order = False
    if image is None or image.size == 0:
        try:
            image, rgb_order = _decode_pil(data), True
        except Exception as error:  # Pillow raises many types for broken files
            raise _BadImage(f"unreadable {kind} ({type(error).__name__}: {error})") from None
    image = _to_uint8(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 3 and image.shape[2] == 2:  # grey + alpha
        image = np.dstack([image[..., 0]] * 3 + [image[..., 1]])
        rgb_order = True
    if image.ndim == 3 and image.shape[2] == 4:
        alpha = image[..., 3:4].astype(np.float32) / 255.0
        image = (image[..., :3] * alpha + 255.0 * (1 - alpha)).round().astype(np.uint8)
    if image.ndim == 3 and not rgb_order:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if image.ndim != 2 and not (image.ndim == 3 and image.shape[2] == 3):
        raise _BadImage(f"unsupported image layout {image.shape}")
    if min(image.shape[:2]) < 1:
        raise _BadImage("image has no pixels")
    return _to_grey_or_rgb(image, channels)


def _fit_image(image: np.ndarray, size: int, fit: str = "crop"):
    """Fit an H×W×C image to size×size; return it and (scale_x, scale_y, off_x, off_y) so that
    a point (x, y) of the original lands at ((x - off_x) * scale_x, (y - off_y) * scale_y)."""
    h, w = image.shape[:2]
    off_x = off_y = 0
    if fit == "crop" and h != w:
        side = min(h, w)
        off_x, off_y = (w - side) // 2, (h - side) // 2
        image = image[off_y:off_y + side, off_x:off_x + side]
        h = w = side
    if (h, w) != (size, size):
        interp = cv2.INTER_AREA if size < min(h, w) else cv2.INTER_LINEAR
        image = cv2.resize(image, (size, size), interpolation=interp).reshape(
            size, size, image.shape[-1])
    return image, (size / w, size / h, off_x, off_y)


def _check_loader_args(size, channels, fit):
    if not isinstance(size, (int, np.integer)) or size < 8:
        raise ValueError(f"size must be an integer ≥ 8 (pixels), got {size!r}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    if fit not in ("crop", "stretch"):
        raise ValueError(f"fit must be 'crop' (centre square) or 'stretch', got {fit!r}")


def _class_order(names) -> tuple:
    """Class names in FER2013 order when they are FER2013 expressions, else sorted."""
    lower = [str(n).lower() for n in names]
    if lower and all(n in EXPRESSIONS for n in lower):
        return tuple(sorted(set(lower), key=EXPRESSIONS.index))
    return tuple(sorted(set(str(n) for n in names)))


def _visible(path: Path, root: Path) -> bool:
    return not any(part.startswith((".", "__")) for part in path.relative_to(root).parts)


def load_image_folder(path, size: int = 48, channels: int = 1, strict: bool = False,
                      fit: str = "crop", progress: bool = True) -> FaceSet:
    """Read a folder with one sub-folder of images per class into a FaceSet.

    Args:
        path: the folder (e.g. data/my_faces with angry/, happy/, ... inside).
        size: output size in pixels (square).
        channels: 1 (grey) or 3 (RGB).
        strict: raise DataError for any bad file or empty class folder instead of skipping it.
        fit: "crop" (centre square, then resize) or "stretch" (resize the whole image).
        progress: show a progress bar for big folders.

    Returns:
        FaceSet; class names are the sub-folder names (in FER2013 order when they are FER2013's
        expressions, else sorted). Non-image, unreadable and truncated files are skipped and
        named in one DataWarning; empty class folders in another.
    """
    _check_loader_args(size, channels, fit)
    root = _check_path(path, "folder")
    entries = sorted(p for p in root.iterdir() if _visible(p, root))
    class_dirs = [p for p in entries if p.is_dir()]
    problems = [(p.name, "not inside a class sub-folder") for p in entries if p.is_file()]
    if not class_dirs:
        raise DataError(f"{root} has no class sub-folders: expected one sub-folder of images per "
                        f"class (e.g. {root}/happy/001.png)")
    files = {d.name: sorted(p for p in d.rglob("*") if p.is_file() and _visible(p, root))
             for d in class_dirs}
    order = _class_order(files)
    lookup = {n.lower() if order[0] in EXPRESSIONS else n: n for n in files}
    if len(lookup) < len(files):
        same = sorted(n for n in files if sum(m.lower() == n.lower() for m in files) > 1)
        raise DataError(f"{root}: class folders {', '.join(f'{n}/' for n in same)} differ only "
                        f"in case and would be merged: rename or join them")
    jobs = [(p, k) for k, name in enumerate(order) for p in files[lookup[name]]]
    images, labels, used = [], [], np.zeros(len(order), dtype=int)
    bar = jobs
    if progress and len(jobs) > 2000:
        from tqdm.auto import tqdm

        bar = tqdm(jobs, desc=f"reading {root.name}", unit="img")
    for file, k in bar:
        try:
            image = _read_image(file, channels)
        except _BadImage as error:
            problems.append((str(file.relative_to(root)), str(error)))
            continue
        except OSError as error:
            problems.append((str(file.relative_to(root)), f"cannot read ({error.strerror})"))
            continue
        images.append(_fit_image(image, size, fit)[0])
        labels.append(k)
        used[k] += 1
    _report(root, problems, "file(s)", strict)
    empty = [lookup[name] for k, name in enumerate(order) if used[k] == 0]
    if empty:
        message = (f"{root}: {len(empty)} class folder(s) without a usable image skipped: "
                   + ", ".join(f"{name}/" for name in empty))
        if strict:
            raise DataError(message)
        warnings.warn(message, DataWarning, stacklevel=2)
    if not images:
        raise DataError(f"{root}: no usable image in any class sub-folder")
    keep = [k for k in range(len(order)) if used[k]]
    remap = np.full(len(order), -1)
    remap[keep] = np.arange(len(keep))
    return FaceSet(images=np.stack(images), labels=remap[np.array(labels)],
                   class_names=tuple(order[k] for k in keep), source=f"folder:{root}")


def write_image_folder(fs: FaceSet, path, ext: str = "png") -> Path:
    """Write a FaceSet as one sub-folder per class (`path/<class>/<index>.<ext>`); returns path."""
    root = Path(path).expanduser()
    ext = ext.lower().lstrip(".")
    if f".{ext}" not in IMAGE_EXTENSIONS:
        raise ValueError(f"write_image_folder: ext={ext!r} is not one of "
                         f"{', '.join(e.lstrip('.') for e in IMAGE_EXTENSIONS)}")
    for name in fs.class_names:
        (root / name).mkdir(parents=True, exist_ok=True)
    for i, (image, label) in enumerate(zip(fs.images, fs.labels)):
        out = image[..., 0] if image.shape[-1] == 1 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        file = root / fs.class_names[label] / f"{i:06d}.{ext}"
        if not cv2.imwrite(str(file), out):
            raise OSError(f"write_image_folder: OpenCV could not write {file}")
    return root


# =============================================================================================
# AU-labelled sets: CSV with image paths, AU columns and optional landmarks
# =============================================================================================

_IMAGE_COLUMNS = ("image", "image_path", "path", "file", "filename", "img")
_LABEL_COLUMNS = ("expression", "label", "emotion", "class")
_AU_COLUMN = re.compile(r"^au[\s_-]*\d+", re.IGNORECASE)


def _find_column(names, candidates, given, what, path, required):
    lower = [n.strip().lower() for n in names]
    if given is not None:
        if given.strip().lower() not in lower:
            raise DataError(f"{path}: no {what} column {given!r}; the header is {list(names)}")
        return lower.index(given.strip().lower())
    for candidate in candidates:
        if candidate in lower:
            return lower.index(candidate)
    if required:
        raise DataError(f"{path}: no {what} column (one of {', '.join(candidates)}); the header "
                        f"is {list(names)}")
    return None


@_text_csv
def load_au_csv(path, image_column: str | None = None, label_column: str | None = None,
                class_names=None, size: int = 48, channels: int = 1, strict: bool = False,
                fit: str = "crop", progress: bool = True) -> FaceSet:
    """Read an AU-labelled set: a CSV of image paths, AU columns and optional labels/landmarks.

    Args:
        path: the CSV. Image paths in it are relative to the CSV's folder (or absolute).
        image_column: name of the image-path column; default: the first of image, image_path,
            path, file, filename, img.
        label_column: name of the expression column; default: expression, label, emotion or
            class when present (values: class names or indices). Without one, every face gets
            the single class "unlabelled".
        class_names: the classes, in label order; default: FER2013's when the labels are
            FER2013 expressions (or indices 0-6), else the sorted names found.
        size: output size in pixels (square); landmarks are moved with the resize/crop.
        channels: 1 (grey) or 3 (RGB).
        strict: raise DataError for any bad row instead of skipping it.
        fit: "crop" (centre square, then resize) or "stretch".
        progress: show a progress bar for big files.

    Returns:
        FaceSet with `aus` (the file's AU columns, in the file's order, names kept in
        `au_names`; None when there are none), `landmarks` when all of x0,y0..x67,y67 are
        there, `intensity` and `split` when such columns exist. Bad rows (missing or broken
        image, non-numeric or out-of-range value, unknown label) are skipped and reported in
        one DataWarning naming each as `line N` (the header is line 1).
    """
    _check_loader_args(size, channels, fit)
    path = _check_path(path)
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path} is empty: expected a header with an image column and AU "
                            f"columns (AU1, AU2, ...)")
        header = [h.strip() for h in header]
        lower = [h.lower() for h in header]
        i_image = _find_column(header, _IMAGE_COLUMNS, image_column, "image-path", path, True)
        i_label = _find_column(header, _LABEL_COLUMNS, label_column, "expression", path,
                               label_column is not None)
        i_intensity = lower.index("intensity") if "intensity" in lower else None
        i_split = next((lower.index(c) for c in ("split", "usage") if c in lower), None)
        au_cols = [i for i, h in enumerate(header) if _AU_COLUMN.match(h)]
        mark_names = [f"{axis}{k}" for k in range(68) for axis in "xy"]
        present = [m for m in mark_names if m in lower]
        if present and len(present) != len(mark_names):
            missing = [m for m in mark_names if m not in lower]
            raise DataError(f"{path}: landmark columns are incomplete: {len(present)} of 136 "
                            f"(x0,y0..x67,y67); missing {', '.join(missing[:8])}"
                            f"{' ...' if len(missing) > 8 else ''}")
        mark_cols = [lower.index(m) for m in mark_names] if present else []
        rows = [(reader.line_num, row) for row in reader if row and any(c.strip() for c in row)]

    problems, records = [], []
    bar = rows
    if progress and len(rows) > 2000:
        from tqdm.auto import tqdm

        bar = tqdm(rows, desc=f"reading {path.name}", unit="img")
    for line, row in bar:
        where = f"line {line}"
        if len(row) < len(header):
            problems.append((where, f"{len(row)} field(s), expected {len(header)}"))
            continue
        try:
            aus = [float(row[i]) for i in au_cols]
            marks = [float(row[i]) for i in mark_cols]
            intensity = float(row[i_intensity]) if i_intensity is not None else None
        except ValueError:
            cols = au_cols + mark_cols + ([i_intensity] if i_intensity is not None else [])
            bad = next(i for i in cols if not _is_number(row[i]))
            problems.append((where, f"{header[bad]} value {row[bad]!r} is not a number"))
            continue
        bad_au = next((header[i] for i, v in zip(au_cols, aus) if not 0 <= v <= 5), None)
        if bad_au is not None:
            value = row[header.index(bad_au)]
            problems.append((where, f"{bad_au} value {value} is outside the FACS range 0..5"))
            continue
        if marks and not np.all(np.isfinite(marks)):
            problems.append((where, "a landmark coordinate is not finite"))
            continue
        if intensity is not None and not 0 <= intensity <= 1:
            problems.append((where, f"intensity {intensity} is outside 0..1"))
            continue
        split_value = None
        if i_split is not None:
            raw = row[i_split].strip()
            split_value = USAGE_TO_SPLIT.get(raw, raw.lower())
            if split_value not in SPLIT_TO_USAGE:
                problems.append((where, f"split {raw!r} is not one of train, val, test"))
                continue
        label = row[i_label].strip() if i_label is not None else ""
        if i_label is not None and not label:
            problems.append((where, f"the {header[i_label]} cell is empty"))
            continue
        file = Path(row[i_image].strip()).expanduser()
        if not row[i_image].strip():
            problems.append((where, "the image path is empty"))
            continue
        file = file if file.is_absolute() else path.parent / file
        try:
            image = _read_image(file, channels)
        except _BadImage as error:
            problems.append((where, f"{row[i_image].strip()}: {error}"))
            continue
        except OSError:
            problems.append((where, f"image file not found: {row[i_image].strip()}"))
            continue
        image, (sx, sy, ox, oy) = _fit_image(image, size, fit)
        if marks:
            marks = (np.array(marks, np.float32).reshape(68, 2) - [ox, oy]) * [sx, sy]
        records.append((line, image, label, aus, marks, intensity, split_value))

    # Labels: names or indices → class indices (bad ones become problems too).
    raw_labels = [r[2] for r in records]
    if i_label is None:
        names, labels = ("unlabelled",), [0] * len(records)
    else:
        names = _label_classes(raw_labels, class_names)
        labels = []
        lookup = {n.lower(): k for k, n in enumerate(names)}
        for line, _image, raw, *_ in records:
            k = int(raw) if raw.lstrip("-").isdigit() else lookup.get(raw.lower(), -1)
            if not 0 <= k < len(names):
                problems.append((f"line {line}", f"label {raw!r} is not one of {list(names)} "
                                 f"(or 0..{len(names) - 1})"))
                k = -1
            labels.append(k)
    problems.sort(key=lambda p: int(p[0].split()[1]))
    _report(path, problems, "bad row(s)", strict)
    keep = [i for i, k in enumerate(labels) if k >= 0]
    if not keep:
        raise DataError(f"{path}: no usable row (each row needs a readable image file, "
                        f"relative to {path.parent})")
    records = [records[i] for i in keep]
    labels = [labels[i] for i in keep]
    return FaceSet(
        images=np.stack([r[1] for r in records]), labels=np.array(labels), class_names=names,
        aus=np.array([r[3] for r in records], np.float32) if au_cols else None,
        au_names=tuple(header[i] for i in au_cols) if au_cols else AU_NAMES,
        landmarks=np.stack([r[4] for r in records]) if mark_cols else None,
        intensity=np.array([r[5] for r in records]) if i_intensity is not None else None,
        split=np.array([r[6] for r in records]) if i_split is not None else None,
        source=f"au-csv:{path}")


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _label_classes(raw_labels, class_names) -> tuple:
    """The class names for a label column of names and/or indices."""
    if class_names is not None:
        return tuple(class_names)
    names = [r for r in raw_labels if not r.lstrip("-").isdigit()]
    if not names:  # indices only: FER2013's classes when they fit
        top = max((int(r) for r in raw_labels), default=0)
        return EXPRESSIONS if top < len(EXPRESSIONS) else tuple(str(i) for i in range(top + 1))
    return _class_order(names) if len(names) == len(raw_labels) else EXPRESSIONS
