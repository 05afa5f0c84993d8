"""`fit_classifier`: the kit's one training entry point for classifiers on uint8 faces.

It computes a frozen, deterministic prefix of the model once (the "cached" path,
`fer_utils.train.cache`) when nothing upstream of the trainable layers changes from step to
step, else runs the whole model every step (the "full" path), and says which and why. The
rate follows a `BudgetSchedule` (cosine or constant, over epochs or a time budget);
checkpoints hold the full image-to-label model in float32; the validation report is the
returned float32 model's own.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from .. import metrics
from .balance import CLASS_WEIGHTS, class_weights
from .cache import feature_batches, frozen_features, plan_cache
from .callbacks import CallbacksOnModel, make_callbacks, run_dir
from .precision import all_layers, computing_in, resolve_precision
from .schedule import SCHEDULES, BudgetSchedule

__all__ = ["fit_classifier", "FitResult", "CollapseWarning", "collapse_message",
           "classifier_batches", "AUGMENTATIONS", "SCHEDULES", "ModelInput"]

# on-the-fly augmentation of `fit_classifier`: False, "flip-shift" (`augment.tf_flip_shift`),
# "full" or True (`augment.tf_random_augment`: pixel ops, rotation and shift)
AUGMENTATIONS = (False, True, "flip-shift", "full")
# "Until the budget is spent": the epochs Keras is told when a time budget plans them.
_UNTIL_BUDGET = 100_000


class CollapseWarning(UserWarning):
    """A classifier gives (almost) one class for every face: it has learned nothing useful."""


def collapse_message(report: dict, where: str) -> str | None:
    """A one-line warning when one class takes > 90 % of the predictions of `report`."""
    if not report or not report.get("collapsed"):
        return None
    return (f"collapse on the {where} set: {report['dominant_share']:.0%} of the "
            f"{report['faces']} faces are predicted '{report['dominant_class']}' (more than "
            f"{metrics.COLLAPSE_SHARE:.0%} in one class): the model has not learned to tell "
            f"the expressions apart (try more epochs, a lower learning rate, pretrained "
            f"weights or class weights)")


def _softmax_problem(model) -> str | None:
    """Why `model`'s output is not a softmax over classes (None when it is)."""
    layer = model.get_layer(model.output_names[0]) if getattr(model, "output_names", None) \
        else model.layers[-1]
    if isinstance(layer, keras.Model):
        return _softmax_problem(layer)
    if isinstance(layer, keras.layers.Average):  # test-time flips: an average of classifiers
        inner = [op for op in all_layers(model) if isinstance(op, keras.Model)]
        return _softmax_problem(inner[0]) if inner else None
    activation = getattr(layer, "activation", None)
    name = getattr(activation, "__name__", str(activation))
    if isinstance(layer, keras.layers.Softmax) or name == "softmax":
        return None
    return (f"its output layer {layer.name!r} has activation {name!r}, not softmax (e.g. "
            f"small_cnn(head='logits')): the kit's loss and reports take probabilities; build "
            f"it with a softmax head")


