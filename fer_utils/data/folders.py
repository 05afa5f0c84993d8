"""Image folders: one sub-folder per class, or split folders (train/, val/, test/) of classes."""

from __future__ import annotations

import dataclasses
import re
import warnings
from pathlib import Path

import numpy as np

from ..faceset import EXPRESSIONS, SPLITS, DataError, DataWarning, FaceSet
from .readers import BadImage, decode, fit_image, image_size_of, is_colour, read_file
from .reports import check_path, progress_bar, report
from .splits import stratified_indices, strata

__all__ = ["SPLIT_FOLDER_NAMES", "FITS", "FolderScan", "scan_folder", "describe_folder",
           "load_image_folder", "read_folder", "compile_groups"]

# Split folder names (any case) → the kit's split names (Kaggle's FER2013 folders, RAF-DB, ...).
SPLIT_FOLDER_NAMES = {"train": "train", "val": "val", "validation": "val", "publictest": "val",
                      "test": "test", "privatetest": "test"}
FITS = ("crop", "stretch", "face")
# FER2013's image-folder copies name each file after the CSV's Usage: Training_123.jpg,
# PublicTest_123.jpg, PrivateTest_123.jpg (Kaggle's copy puts both test halves in test/).
FER2013_USAGES = ("Training", "PublicTest", "PrivateTest")
FER2013_FILE_NAME = re.compile(r"^(Training|PublicTest|PrivateTest)_")


@dataclasses.dataclass
class FolderScan:
    """What a folder holds, before any picture is read: its layout and every image file."""

    root: Path
    layout: str  # "split" or "flat"
    split_dirs: dict  # split name → folder name (split layout only)
    class_names: tuple  # in label order
    files: list  # Paths, in label order (and split order within a class)
    labels: np.ndarray
    split: np.ndarray | None
    relative: list  # each file's path relative to its class folder (for FER_GROUPS)
    problems: list  # (name, reason) of stray files
    empty: list  # class folders without any file

    def usage_counts(self) -> dict:
        """{split: {Usage: files}} of the files named like FER2013's (`PublicTest_123.jpg`)."""
        found: dict = {}
        if self.split is None:
            return found
        for path, split in zip(self.files, self.split):
            usage = FER2013_FILE_NAME.match(path.name)
            if usage:
                per_split = found.setdefault(str(split), {})
                per_split[usage[1]] = per_split.get(usage[1], 0) + 1
        return {s: dict(sorted(u.items(), key=lambda kv: FER2013_USAGES.index(kv[0])))
                for s, u in found.items()}

    def describe(self) -> str:
        """One line: the layout found, how its folders map to the kit's splits, what is carved."""
        classes = f"{len(self.class_names)} classes ({', '.join(self.class_names)})"
        if self.layout == "flat":
            return (f"class folders (no split folders): {classes}, {len(self.files):,} files; "
                    f"`fu.data.split` makes train/val/test")
        counts = {s: int((self.split == s).sum()) for s in SPLITS if s in self.split_dirs}
        parts = ", ".join(f"{self.split_dirs[s]}/ → {s} ({counts[s]:,})" for s in counts)
        text = f"split folders: {parts}; {classes} in each"
        usage = self.usage_counts()
        if usage:
            named = ", ".join(f"{self.split_dirs[s]}/ " + " + ".join(
                f"{u} {n:,}" for u, n in usage[s].items()) for s in counts if s in usage)
            text += f"; FER2013 file names: {named}"
            if {"PublicTest", "PrivateTest"} <= set(usage.get("test", {})):
                text += (f" ({self.split_dirs['test']}/ holds both of FER2013's test halves, "
                         f"as Kaggle's image-folder copy does: its score is over PublicTest + "
                         f"PrivateTest, not PrivateTest's alone)")
        carved = [s for s in ("val", "test") if s not in self.split_dirs]
        if carved and "train" in self.split_dirs:
            text += (f"; no {' or '.join(carved)} folder: `fu.data.split` carves "
                     f"{' and '.join(carved)} out of {self.split_dirs['train']}/ (10 % by "
                     f"default), so exact duplicates within it can land on both sides")
        return text


def _visible(path: Path, root: Path) -> bool:
    return not any(part.startswith((".", "__")) for part in path.relative_to(root).parts)


def class_order(names) -> tuple:
    """Class names in FER2013 order when they are FER2013 expressions, else sorted."""
    lower = [str(n).lower() for n in names]
    if lower and all(n in EXPRESSIONS for n in lower):
        return tuple(sorted(set(lower), key=EXPRESSIONS.index))
    return tuple(sorted(set(str(n) for n in names)))


