"""`fetch-data`: the public Kaggle copies of FER2013, downloaded with kagglehub when online."""

from __future__ import annotations

import shutil
from pathlib import Path

from ..faceset import DataError

__all__ = ["KAGGLE_SOURCES", "FetchError", "check_reachable", "fetch_fer2013"]

# The two public layouts of FER2013 on Kaggle: the original CSV (emotion,pixels,Usage; Training /
# PublicTest / PrivateTest) and 48-px JPEG folders train/ + test/ (test = both test halves).
KAGGLE_SOURCES = {"csv": "deadskull7/fer2013", "folders": "msambare/fer2013"}
KAGGLE_URL = "https://www.kaggle.com"


class FetchError(RuntimeError):
    """A download that cannot happen (offline, refused, unexpected contents); one line."""


def check_reachable(url: str = KAGGLE_URL, timeout: float = 10.0) -> None:
    """Raise FetchError within `timeout` seconds when `url` cannot be reached (proxies honoured)."""
    import requests

    try:
        requests.head(url, timeout=(timeout, timeout), allow_redirects=True)
    except requests.RequestException as error:
        reason = " ".join(str(error).split())
        reason = reason if len(reason) <= 160 else reason[:160] + " ..."
        raise FetchError(f"cannot reach {url} within {timeout:g} s ({type(error).__name__}: "
                         f"{reason}); fetch-data needs the network: download FER2013 by hand "
                         f"(see README, 'Real data sets') and set FER_DATASET") from None


def _download(handle: str) -> Path:
    """kagglehub's download of a public data set into its cache; the folder it returns."""
    import kagglehub

    try:
        return Path(kagglehub.dataset_download(handle))
    except Exception as error:  # kagglehub raises many kinds (HTTP, auth, disk)
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise FetchError(f"kagglehub could not download {handle} ({type(error).__name__}: "
                         f"{first})") from None


def _place_csv(source: Path, to: Path) -> Path:
    """Copy the FER2013 CSV found under `source` to TO/fer2013.csv."""
    candidates = sorted(source.rglob("*.csv"), key=lambda p: (p.name != "fer2013.csv", str(p)))
    for csv_file in candidates:
        with open(csv_file, encoding="utf-8-sig", errors="replace") as handle:
            header = handle.readline().strip().lower().replace(" ", "")
        if header.startswith("emotion,pixels"):
            to.mkdir(parents=True, exist_ok=True)
            target = to / "fer2013.csv"
            shutil.copyfile(csv_file, target)
            return target
    raise FetchError(f"no FER2013 CSV (header emotion,pixels,Usage) in the download {source}")


def _place_folders(source: Path, to: Path) -> Path:
    """Copy the split folders found under `source` (train/ and test/ ...) to TO/fer2013/."""
    from .folders import SPLIT_FOLDER_NAMES

    roots = [source] + sorted(p for p in source.rglob("*") if p.is_dir())
    for root in roots:
        splits = {p.name.lower() for p in root.iterdir() if p.is_dir()} & set(SPLIT_FOLDER_NAMES)
        if "train" in splits and len(splits) >= 2:
            target = to / "fer2013"
            shutil.copytree(root, target, dirs_exist_ok=True)
            return target
    raise FetchError(f"no split folders (train/, test/) in the download {source}")


def fetch_fer2013(to, layout: str = "csv", timeout: float = 10.0) -> tuple[Path, str]:
    """Download FER2013 from Kaggle (kagglehub) and put it where FER_DATASET finds it.

    Args:
        to: the data folder (FER_DATA_DIR): the CSV becomes TO/fer2013.csv, the folders
            TO/fer2013/{train,test}/<class>/.
        layout: "csv" (Kaggle's original CSV, with Kaggle's train/val/test split) or "folders"
            (the JPEG folder copy: train/ and test/; val is then carved out of train).
        timeout: seconds to wait for Kaggle before giving up (offline: fails within it).

    Returns:
        (the path written, the FER_DATASET value that reads it).
    """
    if layout not in KAGGLE_SOURCES:
        raise ValueError(f"layout must be one of {tuple(KAGGLE_SOURCES)}, got {layout!r}")
    to = Path(to).expanduser()
    if to.exists() and not to.is_dir():
        raise DataError(f"--to {to} is a file, not a folder")
    check_reachable(timeout=timeout)
    source = _download(KAGGLE_SOURCES[layout])
    if layout == "csv":
        path = _place_csv(source, to)
        return path, f"fer2013:{path}"
    path = _place_folders(source, to)
    return path, f"folder:{path}"
