"""Precision: one vocabulary ("auto", "fp32", "bf16", "fp16") and the kit's one decision.

Mixed precision computes in bfloat16 (CPUs with AVX512-BF16 or AMX) or float16 (GPUs) while
the weights stay float32. `resolve_precision("auto")` measures what pays on this machine;
`computing_in` lets a float32 model compute in mixed precision for a while (a fit), and
`float32_policies` hands it back in float32 for saving (checkpoints reload as float32).
"""

from __future__ import annotations

import contextlib
import time

import keras
import numpy as np
import tensorflow as tf

from ..config import PRECISIONS  # the one vocabulary: CLI, fit_classifier, bench, notebooks
from ..cpu import cpu_description, cpu_supports_bf16

__all__ = ["PRECISIONS", "precision_name", "cpu_supports_bf16", "cpu_description",
           "measure_precision_speed", "mixed_precision_policy", "resolve_precision",
           "enable_mixed_precision", "computing_in", "float32_policies", "all_layers"]

# Other names people use for the same thing (Keras' dtype and policy names).
_ALIASES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16",
            "mixed_bfloat16": "bf16", "mixed_float16": "fp16"}
_POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
def precision_name(precision) -> str:
    """The kit's name ("auto", "fp32", "bf16", "fp16") for a precision or one of its aliases."""
    name = _ALIASES.get(precision, precision) if isinstance(precision, str) else None
    if name not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)} (or float32, "
                         f"bfloat16, float16), got {precision!r}")
    return name


def _probe_cnn(image_size: int, filters) -> keras.Model:
    """A small CNN (3×3 convs, pooling, softmax) that times training steps."""
    inputs = keras.Input((image_size, image_size, 1), name="image")
    x = inputs
    for i, f in enumerate(filters, 1):
        x = keras.layers.Conv2D(f, 3, padding="same", activation="relu", name=f"conv{i}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="global_pool")(x)
    outputs = keras.layers.Dense(7, activation="softmax", dtype="float32", name="predictions")(x)
    return keras.Model(inputs, outputs, name="precision_probe")


def measure_precision_speed(precisions=("fp32", "bf16"), batch_size: int = 32,
                            image_size: int = 48, steps: int = 8, warmup: int = 2,
                            filters=(32, 64, 128), seed: int = 0) -> dict:
    """Seconds per training step of a small CNN in each precision: {"fp32": s, "bf16": s}.

    The median of `steps` timed steps after `warmup`; the global Keras policy is restored.
    """
    rng = np.random.default_rng(seed)
    x = tf.constant(rng.random((batch_size, image_size, image_size, 1), dtype=np.float32))
    y = tf.constant(rng.integers(0, 7, batch_size))
    previous = keras.mixed_precision.global_policy()
    results = {}
    try:
        for precision in precisions:
            name = precision_name(precision)
            keras.mixed_precision.set_global_policy(_POLICIES[name])
            model = _probe_cnn(image_size, filters)
            model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
            times = []
            for i in range(warmup + steps):
                start = time.perf_counter()
                model.train_on_batch(x, y)
                if i >= warmup:
                    times.append(time.perf_counter() - start)
            results[name] = float(np.median(times))
    finally:
        keras.mixed_precision.set_global_policy(previous)
    return results


_MEASURED: dict = {}


def mixed_precision_policy(measure: bool = True, verbose: bool = False) -> str:
    """The Keras dtype policy that pays on this machine: the kit's one precision decision.

    "mixed_float16" on a GPU; on a CPU with native bfloat16, "mixed_bfloat16" only if a
    measured small-CNN training step is at least 5 % faster than in float32 (measured once
    per process); otherwise "float32".
    """
    if tf.config.list_logical_devices("GPU"):
        return "mixed_float16"
    if not cpu_supports_bf16() or not measure:
        return "float32"
    if "choice" not in _MEASURED:
        speed = measure_precision_speed()
        _MEASURED["speed"] = speed
        _MEASURED["choice"] = "mixed_bfloat16" if speed["bf16"] < 0.95 * speed["fp32"] \
            else "float32"
    if verbose:
        speed = _MEASURED["speed"]
        print(f"CPU step time: fp32 {speed['fp32'] * 1e3:.1f} ms, bf16 {speed['bf16'] * 1e3:.1f} "
              f"ms -> {_MEASURED['choice']}")
    return _MEASURED["choice"]


def resolve_precision(precision) -> tuple[str, str]:
    """("fp32" | "bf16" | "fp16", why) for a precision argument ("auto": measured here)."""
    name = precision_name(precision)
    if name != "auto":
        return name, "asked for"
    chosen = precision_name(mixed_precision_policy())
    speed = _MEASURED.get("speed")
    if chosen == "fp16":
        why = "auto: a GPU is present"
    elif speed:
        why = (f"auto: a small-CNN step measured {speed['fp32'] * 1e3:.0f} ms in fp32 and "
               f"{speed['bf16'] * 1e3:.0f} ms in bf16 on this CPU")
    else:
        why = f"auto: this CPU has no native bfloat16 ({cpu_description()})"
    return chosen, why


def enable_mixed_precision(precision="auto", verbose: bool = True) -> str:
    """Set Keras' global dtype policy for models built afterwards; returns the policy set.

    Args:
        precision: "auto" (`mixed_precision_policy`), "fp32", "bf16" or "fp16" (or a Keras
            policy name such as "mixed_bfloat16").
        verbose: print the chosen policy.
    """
    name = precision_name(precision)
    policy = mixed_precision_policy(verbose=verbose) if name == "auto" else _POLICIES[name]
    keras.mixed_precision.set_global_policy(policy)
    if verbose:
        print(f"Keras dtype policy: {policy}")
    return policy


def all_layers(model):
    """Every layer of `model`, looking inside nested models."""
    for layer in getattr(model, "layers", []):
        yield layer
        yield from all_layers(layer)


def _set_policies(model, policy: str, outputs_too: bool) -> list:
    """Give every layer (but the inputs, and the outputs unless asked) `policy`; return the
    (layer, previous policy) pairs."""
    outputs = set(getattr(model, "output_names", None) or [model.layers[-1].name])
    saved = []
    for layer in all_layers(model):
        if isinstance(layer, keras.layers.InputLayer) or type(layer).__name__ == "Preprocess":
            continue
        if layer.name in outputs and not outputs_too:
            continue
        saved.append((layer, layer.dtype_policy))
        layer.dtype_policy = policy
    return saved


@contextlib.contextmanager
def computing_in(model, precision):
    """Let a built float32 model compute in mixed `precision` for a while (weights stay float32).

    Every layer except the outputs (a softmax in bfloat16 loses precision) and the
    preprocessing gets the policy "mixed_<precision>"; the policies are restored on exit, so
    the model saves and predicts in float32 afterwards.
    """
    name = precision_name(precision)
    if name in ("fp32", "auto"):
        yield model
        return
    saved = _set_policies(model, _POLICIES[name], outputs_too=False)
    try:
        yield model
    finally:
        for layer, policy in saved:
            layer.dtype_policy = policy


@contextlib.contextmanager
def float32_policies(model):
    """Hand a model that computes in mixed precision back in float32 for a moment (to save
    it: Keras stores each layer's policy, and a checkpoint must reload as float32)."""
    saved = _set_policies(model, "float32", outputs_too=True)
    try:
        yield model
    finally:
        for layer, policy in saved:
            layer.dtype_policy = policy