def _class_key(name: str, fer_names: bool) -> str:
    return name.lower() if fer_names else name


def _split_dirs(root: Path, dirs: list) -> dict:
    """{split: folder} for the split folders among `dirs`; errors for a mix or a double split."""
    found = {d: SPLIT_FOLDER_NAMES[d.name.lower()] for d in dirs
             if d.name.lower() in SPLIT_FOLDER_NAMES}
    if not found:
        return {}
    others = [d.name for d in dirs if d not in found]
    if others:
        raise DataError(f"{root} mixes split folders ({', '.join(f'{d.name}/' for d in found)}) "
                        f"and class folders ({', '.join(f'{n}/' for n in others)}): put every "
                        f"class folder inside train/, val/ and test/, or use class folders only")
    by_split: dict = {}
    for folder, name in found.items():
        by_split.setdefault(name, []).append(folder)
    double = {s: f for s, f in by_split.items() if len(f) > 1}
    if double:
        s, folders = next(iter(double.items()))
        raise DataError(f"{root}: {', '.join(f'{f.name}/' for f in folders)} are all the {s} "
                        f"split: keep one")
    return {s: f[0] for s, f in sorted(by_split.items(), key=lambda kv: SPLITS.index(kv[0]))}


def _class_dirs(root: Path, folder: Path, problems: list) -> list:
    """The class sub-folders of `folder`; loose files are noted as problems."""
    entries = sorted(p for p in folder.iterdir() if _visible(p, root))
    problems.extend((str(p.relative_to(root)), "not inside a class sub-folder")
                    for p in entries if p.is_file())
    return [p for p in entries if p.is_dir()]


def _check_same_classes(root: Path, classes: dict) -> None:
    """DataError naming the classes a split lacks or adds, when the splits' classes differ."""
    every = set().union(*classes.values())
    lines = [f"{split}/ lacks {', '.join(n + '/' for n in sorted(every - names))}"
             for split, names in classes.items() if every - names]
    if not lines:
        return
    raise DataError(f"{root}: the split folders hold different classes: {'; '.join(lines)} "
                    f"(every split needs the same class folders)")


def _check_case(root: Path, names) -> None:
    lower = [n.lower() for n in names]
    same = sorted(n for n in names if lower.count(n.lower()) > 1)
    if same:
        raise DataError(f"{root}: class folders {', '.join(f'{n}/' for n in same)} differ only "
                        f"in case and would be merged: rename or join them")


def scan_folder(path) -> FolderScan:
    """List a folder's image files and classes, recognising split folders at the top.

    Split folders: `train`, `val`/`validation`/`PublicTest`, `test`/`PrivateTest` (any case),
    each holding the same class folders. Otherwise the top folders are the classes.
    """
    root = check_path(path, "folder")
    problems: list = []
    top = _class_dirs(root, root, problems)
    if not top:
        raise DataError(f"{root} has no class sub-folders: expected one sub-folder of images per "
                        f"class (e.g. {root}/happy/001.png), or split folders train/, val/, "
                        f"test/ holding them")
    split_dirs = _split_dirs(root, top)
    parents = split_dirs or {None: root}
    class_dirs = {s: _class_dirs(root, folder, problems) for s, folder in parents.items()}
    for s, dirs in class_dirs.items():
        if not dirs:
            raise DataError(f"{parents[s]} has no class sub-folders (split folder {s}/)")
        _check_case(root, [d.name for d in dirs])
    order = class_order([d.name for dirs in class_dirs.values() for d in dirs])
    fer = bool(order) and order[0] in EXPRESSIONS
    if split_dirs:
        _check_same_classes(root, {parents[s].name: {_class_key(d.name, fer) for d in dirs}
                                   for s, dirs in class_dirs.items()})
    files, labels, splits, relative, empty = [], [], [], [], []
    index = {name: k for k, name in enumerate(order)}
    for s, dirs in class_dirs.items():
        for folder in dirs:
            found = sorted(p for p in folder.rglob("*") if p.is_file() and _visible(p, root))
            if not found:
                empty.append(str(folder.relative_to(root)))
            files.extend(found)
            labels.extend([index[_class_key(folder.name, fer)]] * len(found))
            splits.extend([s] * len(found))
            relative.extend(p.relative_to(folder).as_posix() for p in found)
    labels = np.array(labels, dtype=np.int64)
    by_label = np.argsort(labels, kind="stable")  # label order, split order within a class
    return FolderScan(root=root, layout="split" if split_dirs else "flat",
                      split_dirs={s: f.name for s, f in split_dirs.items()}, class_names=order,
                      files=[files[i] for i in by_label], labels=labels[by_label],
                      split=np.array(splits)[by_label] if split_dirs else None,
                      relative=[relative[i] for i in by_label], problems=problems, empty=empty)


