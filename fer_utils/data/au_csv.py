"""AU-labelled sets: a CSV of image paths, AU columns and optional labels, landmarks, subjects."""

from __future__ import annotations

import csv
import dataclasses
import re
import warnings
from pathlib import Path

import numpy as np

from ..faceset import AU_NAMES, EXPRESSIONS, SPLITS, DataError, DataWarning, FaceSet
from .fer2013 import USAGE_TO_SPLIT
from .folders import check_loader_args, class_order, compile_groups
from .readers import BadImage, fit_image, read_file
from .reports import check_path, progress_bar, report, text_csv
from .splits import stratified_indices

__all__ = ["load_au_csv", "image_files"]

_IMAGE_COLUMNS = ("image", "image_path", "path", "file", "filename", "img")
_LABEL_COLUMNS = ("expression", "label", "emotion", "class")
_SUBJECT_COLUMNS = ("subject", "subject_id", "person", "person_id")
_AU_COLUMN = re.compile(r"^au[\s_-]*\d+", re.IGNORECASE)
_MARK_NAMES = tuple(f"{axis}{k}" for k in range(68) for axis in "xy")


class _BadRow(Exception):
    """A CSV row the loader skips; the message says why."""


@dataclasses.dataclass
class _Columns:
    """Where each kind of value sits in the CSV's header."""

    header: list
    image: int
    label: int | None
    intensity: int | None
    split: int | None
    subject: int | None
    aus: list
    marks: list


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


def _columns(header, path, image_column, label_column) -> _Columns:
    """Locate the columns; DataError for a missing image column or incomplete landmarks."""
    header = [h.strip() for h in header]
    lower = [h.lower() for h in header]
    present = [m for m in _MARK_NAMES if m in lower]
    if present and len(present) != len(_MARK_NAMES):
        missing = [m for m in _MARK_NAMES if m not in lower]
        raise DataError(f"{path}: landmark columns are incomplete: {len(present)} of 136 "
                        f"(x0,y0..x67,y67); missing {', '.join(missing[:8])}"
                        f"{' ...' if len(missing) > 8 else ''}")
    return _Columns(
        header=header,
        image=_find_column(header, _IMAGE_COLUMNS, image_column, "image-path", path, True),
        label=_find_column(header, _LABEL_COLUMNS, label_column, "expression", path,
                           label_column is not None),
        intensity=lower.index("intensity") if "intensity" in lower else None,
        split=next((lower.index(c) for c in ("split", "usage") if c in lower), None),
        subject=_find_column(header, _SUBJECT_COLUMNS, None, "subject", path, False),
        aus=[i for i, h in enumerate(header) if _AU_COLUMN.match(h)],
        marks=[lower.index(m) for m in _MARK_NAMES] if present else [])


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _numbers(row, cols: _Columns):
    """(aus, landmarks, intensity) of a row as floats; _BadRow naming a bad value."""
    try:
        aus = [float(row[i]) for i in cols.aus]
        marks = [float(row[i]) for i in cols.marks]
        intensity = float(row[cols.intensity]) if cols.intensity is not None else None
    except ValueError:
        numeric = cols.aus + cols.marks + ([cols.intensity] if cols.intensity is not None else [])
        bad = next(i for i in numeric if not _is_number(row[i]))
        raise _BadRow(f"{cols.header[bad]} value {row[bad]!r} is not a number") from None
    bad_au = next((i for i, v in zip(cols.aus, aus) if not 0 <= v <= 5), None)
    if bad_au is not None:
        raise _BadRow(f"{cols.header[bad_au]} value {row[bad_au]} is outside the FACS range 0..5")
    if marks and not np.all(np.isfinite(marks)):
        raise _BadRow("a landmark coordinate is not finite")
    if intensity is not None and not 0 <= intensity <= 1:
        raise _BadRow(f"intensity {intensity} is outside 0..1")
    return aus, marks, intensity


