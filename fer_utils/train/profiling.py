"""Batch size against memory and speed: computed activation memory, measured step times."""

from __future__ import annotations

import time

import numpy as np
import tensorflow as tf

__all__ = ["activation_bytes", "measure_batch_sizes"]


def activation_bytes(model, batch_size: int, bytes_per_value: int = 4) -> int:
    """Memory the layer outputs of one batch take (kept for backpropagation), in bytes.

    Computed from the layers' output shapes: every output is stored once in the forward
    pass and needed again for the gradients, so it grows linearly with the batch size.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"activation_bytes: batch_size must be an int >= 1, got {batch_size!r}")
    total = 0
    for layer in model.layers:
        if type(layer).__name__ == "InputLayer":
            continue
        outputs = layer.output if isinstance(layer.output, (list, tuple)) else [layer.output]
        for out in outputs:
            total += int(np.prod([d for d in out.shape[1:]])) * batch_size
    return total * bytes_per_value


def measure_batch_sizes(build_model, batch_sizes=(8, 32, 128), input_shape=(48, 48, 1),
                        num_classes: int = 7, steps: int = 5, warmup: int = 1, seed: int = 0,
                        progress: bool = True):
    """Measure training speed (and memory) of a model for several batch sizes.

    Args:
        build_model: a function returning a fresh, *uncompiled* Keras model.
        batch_sizes: the batch sizes to try.
        input_shape: one input's shape; random images are used.
        num_classes: labels are drawn from 0..num_classes-1.
        steps: timed training steps per batch size (after `warmup` untimed ones).
        seed: seed of the random data.
        progress: show a tqdm bar over the batch sizes.

    Returns:
        A pandas DataFrame indexed by batch size: seconds per step, images per second,
        activation MB (computed, `activation_bytes`), parameter + Adam state MB, and peak
        GPU MB (measured; NaN on a CPU).
    """
    import pandas as pd

    sizes = [int(b) for b in batch_sizes]
    if not sizes or min(sizes) < 1:
        raise ValueError(f"measure_batch_sizes: batch sizes must be ints >= 1, got {batch_sizes!r}")
    if steps < 1 or warmup < 1:
        raise ValueError(f"measure_batch_sizes: steps and warmup must be >= 1, got {steps}, "
                         f"{warmup}")
    gpus = tf.config.list_logical_devices("GPU")
    rng = np.random.default_rng(seed)
    rows = []
    iterator = sizes
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(sizes, desc="batch sizes", leave=False)
    for batch in iterator:
        model = build_model()
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        x = tf.constant(rng.random((batch, *input_shape), dtype=np.float32))
        y = tf.constant(rng.integers(0, num_classes, batch))
        if gpus:
            tf.config.experimental.reset_memory_stats(gpus[0].name.replace("/device:", ""))
        for _ in range(warmup):
            model.train_on_batch(x, y)
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            model.train_on_batch(x, y)
            times.append(time.perf_counter() - start)
        peak = float("nan")
        if gpus:
            info = tf.config.experimental.get_memory_info(gpus[0].name.replace("/device:", ""))
            peak = info["peak"] / 2 ** 20
        step = float(np.median(times))
        rows.append({"batch size": batch, "seconds per step": step, "images per second":
                     batch / step, "activation MB": activation_bytes(model, batch) / 2 ** 20,
                     "weights + Adam MB": model.count_params() * 4 * 4 / 2 ** 20,
                     "peak GPU MB": peak})
    return pd.DataFrame(rows).set_index("batch size")
