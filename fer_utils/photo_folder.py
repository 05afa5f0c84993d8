"""Predict every photo of a folder tree into one table: a row per face, per photo without a face,
and per broken file, so that every file is accounted for.

Photos are found recursively (any type `fer_utils.data.read_image` reads, by extension), read
with the loaders' checks (a truncated or non-image file becomes a row with its `error`, not a
crash), cropped like the training faces, and their faces go through the model in batches of
`batch_size`. Rows are appended to the CSV as they are ready, so a run over thousands of photos
keeps only one photo and one batch of faces in memory (plus the table it returns).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from .data.readers import IMAGE_EXTENSIONS
from .faces import DEFAULT_MIN_SCORE

__all__ = ["list_photos", "folder_columns", "FolderResult", "predict_folder"]


def list_photos(sources) -> tuple[list[Path], list[Path]]:
    """(photos, other files) under folders (recursively) or given as files, sorted by path."""
    sources = [Path(sources)] if isinstance(sources, (str, Path)) else [Path(s) for s in sources]
    photos, others = [], []
    for source in sources:
        if not source.exists():
            raise FileNotFoundError(f"folder not found: {source}")
        files = sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() \
            else [source]
        for path in files:
            (photos if path.suffix.lower() in IMAGE_EXTENSIONS else others).append(path)
    return photos, others


def folder_columns(class_names) -> list[str]:
    """The columns of the folder table (predictions.csv)."""
    return ["file", "face", "x", "y", "w", "h", "score", "label", *class_names, "error"]


@dataclasses.dataclass
class FolderResult:
    """What `predict_folder` found and wrote."""

    table: object  # pandas DataFrame, `folder_columns(class_names)`
    photos: int  # photo files found (each has at least one row)
    faces: int
    without_face: int  # photos read fine, no face found
    broken: list  # [(file, reason)] of photos that could not be read
    other_files: list  # files that are not photos by their extension (not read)
    seconds: float
    csv: Path | None = None


def _blank(count: int) -> list:
    """`count` empty cells."""
    return [None] * count


def predict_folder(model, source, meta: dict, out=None, csv_name: str = "predictions.csv",
                   min_score: float = DEFAULT_MIN_SCORE, detector: str = "hog",
                   upsample: int | None = None, batch_size: int = 64,
                   progress: bool = True) -> FolderResult:
    """Predict the faces of every photo in a folder tree (or several), into one table.

    Args:
        model: a Keras model or a callable batch → probabilities (`export.TFLiteModel`).
        source: a folder, or a list of folders and photo files.
        meta: the model's meta dict (`inference.load_model`).
        out: folder for the CSV (`csv_name`); None: no file, only the returned table.
        min_score, detector, upsample: face detection (see `attention.detect_faces`).
        batch_size: faces per model call.
        progress: show a progress bar (photos done and their rate).

    Returns:
        A `FolderResult`. Its table has a row per face (face 0 = the most confident), one
        row with an empty label per photo without a face, and one row with `error` per photo
        that cannot be read.
    """
    import time

    import pandas as pd
    from tqdm.auto import tqdm

    from . import attention
    from .data import DataError, read_image
    from .inference import crop_faces, predict_faces

    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    photos, others = list_photos(source)
    class_names = list(meta["class_names"])
    columns = folder_columns(class_names)
    csv_path = None
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        csv_path = Path(out) / csv_name
        csv_path.write_text(",".join(columns) + "\n")
    started = time.perf_counter()
    chunks, pending, broken = [], [], []
    counts = {"faces": 0, "without_face": 0}

    def flush():
        crops = [c for _, _, c, _ in pending if len(c)]
        probs = predict_faces(model, np.concatenate(crops), meta) if crops else None
        rows, start = [], 0
        for path, boxes, face_crops, error in pending:
            if not len(face_crops):  # no face, or an error
                rows.append([str(path), *_blank(len(columns) - 2), error])
                continue
            for k, (box, p) in enumerate(zip(boxes, probs[start:start + len(face_crops)])):
                rows.append([str(path), k, *(int(v) for v in box[:4]), round(float(box[4]), 4),
                             class_names[int(np.argmax(p))], *(round(float(v), 5) for v in p),
                             None])
            start += len(face_crops)
        pending.clear()
        if rows:
            chunk = pd.DataFrame(rows, columns=columns).astype(
                {name: "Int64" for name in ("face", "x", "y", "w", "h")})
            chunks.append(chunk)
            if csv_path is not None:
                chunk.to_csv(csv_path, mode="a", header=False, index=False)

    for path in tqdm(photos, unit="photo", disable=not progress, desc="photos",
                     dynamic_ncols=True):
        try:
            image = read_image(path, channels=3)
            found = [b for b in attention.detect_faces(image, upsample=upsample,
                                                       detector=detector) if b[4] >= min_score]
            crops, boxes = crop_faces(image, faces=found, convention=meta["crop"])
        except (DataError, OSError, ValueError) as error:
            reason = str(error).removeprefix(f"{path}: ")
            broken.append((str(path), reason))
            pending.append((path, [], [], reason))
            continue
        counts["faces"] += len(crops)
        counts["without_face"] += not len(crops)
        pending.append((path, boxes, crops, None))
        waiting = sum(len(c) for _, _, c, _ in pending)
        if waiting >= batch_size or len(pending) >= 4 * batch_size:
            flush()
    flush()
    table = pd.concat(chunks, ignore_index=True) if chunks else pd.DataFrame(columns=columns)
    table["label"] = table["label"].astype(object)
    return FolderResult(table=table, photos=len(photos), faces=counts["faces"],
                        without_face=counts["without_face"], broken=broken,
                        other_files=others, seconds=time.perf_counter() - started, csv=csv_path)