@dataclasses.dataclass
class ModelInput:
    """How a classifier takes its images: size, channels, classes (raw pixels, 0-255)."""

    size: tuple
    channels: int
    num_classes: int

    @classmethod
    def of(cls, model) -> "ModelInput":
        """Read them from the model; refuse what the kit cannot train (with the reason)."""
        from ..models.preprocess import check_takes_raw_pixels

        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise ValueError(f"fit_classifier trains a model with one image input and one "
                             f"softmax output; {model.name!r} has {len(model.inputs)} inputs "
                             f"and {len(model.outputs)} outputs")
        shape = tuple(model.input_shape[1:])
        if len(shape) != 3 or None in shape or shape[2] not in (1, 3):
            raise ValueError(f"fit_classifier: the model's input must be H×W×C images with a "
                             f"fixed size and 1 or 3 channels, got {shape}")
        problem = _softmax_problem(model)
        if problem:
            raise ValueError(f"fit_classifier: model {model.name!r}: {problem}")
        check_takes_raw_pixels(model, "fit_classifier")
        return cls(shape[:2], shape[2], int(model.output_shape[-1]))

    def batches(self, faces, batch_size: int, shuffle: bool, seed: int, augment=False):
        """The faces as a tf.data pipeline of (raw-pixel images, labels) the model takes.

        augment: False, True / "full" (`augment.tf_random_augment` inside `to_tf_dataset`) or
        "flip-shift" (`augment.tf_flip_shift` on each finished batch: mirror, and shift by up
        to 1/12 of the side, 4 px at 48 px).
        """
        from .. import data

        full = augment is True or augment == "full"
        batches = data.to_tf_dataset(faces, batch_size=batch_size, shuffle=shuffle, seed=seed,
                                     image_size=self.size, channels=self.channels, augment=full)
        if augment != "flip-shift":
            return batches
        from ..augment import tf_flip_shift

        shift = max(1, int(round(min(self.size) / 12)))
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        return tf.data.Dataset.zip(batches, seeds).map(
            lambda xy, r: (tf_flip_shift(xy[0], tf.stack([tf.constant(seed, tf.int64), r]),
                                         max_shift=shift), xy[1]),
            num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def classifier_batches(model, faces, batch_size: int, shuffle: bool = False, seed: int = 0,
                       augment=False):
    """The faces as the (images, labels) batches `model` takes, as `fit_classifier` makes them.

    Returns:
        A tf.data.Dataset of (raw-pixel float images, int labels) batches.
    """
    _check_fit_args(1, batch_size, None, "auto", augment, 1)
    return ModelInput.of(model).batches(faces, int(batch_size), shuffle, int(seed),
                                        augment=augment)


@dataclasses.dataclass
class FitResult:
    """What `fit_classifier` did: the trained model, its history and how fast it went."""

    model: object  # the full image-to-label Keras model, trained in place and compiled
    history: dict  # per-epoch metrics, as keras.callbacks.History.history
    path: str  # "cached" (frozen part computed once) or "full" (every layer every step)
    reason: str  # why that path
    precision: str  # "fp32", "bf16" or "fp16" (mixed precision; weights float32)
    images: int  # training images
    epochs: int  # epochs run by this call (fewer when the budget stopped it, or resuming)
    seconds: float  # wall time: feature caching + training + per-epoch validation
    cache_seconds: float  # wall time of the frozen-feature pass (0 on the full path)
    stopped: str | None = None  # the time budget's message when it stopped training early
    val_report: dict | None = None  # `fer_utils.metrics.prediction_report` of the model on val
    run_dir: Path | None = None  # the run folder (TensorBoard, best.keras, backup) if any
    val_probabilities: np.ndarray | None = None  # the returned float32 model's outputs on val
    schedule: dict | None = None  # the schedule's plan and state (`BudgetSchedule.state`)

    @property
    def images_per_second(self) -> float:
        """Training images × epochs / total wall time (caching and validation included)."""
        return self.images * self.epochs / max(self.seconds, 1e-9)

    @property
    def val_accuracy(self) -> float | None:
        """Validation accuracy of the returned model (None without validation data)."""
        return None if self.val_report is None else self.val_report["accuracy"]

    def __str__(self) -> str:
        """One line: path, precision, images/s and validation accuracy."""
        acc = "" if self.val_accuracy is None else f", val accuracy {self.val_accuracy:.3f}"
        return (f"fit_classifier ({self.path} path, {self.precision}): {self.images} images × "
                f"{self.epochs} epochs in {self.seconds:.1f} s{acc}: "
                f"{self.images_per_second:.1f} img/s")


def _as_faces(part, name: str, num_classes: int):
    """A FaceSet from a FaceSet or an (uint8 images, labels) pair; labels checked."""
    from .. import data

    if part is None:
        return None
    if isinstance(part, data.FaceSet):
        faces = part
    elif isinstance(part, (tuple, list)) and len(part) == 2:
        images, labels = np.asarray(part[0]), np.asarray(part[1]).reshape(-1)
        if images.dtype != np.uint8:
            raise ValueError(f"{name} images must be uint8 N×H×W×C, got {images.dtype}")
        top = int(labels.max()) + 1 if labels.size else 0
        faces = data.FaceSet(images=images, labels=labels,
                             class_names=tuple(str(i) for i in range(max(top, num_classes))))
    else:
        raise TypeError(f"{name} must be a FaceSet or an (images, labels) pair, "
                        f"got {type(part).__name__}")
    if len(faces) == 0:
        raise ValueError(f"{name} holds no faces")
    if faces.labels.max() >= num_classes:
        raise ValueError(f"{name} labels must lie in 0..{num_classes - 1} (the model has "
                         f"{num_classes} outputs), got {faces.labels.min()}.."
                         f"{faces.labels.max()}")
    return faces


def _check_fit_args(epochs, batch_size, minutes, cache, augment, max_cache_mb,
                    schedule="constant", class_weight=None) -> None:
    """Reject bad `fit_classifier` arguments with the bad value in the message."""
    if epochs is None and minutes is None:
        raise ValueError("give epochs, or minutes (a time budget that plans the epochs)")
    for arg, value in (("epochs", epochs), ("batch_size", batch_size)):
        if value is None and arg == "epochs":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{arg} must be a positive integer, got {value!r}")
    if not any(augment is a if isinstance(a, bool) else augment == a for a in AUGMENTATIONS):
        raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {augment!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES} (or None: constant), "
                         f"got {schedule!r}")
    if isinstance(class_weight, str) and class_weight not in CLASS_WEIGHTS:
        raise ValueError(f"class_weight must be None, a dict or one of {CLASS_WEIGHTS}, "
                         f"got {class_weight!r}")
    if minutes is not None and (isinstance(minutes, bool) or not isinstance(minutes, (int, float))
                                or not minutes > 0):
        raise ValueError(f"minutes must be a number > 0 or None, got {minutes!r}")
    if cache not in (True, False, "auto"):
        raise ValueError(f"cache must be True, False or 'auto', got {cache!r}")
    if cache is True and augment:
        raise ValueError("cache=True cannot be combined with augment=True: augmented images "
                         "change every step, so the frozen part's output cannot be computed once")
    if not max_cache_mb > 0:
        raise ValueError(f"max_cache_mb must be > 0, got {max_cache_mb!r}")


