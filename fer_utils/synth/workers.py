"""Rendering many faces: in this process, or in a pool of fresh worker processes."""

from __future__ import annotations

import numpy as np

from ..faceset import BP4D_AUS
from .drawing import _render
from .landmarks import _BP4D_INDEX
from .sampling import sample_face_params


def _pool_context():
    """A multiprocessing context whose workers start fresh: forkserver, else spawn.

    Not fork: a forked copy of a process that has loaded TensorFlow (or any library with
    running threads) can deadlock. Fresh workers import only this module (NumPy, OpenCV); a
    script that renders must keep its own code under `if __name__ == "__main__":`, as Python's
    multiprocessing asks (notebooks need nothing).
    """
    import multiprocessing

    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def _worker_init() -> None:
    """Worker process set-up: OpenCV without its own thread pool (the pool is the parallelism)."""
    import cv2

    cv2.setNumThreads(0)


def render_chunk(args):
    """Render faces start..start+len(labels) of a data set (a worker's unit of work)."""
    seed, start, labels, size, channels = args
    n = len(labels)
    images = np.empty((n, size, size, channels), np.uint8)
    aus = np.empty((n, len(BP4D_AUS)), np.float32)
    landmarks = np.empty((n, 68, 2), np.float32)
    intensity = np.empty(n, np.float32)
    for j, label in enumerate(labels):
        rng = np.random.default_rng([int(seed), int(start + j) + 1, 7])
        params = sample_face_params(rng, int(label))
        images[j], landmarks[j] = _render(params, size, channels, rng)
        aus[j] = params["aus"][_BP4D_INDEX]
        intensity[j] = params["intensity"]
    return images, aus, landmarks, intensity


def render_jobs(jobs: list, n: int, size: int, channels: int, workers: int, progress: bool):
    """Render every job (in a pool of fresh worker processes when workers > 1), with a bar."""
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc=f"rendering {n} synthetic faces", unit="face")
    results = []
    try:
        if workers == 1 or len(jobs) <= 1:
            for job in jobs:
                for k in range(0, len(job[2]), 50):  # small steps so the bar moves smoothly
                    sub = (job[0], job[1] + k, job[2][k:k + 50], job[3], job[4])
                    results.append(render_chunk(sub))
                    if bar is not None:
                        bar.update(len(sub[2]))
        else:
            with _pool_context().Pool(workers, initializer=_worker_init) as pool:
                for res in pool.imap(render_chunk, jobs):
                    results.append(res)
                    if bar is not None:
                        bar.update(len(res[0]))
    finally:
        if bar is not None:
            bar.close()
    if results:
        return tuple(np.concatenate(parts) for parts in zip(*results))
    return (np.zeros((0, size, size, channels), np.uint8),
            np.zeros((0, len(BP4D_AUS)), np.float32), np.zeros((0, 68, 2), np.float32),
            np.zeros(0, np.float32))