def _texts(row, cols: _Columns):
    """(split, label text, subject, image path text) of a row; _BadRow naming a bad cell."""
    split = None
    if cols.split is not None:
        raw = row[cols.split].strip()
        split = USAGE_TO_SPLIT.get(raw, raw.lower())
        if split not in SPLITS:
            raise _BadRow(f"split {raw!r} is not one of train, val, test")
    label = row[cols.label].strip() if cols.label is not None else ""
    if cols.label is not None and not label:
        raise _BadRow(f"the {cols.header[cols.label]} cell is empty")
    subject = row[cols.subject].strip() if cols.subject is not None else None
    if cols.subject is not None and not subject:
        raise _BadRow(f"the {cols.header[cols.subject]} cell is empty")
    image = row[cols.image].strip()
    if not image:
        raise _BadRow("the image path is empty")
    return split, label, subject, image


def _parse_row(row, cols: _Columns, folder: Path, size: int, channels: int, fit: str) -> dict:
    """One usable row as a dict (image fitted, landmarks moved with it); raises _BadRow."""
    if len(row) < len(cols.header):
        raise _BadRow(f"{len(row)} field(s), expected {len(cols.header)}")
    aus, marks, intensity = _numbers(row, cols)
    split, label, subject, name = _texts(row, cols)
    file = Path(name).expanduser()
    file = file if file.is_absolute() else folder / file
    try:
        image = read_file(file, channels)
    except BadImage as error:
        raise _BadRow(f"{name}: {error}") from None
    except OSError:
        raise _BadRow(f"image file not found: {name}") from None
    image, (sx, sy, ox, oy) = fit_image(image, size, fit)
    if marks:
        marks = (np.array(marks, np.float32).reshape(68, 2) - [ox, oy]) * [sx, sy]
    return {"image": image, "label": label, "aus": aus, "marks": marks, "intensity": intensity,
            "split": split, "subject": subject, "name": name}


def _label_classes(raw_labels, class_names) -> tuple:
    """The class names for a label column of names and/or indices."""
    if class_names is not None:
        return tuple(class_names)
    names = [r for r in raw_labels if not r.lstrip("-").isdigit()]
    if not names:  # indices only: FER2013's classes when they fit
        top = max((int(r) for r in raw_labels), default=0)
        return EXPRESSIONS if top < len(EXPRESSIONS) else tuple(str(i) for i in range(top + 1))
    return class_order(names) if len(names) == len(raw_labels) else EXPRESSIONS


def _resolve_labels(records, cols: _Columns, class_names, problems) -> tuple:
    """(class names, label per record, -1 for a bad one noted in `problems`)."""
    if cols.label is None:
        return ("unlabelled",), [0] * len(records)
    names = _label_classes([r["label"] for r in records], class_names)
    lookup = {n.lower(): k for k, n in enumerate(names)}
    labels = []
    for record in records:
        raw = record["label"]
        k = int(raw) if raw.lstrip("-").isdigit() else lookup.get(raw.lower(), -1)
        if not 0 <= k < len(names):
            problems.append((f"line {record['line']}", f"label {raw!r} is not one of "
                             f"{list(names)} (or 0..{len(names) - 1})"))
            k = -1
        labels.append(k)
    return names, labels


def _groups(records, cols: _Columns, pattern, path) -> np.ndarray | None:
    """Person ids: the subject column, else the groups regex searched in the image path."""
    if cols.subject is not None:
        return np.array([r["subject"] for r in records])
    if pattern is None:
        return None
    ids, unmatched = [], []
    for r in records:
        match = pattern.search(r["name"])
        if match is None or match.group(1) is None:
            unmatched.append(r["name"])
            ids.append(f"unmatched:{r['name']}")
        else:
            ids.append(match.group(1))
    if unmatched:
        warnings.warn(f"{path}: the groups pattern {pattern.pattern!r} matches no person id in "
                      f"{len(unmatched)} image path(s); each counts as a person of its own: "
                      + ", ".join(unmatched[:20]), DataWarning, stacklevel=4)
    return np.array(ids)


