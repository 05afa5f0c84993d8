"""The FaceSet container, the label constants and the data errors (a leaf: no fer_utils imports)."""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["FaceSet", "EXPRESSIONS", "BP4D_AUS", "AU_NAMES", "AU_PRESENT_THRESHOLD", "SPLITS",
           "DataError", "DataWarning"]

# FER2013's class order (its `emotion` column): the order of every expression label in the kit.
EXPRESSIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
# The 12 action units annotated in BP4D (and EAC-Net's evaluation), in this order everywhere.
BP4D_AUS = (1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24)
AU_NAMES = tuple(f"AU{n}" for n in BP4D_AUS)
# An AU counts as present (occurrence label) from FACS intensity A = 1 upwards (scale 0-5).
AU_PRESENT_THRESHOLD = 1.0
# The kit's split names, in order.
SPLITS = ("train", "val", "test")


class DataError(ValueError):
    """A data file or folder holds something the kit cannot load (strict mode, nothing usable)."""


class DataWarning(UserWarning):
    """Some rows or files of a data set were skipped; the message names each one and why."""


def _check_landmarks(landmarks: np.ndarray, n: int) -> np.ndarray:
    """float32 N×68×2 landmarks, or a ValueError naming the shape or the first non-finite face."""
    landmarks = np.asarray(landmarks, dtype=np.float32)
    if landmarks.shape != (n, 68, 2):
        raise ValueError(f"FaceSet.landmarks must be {n}×68×2, got {landmarks.shape}")
    finite = np.isfinite(landmarks).all(axis=(1, 2))
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(f"FaceSet.landmarks hold NaN or infinite coordinates for {len(bad)} "
                         f"face(s), first at index {bad[0]}: give every face 68 finite (x, y) "
                         f"points, or drop those faces")
    return landmarks


def _check_per_face(name: str, values, n: int, dtype=None) -> np.ndarray:
    """A length-N array (as `dtype`), or a ValueError naming the attribute."""
    array = np.asarray(values)
    array = array.astype(dtype) if dtype is not None else array
    if array.ndim != 1 or len(array) != n:
        raise ValueError(f"FaceSet.{name} must have {n} values, got shape {array.shape}")
    return array


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
        groups: optional array N of person (or sequence) ids as str: `split` keeps each id on
            one side, so that no person is both trained and tested on.
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
    groups: np.ndarray | None = None

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
            self.landmarks = _check_landmarks(self.landmarks, n)
        if self.intensity is not None:
            self.intensity = _check_per_face("intensity", np.asarray(self.intensity).reshape(-1),
                                             n, np.float32)
        if self.split is not None:
            self.split = _check_per_face("split", self.split, n, str)
        if self.groups is not None:
            self.groups = _check_per_face("groups", self.groups, n, str)

    def __len__(self) -> int:
        """Number of faces."""
        return len(self.images)

    def __repr__(self) -> str:
        """A one-line summary (shape, classes, which optional labels are present)."""
        extras = [name for name in ("aus", "landmarks", "intensity", "split")
                  if getattr(self, name) is not None]
        if self.groups is not None:
            extras.append(f"groups ({len(np.unique(self.groups))})")
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
                       split=take(self.split), groups=take(self.groups), source=self.source)
