"""The built-in data set: quotas per class, `make_dataset` and its cache under the data folder."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from ..faceset import EXPRESSIONS, FaceSet
from .render import _check_size_channels
from .workers import render_jobs

# Bump when the rendering changes: it is part of the cache file name.
SYNTH_VERSION = 2
CLASS_BALANCES = ("uniform", "fer2013")
# FER2013's class counts (angry, disgust, fear, happy, sad, surprise, neutral), for class_balance.
FER2013_COUNTS = (4953, 547, 5121, 8989, 6077, 4002, 6198)
SERIAL_BELOW = 2000  # make_dataset renders in one process below this many faces
CHUNK = 500  # faces per job of a worker process


def expression_labels(n: int, seed: int, class_balance: str) -> np.ndarray:
    """Expression labels: exact quotas per class (uniform or FER2013 shares), shuffled by seed."""
    if class_balance == "uniform":
        share = np.ones(len(EXPRESSIONS))
    else:
        share = np.array(FER2013_COUNTS, dtype=float)
    share = share / share.sum()
    counts = np.floor(share * n).astype(int)
    remainder = share * n - counts
    for k in np.argsort(-remainder, kind="stable")[: n - counts.sum()]:
        counts[k] += 1
    labels = np.repeat(np.arange(len(EXPRESSIONS)), counts)
    return np.random.default_rng([int(seed), 0]).permutation(labels)


def cache_path(n: int, seed: int = 0, size: int = 48, channels: int = 1,
               class_balance: str = "uniform", data_dir=None) -> Path:
    """Where make_dataset caches a set with these arguments (data_dir/synthetic/...npz)."""
    if data_dir is None:
        from ..config import get_settings

        data_dir = get_settings().data_dir
    name = f"synth_v{SYNTH_VERSION}_n{n}_seed{seed}_{size}px_c{channels}_{class_balance}.npz"
    return Path(data_dir) / "synthetic" / name


def _read_cache(path: Path, n: int, size: int, channels: int, source: str):
    """The cached FaceSet at `path` when it matches (n, size, channels), else None."""
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            fs = FaceSet(images=z["images"], labels=z["labels"], aus=z["aus"],
                         landmarks=z["landmarks"], intensity=z["intensity"], source=source)
        if len(fs) == n and fs.image_shape == (size, size, channels):
            return fs
    except Exception as err:  # a damaged cache is rendered again
        warnings.warn(f"ignoring unreadable synthetic cache {path}: {err}", stacklevel=3)
    return None


def _write_cache(path: Path, fs: FaceSet) -> None:
    """Save `fs` at `path` (atomically); a folder that cannot be written only warns."""
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp.npz")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(tmp, images=fs.images, labels=fs.labels, aus=fs.aus,
                 landmarks=fs.landmarks, intensity=fs.intensity)
        os.replace(tmp, path)
    except OSError as err:  # the cache only saves time: a read-only data folder is fine
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        warnings.warn(f"cannot write the synthetic cache {path} ({err}); the faces are "
                      f"rendered again next time", stacklevel=3)


def make_dataset(n: int, seed: int = 0, size: int = 48, channels: int = 1, cache: bool = True,
                 data_dir=None, progress: bool = True, class_balance: str = "uniform",
                 workers: int | None = None) -> FaceSet:
    """Render (or load from the cache) the built-in FACS face set.

    Each face has a random identity, expression (prototypical AUs at a random intensity, some
    dropped, extra AUs sprinkled in), pose, lighting, blur, noise, background and sometimes an
    occluder; the crop convention is in the package docstring. About 2.4 ms of CPU per 48-px
    face: a FER2013-sized set (35,887 faces) takes about 45 s on 2 idle cores.

    Args:
        n: number of faces (0 allowed).
        seed: the set's seed; face i uses its own generator seeded by (seed, i), so the bytes
            are the same for the same arguments whatever the number of worker processes.
        size: width = height in pixels (≥ 16); 48 like FER2013.
        channels: 1 (grey, like FER2013) or 3 (RGB).
        cache: reuse / write `cache_path(...)` (an .npz under `data_dir`/synthetic/).
        data_dir: folder of the cache; default `get_settings().data_dir`.
        progress: show a tqdm progress bar.
        class_balance: "uniform" (equal classes) or "fer2013" (FER2013's class shares).
        workers: processes; default: one below 2,000 faces, else one per CPU core (at most 4).
            Workers are fresh processes that never re-run the caller's script; when they
            cannot start, the faces are rendered in this process after one warning line.

    Returns:
        A FaceSet with images, labels (FER2013 order), aus (N×12 BP4D intensities 0-5),
        landmarks (N×68×2 output pixels), intensity (N in [0, 1]) and
        source "synthetic (seed=...)".
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative integer (number of faces), got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    _check_size_channels(size, channels)
    if class_balance not in CLASS_BALANCES:
        raise ValueError(f"unknown class_balance {class_balance!r}; allowed: {CLASS_BALANCES}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 1):
        raise ValueError(f"workers must be None or a positive integer, got {workers!r}")
    n, seed, size = int(n), int(seed), int(size)
    source = f"synthetic (seed={seed})"
    path = cache_path(n, seed, size, channels, class_balance, data_dir) if cache else None
    cached = _read_cache(path, n, size, channels, source) if path is not None else None
    if cached is not None:
        return cached
    labels = expression_labels(n, seed, class_balance)
    jobs = [(seed, s, labels[s:s + CHUNK], size, channels) for s in range(0, n, CHUNK)]
    if workers is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        workers = 1 if n < SERIAL_BELOW else max(1, min(4, cores or 1))
    images, aus, landmarks, intensity = render_jobs(jobs, n, size, channels, workers, progress)
    fs = FaceSet(images=images, labels=labels, aus=aus, landmarks=landmarks, intensity=intensity,
                 source=source)
    if path is not None:
        _write_cache(path, fs)
    return fs