"""Reporting bad rows and files: one warning (or one error) that names each of them."""

from __future__ import annotations

import csv
import functools
import warnings
from pathlib import Path

from ..faceset import DataError, DataWarning

# How many bad lines/files a warning lists with their reasons (the rest are named by number).
MAX_REASONS = 50


def problem_report(path, problems: list, what: str) -> str:
    """One message naming every bad line/file: the first ones with reasons, the rest by name."""
    head = [f"{where}: {why}" for where, why in problems[:MAX_REASONS]]
    text = f"{path}: {len(problems)} {what} skipped:\n  " + "\n  ".join(head)
    if len(problems) > MAX_REASONS:
        text += "\n  and also " + ", ".join(where for where, _ in problems[MAX_REASONS:])
    return text


def report(path, problems: list, what: str, strict: bool, stacklevel: int = 3) -> None:
    """Raise (strict) or warn once about the skipped rows/files in `problems`."""
    if not problems:
        return
    message = problem_report(path, problems, what)
    if strict:
        raise DataError(message.replace(" skipped:", " found (strict=True):", 1))
    warnings.warn(message, DataWarning, stacklevel=stacklevel)


def check_path(path, kind: str = "file") -> Path:
    """Return `path` as a Path, or raise FileNotFoundError / a clear error naming it."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{kind} not found: {path}")
    if kind == "file" and not path.is_file():
        raise DataError(f"expected a file, but {path} is a folder")
    if kind == "folder" and not path.is_dir():
        raise DataError(f"expected a folder with one sub-folder per class, but {path} is a file")
    return path


def text_csv(loader):
    """Turn a CSV loader's decoding error into a DataError naming the file."""

    @functools.wraps(loader)
    def wrapper(path, *args, **kwargs):
        try:
            return loader(path, *args, **kwargs)
        except UnicodeDecodeError as error:
            raise DataError(f"{path}: not a UTF-8 text CSV ({error.reason})") from None
        except csv.Error as error:
            raise DataError(f"{path}: not a readable CSV ({error})") from None

    return wrapper


def progress_bar(items, desc: str, show: bool, total: int | None = None, unit: str = "img"):
    """`items` wrapped in a tqdm bar when `show`, else as they are."""
    if not show:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, total=total, desc=desc, unit=unit, mininterval=0.5)


def memory_note(n: int, height: int, width: int, channels: int) -> str:
    """One line stating the memory that n uint8 images of this shape take."""
    size = n * height * width * channels
    amount = f"{size / 1e6:,.0f} MB" if size < 1e9 else f"{size / 1e9:,.2f} GB"
    return f"reading {n:,} images at {height}×{width}×{channels}: about {amount}"