def describe_folder(path) -> str:
    """One line saying which layout `folder:PATH` has (split folders or class folders)."""
    return scan_folder(path).describe()


def compile_groups(pattern):
    """A compiled FER_GROUPS regular expression with at least one group, or a ValueError."""
    if pattern is None or isinstance(pattern, re.Pattern):
        compiled = pattern
    else:
        try:
            compiled = re.compile(str(pattern))
        except re.error as error:
            raise ValueError(f"groups={pattern!r} is not a regular expression ({error})") from None
    if compiled is not None and compiled.groups < 1:
        raise ValueError(f"groups={compiled.pattern!r} has no (group): its first group is the "
                         f"person id, e.g. r'S(\\d+)_'")
    return compiled


def _groups_of(scan: FolderScan, keep: np.ndarray, pattern) -> np.ndarray | None:
    """Person ids from the regex's first group; files it does not match keep their own id."""
    if pattern is None:
        return None
    ids, unmatched = [], []
    for i in keep:
        match = pattern.search(scan.relative[i])
        if match is None or match.group(1) is None:
            unmatched.append(scan.relative[i])
            ids.append(f"unmatched:{scan.files[i].relative_to(scan.root).as_posix()}")
        else:
            ids.append(match.group(1))
    if unmatched:
        shown = ", ".join(unmatched[:20]) + (f" and {len(unmatched) - 20} more"
                                            if len(unmatched) > 20 else "")
        warnings.warn(f"{scan.root}: the groups pattern {pattern.pattern!r} matches no person "
                      f"id in {len(unmatched)} file name(s); each counts as a person of its own "
                      f"(split cannot keep them with their person): {shown}", DataWarning,
                      stacklevel=4)
    return np.array(ids)


def probe_colour_and_size(files, sample: int = 24) -> tuple[bool, int]:
    """(any colour picture?, largest short side) over about `sample` files spread evenly."""
    if not files:
        return False, 0
    picks = np.unique(np.linspace(0, len(files) - 1, min(sample, len(files))).astype(int))
    colour, side = False, 0
    for i in picks:
        size = image_size_of(files[i])
        side = max(side, min(size) if size else 0)
        if not colour:
            try:
                colour = is_colour(decode(Path(files[i]).read_bytes(), None))
            except (BadImage, OSError):
                continue
    return colour, side


class _FaceCropper:
    """Detect and crop the most confident face EXACTLY as `predict` does (fer_utils.faces)."""

    def __init__(self, size: int, channels: int, detector: str):
        from .. import faces

        self.faces = faces
        self.convention = faces.crop_convention(method="box", size=size, channels=channels)
        self.detector = detector

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        crops, _ = self.faces.crop_faces(image, convention=self.convention,
                                         min_score=self.faces.DEFAULT_MIN_SCORE,
                                         detector=self.detector)
        return crops[0] if len(crops) else None


def _read_pictures(scan, keep, size, channels, fit, progress, detector):
    """Read the chosen files into one preallocated uint8 array; (images, used, bad, no_face)."""
    images = np.empty((len(keep), size, size, channels), np.uint8)
    used, problems, no_face = [], [], []
    cropper = _FaceCropper(size, channels, detector) if fit == "face" else None
    bar = progress_bar(keep, f"reading {scan.root.name}", progress and len(keep) > 2000,
                       total=len(keep))
    for i in bar:
        name = str(scan.files[i].relative_to(scan.root))
        try:
            image = read_file(scan.files[i], 3 if cropper else channels)
        except BadImage as error:
            problems.append((name, str(error)))
            continue
        except OSError as error:
            problems.append((name, f"cannot read ({error.strerror or error})"))
            continue
        if cropper is not None:
            image = cropper(image)
            if image is None:
                no_face.append(name)
                continue
        else:
            image = fit_image(image, size, fit)[0]
        images[len(used)] = image
        used.append(i)
    return images[:len(used)], np.array(used, dtype=np.int64), problems, no_face