@dataclasses.dataclass(frozen=True)
class _Run:
    """What one `fit_classifier` call trains with (shared by the cached and full paths)."""

    epochs: int
    batch_size: int
    optimizer: object
    callbacks: list
    class_weight: dict | None
    seed: int
    precision: str
    verbose: int

    @property
    def keras_verbose(self) -> int:
        """Keras' own verbosity: 0 silent, 1 progress bars, 2 one line per epoch."""
        return 0 if not self.verbose else 2 if self.verbose == 2 else 1


def _compile(model, optimizer) -> None:
    """Sparse categorical cross-entropy and accuracy, with the (shared) optimizer."""
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])


def _fit_cached(model, plan, train, val, inputs: ModelInput, run: _Run):
    """Cached path: the frozen part once, then the tail trains; callbacks see the full model."""
    dtype = {"fp32": tf.float32, "bf16": tf.bfloat16, "fp16": tf.float16}[run.precision]
    started = time.perf_counter()
    big = max(run.batch_size, 64)
    x_train = frozen_features(plan.frozen, train, inputs, big, dtype,
                              "computing the frozen layers once (training faces)",
                              run.verbose)
    x_val = None if val is None else frozen_features(
        plan.frozen, val, inputs, big, dtype, "computing the frozen layers once (validation "
        "faces)", run.verbose)
    cache_seconds = time.perf_counter() - started
    _compile(plan.tail, run.optimizer)
    _compile(model, run.optimizer)  # what checkpoints save: the same layers and optimizer
    callbacks = [CallbacksOnModel(run.callbacks, model)] if run.callbacks else []
    history = plan.tail.fit(
        feature_batches(x_train, train.labels, run.batch_size, True, run.seed),
        validation_data=None if val is None else feature_batches(x_val, val.labels, big,
                                                                 False, 0),
        epochs=run.epochs, callbacks=callbacks, shuffle=False,
        class_weight=run.class_weight, verbose=run.keras_verbose)
    return history.history, cache_seconds