def _read_rows(path: Path, image_column, label_column):
    """(columns, [(line, row)]) of the CSV's data rows (blank rows dropped)."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path} is empty: expected a header with an image column and AU "
                            f"columns (AU1, AU2, ...)")
        cols = _columns(header, path, image_column, label_column)
        rows = [(reader.line_num, row) for row in reader if row and any(c.strip() for c in row)]
    return cols, rows


def _cell(row, i) -> str:
    return row[i].strip() if i is not None and i < len(row) else ""


def _limit_rows(rows: list, cols: _Columns, limit: int | None, seed: int) -> list:
    """At most `limit` rows, stratified by their label and split cells."""
    if limit is None or limit >= len(rows):
        return rows
    keys = [f"{_cell(r, cols.label)}/{_cell(r, cols.split)}" for _, r in rows]
    return [rows[i] for i in stratified_indices(keys, limit, seed)]


@text_csv
def image_files(path, image_column: str | None = None, sample: int | None = None) -> list:
    """The image files a CSV names (about `sample` of them, spread evenly; None: all)."""
    path = check_path(path)
    cols, rows = _read_rows(path, image_column, None)
    if sample is not None and len(rows) > sample:
        rows = [rows[i] for i in np.linspace(0, len(rows) - 1, sample).astype(int)]
    files = [Path(_cell(r, cols.image)).expanduser() for _, r in rows if _cell(r, cols.image)]
    return [f if f.is_absolute() else path.parent / f for f in files]


@text_csv
def load_au_csv(path, image_column: str | None = None, label_column: str | None = None,
                class_names=None, size: int = 48, channels: int = 1, strict: bool = False,
                fit: str = "crop", progress: bool = True, groups=None, limit: int | None = None,
                seed: int = 0) -> FaceSet:
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
        groups: a regular expression searched in each image path whose first group is the
            person id (FER_GROUPS), used when the CSV has no `subject` column.
        limit: read at most this many rows, drawn stratified by label and split (None: all).
        seed: seed of that draw.

    Returns:
        FaceSet with `aus` (the file's AU columns, in the file's order, names kept in
        `au_names`; None when there are none), `landmarks` when all of x0,y0..x67,y67 are
        there, `intensity` and `split` when such columns exist, `groups` from a `subject`
        (or person) column. Bad rows (missing or broken image, non-numeric or out-of-range
        value, unknown label) are skipped and reported in one DataWarning naming each as
        `line N` (the header is line 1).
    """
    check_loader_args(size, channels, fit, fits=("crop", "stretch"))
    pattern = compile_groups(groups)
    path = check_path(path)
    cols, rows = _read_rows(path, image_column, label_column)
    rows = _limit_rows(rows, cols, limit, seed)
    problems, records = [], []
    for line, row in progress_bar(rows, f"reading {path.name}", progress and len(rows) > 2000,
                                  total=len(rows)):
        try:
            records.append({**_parse_row(row, cols, path.parent, size, channels, fit),
                            "line": line})
        except _BadRow as error:
            problems.append((f"line {line}", str(error)))
    names, labels = _resolve_labels(records, cols, class_names, problems)
    problems.sort(key=lambda p: int(p[0].split()[1]))
    report(path, problems, "bad row(s)", strict)
    keep = [i for i, k in enumerate(labels) if k >= 0]
    if not keep:
        raise DataError(f"{path}: no usable row (each row needs a readable image file, "
                        f"relative to {path.parent})")
    records = [records[i] for i in keep]
    column = (lambda key: [r[key] for r in records])
    return FaceSet(
        images=np.stack(column("image")), labels=np.array([labels[i] for i in keep]),
        class_names=names, aus=np.array(column("aus"), np.float32) if cols.aus else None,
        au_names=tuple(cols.header[i] for i in cols.aus) if cols.aus else AU_NAMES,
        landmarks=np.stack(column("marks")) if cols.marks else None,
        intensity=np.array(column("intensity")) if cols.intensity is not None else None,
        split=np.array(column("split")) if cols.split is not None else None,
        groups=_groups(records, cols, pattern, path), source=f"au-csv:{path}")
