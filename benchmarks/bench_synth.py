"""Figures of the built-in face set: render time, and linear models vs a small CNN."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fer_utils import synth  # noqa: E402


def aligned_landmarks(lm: np.ndarray) -> np.ndarray:
    """Landmarks centred on the eyes, normalised for scale and roll, flattened."""
    left, right = lm[:, 36:42].mean(axis=1), lm[:, 42:48].mean(axis=1)
    d = right - left
    angle = np.arctan2(d[:, 1], d[:, 0])
    scale = np.linalg.norm(d, axis=1)
    c, s = np.cos(-angle)[:, None], np.sin(-angle)[:, None]
    centred = lm - ((left + right) / 2)[:, None]
    x = (centred[..., 0] * c - centred[..., 1] * s) / scale[:, None]
    y = (centred[..., 0] * s + centred[..., 1] * c) / scale[:, None]
    return np.concatenate([x, y], axis=1)


def time_render(n: int, workers: int | None) -> None:
    """Print how long rendering n faces (48 px grey, no cache) takes, and the CPU per face.

    The CPU per face comes from a run in this process (the worker processes' CPU time is not
    visible to this one); the wall time from a run with `workers` processes.
    """
    import resource

    def cpu_seconds() -> float:
        """CPU time of this process."""
        own = resource.getrusage(resource.RUSAGE_SELF)
        return own.ru_utime + own.ru_stime

    serial = min(n, 1000)
    cpu_start = cpu_seconds()
    synth.make_dataset(serial, seed=0, cache=False, progress=False, workers=1)
    per_face = (cpu_seconds() - cpu_start) / max(1, serial)
    start = time.perf_counter()
    fs = synth.make_dataset(n, seed=0, cache=False, progress=True, workers=workers)
    took = time.perf_counter() - start
    print(f"render: {len(fs)} faces 48×48×1 in {took:.1f} s wall ({len(fs) / took:.0f} faces/s, "
          f"workers={workers or 'auto'}, os.cpu_count()={os.cpu_count()}, load average "
          f"{os.getloadavg()[0]:.1f}); CPU {1000 * per_face:.2f} ms per face in one process "
          f"({serial} faces) → {per_face * 35887 / 2:.0f} s for 35,887 faces on 2 idle cores")


def separability(n: int, cnn_epochs: int, linear: bool = True) -> None:
    """Logistic regression on pixels / landmarks / AUs, and optionally a small CNN."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    fs = synth.make_dataset(n, seed=123, data_dir=Path(tempfile.gettempdir()) / "bench_synth",
                            progress=True)
    n_test = n // 5
    tr, te = slice(0, n - n_test), slice(n - n_test, None)
    y = fs.labels
    pixels = fs.images.reshape(n, -1).astype(np.float32)
    for name, x, c in (("raw pixels", pixels, 0.01), ("aligned landmarks", aligned_landmarks(
            fs.landmarks), 1.0), ("AU intensities", fs.aus, 1.0)) if linear else ():
        start = time.perf_counter()
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=200, tol=1e-3))
        model.fit(x[tr], y[tr])
        print(f"logistic regression on {name}: test accuracy {model.score(x[te], y[te]):.3f} "
              f"(train {model.score(x[tr], y[tr]):.3f}, {time.perf_counter() - start:.0f} s)")
    if cnn_epochs:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import keras
        from keras import layers

        keras.utils.set_random_seed(0)
        inputs = keras.Input((48, 48, 1), name="image")
        x = layers.Rescaling(1 / 255.0, name="scale")(inputs)
        for block, filters in enumerate((32, 64, 128), start=1):
            # Block N: 3×3 conv + ReLU, 2×2 max pooling
            x = layers.Conv2D(filters, 3, padding="same", activation="relu",
                              name=f"block{block}_conv")(x)
            x = layers.MaxPooling2D(name=f"block{block}_pool")(x)
        x = layers.Flatten(name="flatten")(x)
        x = layers.Dense(128, activation="relu", name="fc")(x)
        outputs = layers.Dense(7, activation="softmax", name="predictions")(x)
        model = keras.Model(inputs, outputs, name="tiny_cnn")
        model.compile(optimizer=keras.optimizers.Adam(1e-3),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        start = time.perf_counter()
        model.fit(fs.images[tr], y[tr], epochs=cnn_epochs, batch_size=64, verbose=2,
                  validation_data=(fs.images[te], y[te]))
        acc = model.evaluate(fs.images[te], y[te], verbose=0)[1]
        print(f"small CNN ({cnn_epochs} epochs, {n - n_test} train faces): test accuracy "
              f"{acc:.3f} ({time.perf_counter() - start:.0f} s)")


def dlib_boxes(size: int = 128, identities: int = 12) -> None:
    """Run dlib's frontal detector on frontal renders: hit rate and the box vs the frame."""
    import dlib

    from fer_utils.data import EXPRESSIONS

    detector = dlib.get_frontal_face_detector()
    boxes, total = [], 0
    for identity in range(identities):
        for expression in EXPRESSIONS:
            image, _ = synth.render_face(expression=expression, identity_seed=identity, size=size)
            total += 1
            rects = detector(np.ascontiguousarray(image[..., 0]), 1)
            if rects:
                r = rects[0]
                boxes.append((r.left(), r.top(), r.width(), r.height()))
    b = np.array(boxes, dtype=float)
    print(f"dlib frontal detector: {len(b)}/{total} faces found at {size} px")
    if len(b):
        scale = size / b[:, 2].mean()
        shift = ((size / 2) - (b[:, 1] + b[:, 3] / 2)).mean() / b[:, 2].mean()
        print(f"image side / box width = {scale:.3f}; image centre is {shift:.3f} box widths "
              f"below the box centre (synth.DLIB_BOX_SCALE={synth.DLIB_BOX_SCALE}, "
              f"DLIB_BOX_SHIFT={synth.DLIB_BOX_SHIFT})")


def main() -> None:
    """Parse arguments and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--render", type=int, default=35887, help="faces to time (0: skip)")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--separability", type=int, default=3000, help="faces (0: skip)")
    parser.add_argument("--cnn-epochs", type=int, default=0)
    parser.add_argument("--dlib", action="store_true", help="measure dlib's boxes on renders")
    parser.add_argument("--no-linear", action="store_true", help="skip the logistic regressions")
    args = parser.parse_args()
    if args.dlib:
        dlib_boxes()
    if args.render:
        time_render(args.render, args.workers)
    if args.separability:
        separability(args.separability, args.cnn_epochs, linear=not args.no_linear)


if __name__ == "__main__":
    main()