def _fit_full(model, train, val, inputs: ModelInput, run: _Run, augment):
    """Full path: every layer runs on every batch of (possibly augmented) images."""
    _compile(model, run.optimizer)
    big = max(run.batch_size, 64)
    history = model.fit(
        inputs.batches(train, run.batch_size, True, run.seed, augment=augment),
        validation_data=None if val is None else inputs.batches(val, big, False, 0),
        epochs=run.epochs, callbacks=run.callbacks, shuffle=False,
        class_weight=run.class_weight, verbose=run.keras_verbose)
    return history.history, 0.0


def predict_faces_with(model, faces, batch_size: int = 256) -> np.ndarray:
    """`model`'s outputs (N×K) on a FaceSet, in the model's own (float32) precision."""
    inputs = ModelInput.of(model)
    step = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    return np.concatenate([np.asarray(step(x), np.float32)
                           for x, _ in inputs.batches(faces, batch_size, False, 0)])


def fit_classifier(model, train, val=None, *, epochs: int | None, batch_size: int = 32,
                   learning_rate: float | None = None, optimizer=None, augment=False,
                   precision: str = "fp32", class_weight=None, run_name: str | None = None,
                   log_dir=None, callbacks=None, monitor: str | None = None, seed: int = 0,
                   verbose: int = 1, minutes: float | None = None, cache="auto",
                   max_cache_mb: float = 2048, schedule: str | None = "constant",
                   keep_backup: bool = False) -> FitResult:
    """Train a classifier on uint8 faces: the kit's one training entry point.

    The CACHED path: when the model starts with frozen layers (e.g. VGG16 blocks 1-4 with
    pretrained weights), nothing is augmented and their output fits in `max_cache_mb`, those
    layers are deterministic, so they run ONCE per image and the epochs train only the
    trainable tail on their output. In float32 that is the same training as running the
    whole model every step (same weights after each step). Otherwise the FULL path runs
    every layer on every batch. Either way `model` itself is trained in place, and
    checkpoints (`best.keras`, float32), BackupAndRestore and TensorBoard see the full
    image-to-label model. It prints the path and why, the precision, and warns
    (`CollapseWarning`) when one class takes more than 90 % of the validation predictions.

    Args:
        model: a Keras classifier: one H×W×C raw-pixel image input (it starts with its own
            preprocessing layer, as every `fu.models` builder's model does), one softmax
            output (sparse labels).
        train: FaceSet, or (uint8 images N×H×W×C, labels). Faces are resized and converted
            to the model's input size and channels per batch (`fu.data.to_tf_dataset`).
        val: optional validation FaceSet or pair: per-epoch validation and the final report.
        epochs: training epochs; None with `minutes`: as many whole epochs as the budget
            allows, planned after the first one (`BudgetSchedule`).
        batch_size: images per step.
        learning_rate: Adam's rate when `optimizer` is None; default 1e-4 for a model with
            VGG16's layers (fine-tuning) and 1e-3 otherwise.
        optimizer: a Keras optimizer instead (e.g. `layerwise_optimizer(...)`).
        augment: augmentation of every batch, on the full path: False (none), True or
            "full" (`fu.augment.tf_random_augment`: pixel ops, rotation, shift) or
            "flip-shift" (`fu.augment.tf_flip_shift`: mirror, and shift by up to 1/12 of
            the side; nearly free).
        precision: "fp32" (default), "bf16", "fp16" (mixed precision, weights stay float32)
            or "auto" (measured on this machine; `fu.train.resolve_precision`).
        class_weight: None, {class: weight}, "balanced" or "sqrt" (`class_weights(train
            labels, kind=...)`).
        run_name: a run folder under `log_dir` with the standard callbacks (`make_callbacks`:
            TensorBoard, float32 best.keras, BackupAndRestore: re-running resumes with the
            schedule where it was, history.csv).
        log_dir: the log folder of `run_name` (default: the FER_LOG_DIR setting).
        callbacks: more Keras callbacks (they see the full model on either path).
        monitor: the checkpoint's quantity (default "val_loss", or "loss" without `val`).
        seed: seed of the batch order (and of augmentation).
        verbose: 0 silent; 1 progress bars and the lines about path and result; 2 one line
            per epoch instead of progress bars.
        minutes: time budget of training (feature caching included): it plans the epochs
            when `epochs` is None, and stops training after the step that spends it; None:
            no budget.
        cache: "auto" (choose as above), True (require the cached path) or False (full path).
        max_cache_mb: memory allowed for the frozen part's output ("auto" mode).
        schedule: "constant" (or None) or "cosine": the rate of every step goes from the
            first rate to 0 over the planned steps (`BudgetSchedule`); the history logs each
            epoch's last rate.
        keep_backup: keep the run's backup after the fit (the caller deletes it when its own
            work after the fit is saved, so that an interruption then still resumes).

    Returns:
        FitResult: model (trained in place, compiled, float32), history, path and reason,
        precision, images, epochs, seconds (caching + training), images_per_second,
        val_report and val_probabilities (of the returned float32 model), val_accuracy,
        stopped, run_dir, schedule.
    """
    started = time.perf_counter()
    schedule = "constant" if schedule is None else schedule
    _check_fit_args(epochs, batch_size, minutes, cache, augment, max_cache_mb, schedule,
                    class_weight)
    inputs = ModelInput.of(model)
    train_faces = _as_faces(train, "train", inputs.num_classes)
    val_faces = _as_faces(val, "val", inputs.num_classes)
    chosen, why = resolve_precision(precision)
    if isinstance(class_weight, str):
        class_weight = class_weights(train_faces.labels, inputs.num_classes, class_weight)
    plan = plan_cache(model, train_faces, val_faces, augment, cache, max_cache_mb, chosen)
    if verbose:
        print(f"fit_classifier: {'cached' if plan.cached else 'full'} path: {plan.reason}; "
              f"precision {chosen} ({why})", flush=True)
    if optimizer is None:
        optimizer = keras.optimizers.Adam(learning_rate or (
            1e-4 if {"block4_conv3", "block5_conv3"} <= {layer.name for layer in
                                                         all_layers(model)} else 1e-3))
    scheduler = None
    if minutes is not None or schedule == "cosine":
        scheduler = BudgetSchedule(float(np.asarray(optimizer.learning_rate)), schedule,
                                   epochs=None if epochs is None else int(epochs),
                                   minutes=minutes, started=started, verbose=bool(verbose))
    monitor = monitor or ("val_loss" if val_faces is not None else "loss")
    folder = None
    if run_name is not None:
        folder = run_dir(run_name, log_dir)
        run_callbacks = make_callbacks(run_name, log_dir=log_dir, monitor=monitor,
                                       schedule=scheduler,
                                       backup="keep" if keep_backup else True) \
            + list(callbacks or [])
    else:
        run_callbacks = ([scheduler] if scheduler else []) + list(callbacks or [])
    if chosen == "fp16" and not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    run = _Run(epochs=_UNTIL_BUDGET if epochs is None else int(epochs),
               batch_size=int(batch_size), optimizer=optimizer, callbacks=run_callbacks,
               class_weight=class_weight, seed=int(seed), precision=chosen, verbose=verbose)
    with computing_in(model, chosen):
        if plan.cached:
            history, cache_seconds = _fit_cached(model, plan, train_faces, val_faces, inputs,
                                                 run)
        else:
            history, cache_seconds = _fit_full(model, train_faces, val_faces, inputs, run,
                                               augment)
    seconds = time.perf_counter() - started
    _compile(model, optimizer)  # float32 again: evaluate, predict and save the full model
    # The report is the returned float32 model's own (not the mixed-precision tail's).
    probabilities = None if val_faces is None else predict_faces_with(model, val_faces)
    report = None if val_faces is None else metrics.prediction_report(
        val_faces.labels, probabilities, val_faces.class_names[:inputs.num_classes])
    result = FitResult(model=model, history=history, path="cached" if plan.cached else "full",
                       reason=plan.reason, precision=chosen, images=len(train_faces),
                       epochs=len(history.get("loss", [])), seconds=seconds,
                       cache_seconds=cache_seconds,
                       stopped=scheduler.message if scheduler else None, val_report=report,
                       val_probabilities=probabilities, run_dir=folder,
                       schedule=scheduler.state() if scheduler else None)
    message = collapse_message(report, "validation")
    if message:
        warnings.warn(message, CollapseWarning, stacklevel=2)
    if verbose:
        print(result, flush=True)
    return result