def check_loader_args(size, channels, fit, detector="hog", fits=FITS):
    """ValueErrors echoing a bad size, channel count, fit or detector."""
    if not isinstance(size, (int, np.integer)) or size < 8:
        raise ValueError(f"size must be an integer ≥ 8 (pixels), got {size!r}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    if fit not in fits:
        raise ValueError(f"fit must be one of {fits} ('crop': centre square, 'stretch': whole "
                         f"image, 'face': detect and crop the face like predict), got {fit!r}")
    if detector not in ("hog", "cnn"):
        raise ValueError(f"detector must be 'hog' or 'cnn', got {detector!r}")


def read_folder(scan: FolderScan, size: int = 48, channels: int = 1, strict: bool = False,
                fit: str = "crop", progress: bool = True, groups=None, limit: int | None = None,
                seed: int = 0, detector: str = "hog") -> FaceSet:
    """Read the pictures of a `scan_folder` result (see `load_image_folder` for the arguments)."""
    check_loader_args(size, channels, fit, detector)
    pattern = compile_groups(groups)
    keep = stratified_indices(strata(scan.labels, scan.split), limit, seed)
    images, used, problems, no_face = _read_pictures(scan, keep, size, channels, fit, progress,
                                                     detector)
    report(scan.root, scan.problems + problems, "file(s)", strict, stacklevel=4)
    if no_face:
        message = (f"{scan.root}: {len(no_face)} photo(s) without a face (dlib {detector} "
                   f"detector, score ≥ 0.5) skipped: " + ", ".join(no_face))
        if strict:
            raise DataError(message)
        warnings.warn(message, DataWarning, stacklevel=3)
    labels = scan.labels[used]
    present = np.bincount(labels, minlength=len(scan.class_names)) > 0
    empty = [name for k, name in enumerate(scan.class_names) if not present[k]]
    if empty:
        message = (f"{scan.root}: {len(empty)} class folder(s) without a usable image skipped: "
                   + ", ".join(f"{name}/" for name in empty))
        if strict:
            raise DataError(message)
        warnings.warn(message, DataWarning, stacklevel=3)
    if not len(used):
        raise DataError(f"{scan.root}: no usable image in any class sub-folder")
    remap = np.cumsum(present) - 1
    return FaceSet(images=images, labels=remap[labels],
                   class_names=tuple(n for k, n in enumerate(scan.class_names) if present[k]),
                   split=None if scan.split is None else scan.split[used],
                   groups=_groups_of(scan, used, pattern), source=f"folder:{scan.root}")


def load_image_folder(path, size: int = 48, channels: int = 1, strict: bool = False,
                      fit: str = "crop", progress: bool = True, groups=None,
                      limit: int | None = None, seed: int = 0, detector: str = "hog") -> FaceSet:
    """Read a folder of images, one sub-folder per class, or split folders of class folders.

    Args:
        path: the folder: `happy/`, `sad/`, ... inside (flat), or split folders `train/`,
            `val/`|`validation/`|`PublicTest/`, `test/`|`PrivateTest/` (any case) that each hold
            the same class folders (Kaggle's FER2013 folders, RAF-DB, AffectNet...).
        size: output size in pixels (square).
        channels: 1 (grey) or 3 (RGB).
        strict: raise DataError for any bad file or empty class folder instead of skipping it.
        fit: "crop" (centre square, then resize), "stretch" (resize the whole image) or "face"
            (detect the most confident face and crop it exactly as `predict` does: raw photos,
            e.g. collected from the web; photos without a face are named in a DataWarning).
        progress: show a progress bar for big folders.
        groups: a regular expression searched in each file's path relative to its class folder;
            its first group is the person id (FER_GROUPS, e.g. r"S(\\d+)_" for CK+).
        limit: read at most this many files, drawn stratified by class and split (None: all).
        seed: seed of that draw.
        detector: face detector for fit="face": "hog" or "cnn" (see `attention.detect_faces`).

    Returns:
        FaceSet; class names are the class folder names (in FER2013 order when they are FER2013's
        expressions, else sorted); `split` from the split folders; `groups` from `groups`.
        Non-image, unreadable and truncated files are skipped and named in one DataWarning;
        empty class folders in another.
    """
    check_loader_args(size, channels, fit, detector)
    return read_folder(scan_folder(path), size=size, channels=channels, strict=strict, fit=fit,
                       progress=progress, groups=groups, limit=limit, seed=seed,
                       detector=detector)
