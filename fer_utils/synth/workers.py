"""Rendering many faces: in this process, or over fresh worker processes (joblib's loky).

The workers are new Python processes that import only this package: they never re-run the
caller's script, so a script without an `if __name__ == "__main__":` guard, a script read from
stdin (`python -`), a notebook and a process that has loaded TensorFlow all work the same. When
the workers cannot start or stop early, the faces they did not deliver are rendered in this
process, after one warning line that says so.
"""

from __future__ import annotations

import warnings
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from ..faceset import BP4D_AUS
from .drawing import _render
from .landmarks import _BP4D_INDEX
from .sampling import sample_face_params

STEP = 50  # faces per step in this process, so that the progress bar moves smoothly
IDLE_WORKER_SECONDS = 10  # idle workers exit this long after the last job (they hold memory)


def render_chunk(job: tuple) -> tuple:
    """Render faces start..start+len(labels): job = (seed, start, labels, size, channels)."""
    seed, start, labels, size, channels = job
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


def _render_chunk_in_worker(job: tuple) -> tuple:
    """`render_chunk` in a worker process, without OpenCV's own threads (workers are enough)."""
    import cv2

    cv2.setNumThreads(0)
    return render_chunk(job)


def _in_workers(jobs: list, workers: int):
    """Yield each job's result, in order, from `workers` fresh worker processes."""
    from joblib import Parallel, delayed

    parallel = Parallel(n_jobs=workers, backend="loky", return_as="generator", batch_size=1,
                        idle_worker_timeout=IDLE_WORKER_SECONDS)
    yield from parallel(delayed(_render_chunk_in_worker)(job) for job in jobs)


def render_jobs(jobs: list, n: int, size: int, channels: int, workers: int,
                progress: bool) -> tuple:
    """Render every job, over `workers` processes when more than one, with a progress bar.

    Returns (images, aus, landmarks, intensity), concatenated in job order.
    """
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc=f"rendering {n} synthetic faces", unit="face")
    results = []
    try:
        if workers > 1 and len(jobs) > 1:
            try:
                for res in _in_workers(jobs, workers):
                    results.append(res)
                    if bar is not None:
                        bar.update(len(res[0]))
            except (BrokenProcessPool, OSError) as err:
                left = sum(len(job[2]) for job in jobs[len(results):])
                reason = (str(err).strip().splitlines() or [""])[0][:160]
                warnings.warn(f"the {workers} render worker processes could not start or "
                              f"stopped ({type(err).__name__}: {reason}); rendering the "
                              f"remaining {left} faces in this process", stacklevel=3)
        for job in jobs[len(results):]:
            for k in range(0, len(job[2]), STEP):
                res = render_chunk((job[0], job[1] + k, job[2][k:k + STEP], job[3], job[4]))
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
