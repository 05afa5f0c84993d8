"""FER2013 in Kaggle's CSV layout (`emotion,pixels,Usage`): reading and writing."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import cv2
import numpy as np

from ..faceset import EXPRESSIONS, DataError, DataWarning, FaceSet
from .normalise import resize_images
from .reports import check_path, progress_bar, report, text_csv

__all__ = ["USAGE_TO_SPLIT", "SPLIT_TO_USAGE", "FER2013_SIZE", "load_fer2013",
           "write_fer2013_csv", "count_rows"]

# FER2013's Usage column ↔ the kit's split names.
USAGE_TO_SPLIT = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
SPLIT_TO_USAGE = {v: k for k, v in USAGE_TO_SPLIT.items()}
FER2013_SIZE = 48
_PIXELS = FER2013_SIZE * FER2013_SIZE


class _BadRow(Exception):
    """A CSV row the loader skips; the message says why."""


def count_rows(path) -> int:
    """Data rows of a CSV file (newlines minus the header), counted without parsing."""
    lines, last = 0, b"\n"
    with open(path, "rb") as handle:
        while block := handle.read(1 << 24):
            lines += block.count(b"\n")
            last = block[-1:]
    return max(0, lines + (last != b"\n") - 1)


def _read_header(reader, path) -> tuple:
    """(header, index of emotion, pixels, Usage or None) or a DataError naming what is missing."""
    header = next(reader, None)
    if header is None:
        raise DataError(f"{path} is empty: expected a header 'emotion,pixels,Usage'")
    names = [h.strip().lower() for h in header]
    missing = [c for c in ("emotion", "pixels") if c not in names]
    if missing:
        raise DataError(f"{path}: header {header} lacks the column(s) {missing}; a FER2013 "
                        f"CSV has 'emotion,pixels,Usage'")
    return (header, names.index("emotion"), names.index("pixels"),
            names.index("usage") if "usage" in names else None)


def _parse_row(row, header, i_label, i_pixels, i_usage):
    """(pixels uint8 2304, label, split or None) of one row; raises _BadRow with the reason."""
    if len(row) < len(header):
        raise _BadRow(f"{len(row)} field(s), expected {len(header)} ({','.join(header)})")
    raw_label = row[i_label].strip()
    try:
        label = int(raw_label)
    except ValueError:
        raise _BadRow(f"emotion {raw_label!r} is not an integer") from None
    if not 0 <= label < len(EXPRESSIONS):
        raise _BadRow(f"emotion {label} is out of range 0..{len(EXPRESSIONS) - 1}")
    split = None
    if i_usage is not None:
        usage = row[i_usage].strip()
        split = USAGE_TO_SPLIT.get(usage, usage.lower() if usage.lower() in SPLIT_TO_USAGE
                                   else None)
        if split is None:
            raise _BadRow(f"Usage {usage!r} is not one of {', '.join(USAGE_TO_SPLIT)}")
    try:
        pixels = np.fromstring(row[i_pixels], dtype=np.int64, sep=" ")
    except ValueError:
        bad = next((t for t in row[i_pixels].split() if not t.isdigit()), "?")
        raise _BadRow(f"pixels hold a non-numeric value {bad[:20]!r}") from None
    if pixels.size != _PIXELS:
        raise _BadRow(f"{pixels.size} pixel values, expected {_PIXELS} (48×48)")
    if pixels.min() < 0 or pixels.max() > 255:
        raise _BadRow(f"pixel value {pixels[(pixels < 0) | (pixels > 255)][0]} is outside 0..255")
    return pixels.astype(np.uint8), label, split


@text_csv
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
    path = check_path(path)
    images, labels, splits, problems = [], [], [], []
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header, i_label, i_pixels, i_usage = _read_header(reader, path)
        rows = progress_bar(reader, f"reading {path.name}", unit=" rows",
                            show=progress and path.stat().st_size > 20 * 2**20)
        for row in rows:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            if max_rows is not None and len(labels) >= max_rows:
                break
            try:
                pixels, label, split = _parse_row(row, header, i_label, i_pixels, i_usage)
            except _BadRow as error:
                problems.append((f"line {reader.line_num}", str(error)))
                continue
            images.append(pixels)
            labels.append(label)
            splits.append(split)
        if hasattr(rows, "close"):
            rows.close()
    report(path, problems, "malformed row(s)", strict)
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
                lines.append(f"{labels[i]},{' '.join([numbers[v] for v in row.tolist()])},"
                             f"{usage}\n")
            handle.write("".join(lines))
    return path
