"""Training: the one entry point `fit_classifier`, callbacks, per-layer rates, precision.

- `fit_classifier`: trains a classifier on uint8 faces for the CLI, the notebooks and `bench`.
  It computes a frozen, deterministic prefix of the model once ("cached" path) when nothing
  upstream of the trainable layers changes from step to step, else runs the whole model
  every step ("full" path), and says which and why. Checkpoints always hold the full
  image-to-label model.
- `CosineDecayToBudget`: a cosine learning-rate decay driven by the time budget (the rate
  reaches 0 when the time is up, whatever the machine's speed), and the stop at the budget.
- `make_callbacks`: TensorBoard under `logs/<run>`, best-model checkpoint, BackupAndRestore
  (re-running an interrupted run resumes at the next epoch), CSV log, optional
  confusion-matrix images and a compact tqdm progress bar.
- `layerwise_optimizer`: real per-layer learning rates (one inner optimizer per rate).
- `class_weights`: "balanced" weights for rare classes (scikit-learn).
- `distribution_strategy`: one device, MirroredStrategy or MultiWorkerMirroredStrategy.
- `mixed_precision_policy`: the one place that decides on bfloat16/float16, by measuring.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import time
import warnings
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from . import metrics

__all__ = [
    "fit_classifier",
    "FitResult",
    "CollapseWarning",
    "collapse_message",
    "split_frozen",
    "make_callbacks",
    "TqdmProgress",
    "ConfusionMatrixLogger",
    "BackupAndRestore",
    "TimeBudget",
    "CosineDecayToBudget",
    "SCHEDULES",
    "AUGMENTATIONS",
    "CLASS_WEIGHTS",
    "classifier_batches",
    "CallbacksOnModel",
    "LayerwiseOptimizer",
    "layerwise_optimizer",
    "rate_for_path",
    "class_weights",
    "distribution_strategy",
    "cpu_supports_bf16",
    "measure_precision_speed",
    "mixed_precision_policy",
    "enable_mixed_precision",
    "resolve_precision",
    "run_dir",
    "activation_bytes",
    "measure_batch_sizes",
]

OPTIMIZERS = ("adam", "sgd", "nesterov", "rmsprop", "adamw", "nadam", "adagrad")
# learning-rate schedules of `fit_classifier`: constant, or cosine to 0 over the budget
SCHEDULES = (None, "cosine")
# on-the-fly augmentation of `fit_classifier`: False, "flip-shift" (`augment.tf_flip_shift`),
# "full" or True (`augment.tf_random_augment`: pixel ops, rotation and shift)
AUGMENTATIONS = (False, True, "flip-shift", "full")
# class weights: "balanced" n / (K·count), "sqrt" its square root (halfway to no weights)
CLASS_WEIGHTS = ("balanced", "sqrt")
PRECISIONS = ("auto", "float32", "bfloat16", "float16")
_PRECISION_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16",
                      "mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}


class CollapseWarning(UserWarning):
    """A classifier gives (almost) one class for every face: it has learned nothing useful."""


# --------------------------------------------------------------------------- callbacks


def run_dir(run_name: str, log_dir=None) -> Path:
    """The folder of one run: `<log_dir or settings.log_dir>/<run_name>` (not created)."""
    if not isinstance(run_name, str) or not run_name.strip() or run_name.strip() in (".", ".."):
        raise ValueError(f"run_name must be a non-empty folder name, got {run_name!r}")
    if os.sep in run_name.strip("/") or "/" in run_name.strip("/"):
        raise ValueError(f"run_name must be a single folder name without '/', got {run_name!r}")
    if log_dir is None:
        from .config import get_settings

        log_dir = get_settings().log_dir
    return Path(log_dir) / run_name.strip().strip("/")


class TqdmProgress(keras.callbacks.Callback):
    """A compact progress bar for notebooks: one tqdm bar over epochs with the last metrics.

    Use it with `fit(..., verbose=0)`.

    Args:
        metrics: names of the metrics to show (default: all).
        desc: the bar's title.
        leave: keep the finished bar.
    """

    def __init__(self, metrics=None, desc: str = "epochs", leave: bool = True):
        super().__init__()
        self.metrics = None if metrics is None else tuple(metrics)
        self.desc = desc
        self.leave = leave
        self.bar = None

    def on_train_begin(self, logs=None):
        """Open the bar over the run's epochs."""
        from tqdm.auto import tqdm

        epochs = self.params.get("epochs") if self.params else None
        self.bar = tqdm(total=epochs, desc=self.desc, leave=self.leave, unit="epoch")

    def on_epoch_begin(self, epoch, logs=None):
        """Move the bar to a resumed run's first epoch (BackupAndRestore starts later)."""
        if self.bar is not None and self.bar.n < epoch:
            self.bar.update(epoch - self.bar.n)

    def on_epoch_end(self, epoch, logs=None):
        """Advance the bar; show the epoch's metrics."""
        logs = logs or {}
        shown = {k: f"{float(v):.3g}" for k, v in logs.items()
                 if (self.metrics is None or k in self.metrics)
                 and np.ndim(v) == 0 and k != "learning_rate"}
        if self.bar is not None:
            self.bar.set_postfix(shown, refresh=False)
            self.bar.update(1)

    def on_train_end(self, logs=None):
        """Close the bar."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class ConfusionMatrixLogger(keras.callbacks.Callback):
    """Writes the validation confusion matrix as an image to TensorBoard ("Images" tab).

    Args:
        data: (x, y) arrays or a finite tf.data dataset of (x, y) batches; y are class
            indices or one-hot rows.
        log_dir: the run folder (images go to `<log_dir>/confusion_matrix`).
        class_names: names for the axes (default "0".."K-1").
        freq: write every `freq` epochs.
        normalize: row-normalise (recall per class on the diagonal).
    """

    def __init__(self, data, log_dir, class_names=None, freq: int = 1, normalize=True):
        super().__init__()
        if isinstance(freq, bool) or not isinstance(freq, int) or freq < 1:
            raise ValueError(f"ConfusionMatrixLogger: freq must be an int >= 1, got {freq!r}")
        self.data = data
        self.log_dir = str(Path(log_dir) / "confusion_matrix")
        self.class_names = None if class_names is None else [str(c) for c in class_names]
        self.freq = freq
        self.normalize = normalize
        self._writer = None
        self.last_matrix = None

    def _predict(self):
        """(true labels, predicted labels) on the callback's data."""
        if isinstance(self.data, (tuple, list)) and len(self.data) == 2:
            x, y = self.data
            prob = self.model.predict(x, verbose=0)
            return metrics.as_labels(y), metrics.as_labels(prob)
        y, prob = metrics.predict_labels(self.model, self.data)
        return metrics.as_labels(y), metrics.as_labels(prob)

    def _image(self, cm, names, epoch: int):
        """The matrix drawn by `fer_utils.plots`, as a 1×H×W×4 uint8 tensor."""
        import matplotlib.pyplot as plt

        from . import plots

        fig = plt.figure(figsize=(4.8, 4.2))
        plots.plot_confusion_matrix(cm, names, ax=fig.gca(), normalize=self.normalize,
                                    title=f"epoch {epoch + 1}")
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=80)
        plt.close(fig)
        return tf.image.decode_png(buffer.getvalue(), channels=4)[None]

    def on_epoch_end(self, epoch, logs=None):
        """Predict the data, draw the matrix, write it to TensorBoard."""
        if (epoch + 1) % self.freq:
            return
        y_true, y_pred = self._predict()
        k = len(self.class_names) if self.class_names else int(max(y_true.max(),
                                                                   y_pred.max())) + 1
        names = self.class_names or [str(i) for i in range(k)]
        self.last_matrix = metrics.confusion_matrix(y_true, y_pred, k)
        image = self._image(self.last_matrix, names, epoch)
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        with self._writer.as_default():
            tf.summary.image("confusion_matrix", image, step=epoch)
        self._writer.flush()

    def on_train_end(self, logs=None):
        """Close the TensorBoard writer."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """keras.callbacks.BackupAndRestore that forgets the resume epoch once a fit is over.

    After a resumed fit, Keras keeps `model._initial_epoch`, so the next `fit` of the same
    model would skip epochs; this subclass clears it at the end of training.
    """

    def on_train_end(self, logs=None):
        """Delete the backup (Keras) and clear the resume epoch."""
        super().on_train_end(logs)
        self.model._initial_epoch = None


class TimeBudget(keras.callbacks.Callback):
    """Stops training after an epoch when one more epoch would end past a wall-clock budget.

    Args:
        minutes: the budget in minutes.
        started: `time.perf_counter()` at the start of the whole run (e.g. before a feature
            cache was computed); default: when training begins.
        verbose: print the line that says training stopped early, and why.
    """

    def __init__(self, minutes: float, started: float | None = None, verbose: bool = True):
        super().__init__()
        if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or minutes <= 0:
            raise ValueError(f"TimeBudget: minutes must be a number > 0, got {minutes!r}")
        self.minutes = float(minutes)
        self.started = started
        self.verbose = verbose
        self.message = None
        self._begin = self._epochs = None

    def on_train_begin(self, logs=None):
        """Remember when training began."""
        self._begin = time.perf_counter()
        self.started = self._begin if self.started is None else self.started
        self._epochs = 0
        self.message = None

    def on_epoch_end(self, epoch, logs=None):
        """Stop when the mean epoch time says the next epoch would overrun the budget."""
        self._epochs += 1
        now = time.perf_counter()
        per_epoch = (now - self._begin) / self._epochs
        used = now - self.started
        total = (self.params or {}).get("epochs") or epoch + 2
        if epoch + 1 < total and used + per_epoch > self.minutes * 60:
            self.model.stop_training = True
            self.message = (f"time budget: stopped after epoch {epoch + 1} of {total}: "
                            f"{used / 60:.1f} of {self.minutes:g} minutes used, and one more "
                            f"epoch takes about {per_epoch / 60:.1f} minutes")
            if self.verbose:
                print(self.message, flush=True)


class CosineDecayToBudget(keras.callbacks.Callback):
    """Cosine learning-rate decay over a time budget: the rate reaches 0 when time is up.

    Before every training batch the rate is set to `learning_rate · (1 + cos(π·f)) / 2`,
    where f is the part of the run already done: the larger of the part of the time budget
    used and the part of the planned steps (epochs × steps per epoch) taken. A fast machine
    runs more epochs, a slow or busy one fewer, and either way the rate has decayed to ~0 by
    the end, which is when a cosine schedule gives its best model. When the budget is spent,
    training stops after the current batch (Keras still validates that epoch).

    Args:
        learning_rate: the rate at the start.
        minutes: the budget in minutes (None: the steps alone drive the decay).
        started: `time.perf_counter()` when the budget began (e.g. before a feature cache was
            computed); default: when training begins.
        verbose: print the line that says training stopped at the budget.
    """

    def __init__(self, learning_rate: float, minutes: float | None = None,
                 started: float | None = None, verbose: bool = True):
        super().__init__()
        if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float)) \
                or not learning_rate > 0:
            raise ValueError(f"CosineDecayToBudget: learning_rate must be a number > 0, "
                             f"got {learning_rate!r}")
        if minutes is not None and (isinstance(minutes, bool)
                                    or not isinstance(minutes, (int, float)) or minutes <= 0):
            raise ValueError(f"CosineDecayToBudget: minutes must be a number > 0 or None, "
                             f"got {minutes!r}")
        self.learning_rate = float(learning_rate)
        self.minutes = None if minutes is None else float(minutes)
        self.started = started
        self.verbose = verbose
        self.message = None
        self.rates: list[float] = []  # the rate of every batch, in order
        self._steps_done = 0
        self._total_steps = None

    def fraction(self) -> float:
        """The part of the run done (0 at the start, 1 at the end): time or steps."""
        parts = [0.0]
        if self.minutes is not None and self.started is not None:
            parts.append(self._used() / (self.minutes * 60))
        if self._total_steps:
            parts.append(self._steps_done / self._total_steps)
        return float(min(max(parts), 1.0))

    def on_train_begin(self, logs=None):
        """Start the clock (unless given) and count the planned steps."""
        self.started = time.perf_counter() if self.started is None else self.started
        params = self.params or {}
        steps, epochs = params.get("steps"), params.get("epochs")
        self._total_steps = int(steps) * int(epochs) if steps and epochs else None
        self._steps_done = 0
        self.message = None

    def _share(self) -> float:
        """The cosine's share of the first rate at the part of the run done: 1 -> 0."""
        return 0.5 * (1.0 + np.cos(np.pi * self.fraction()))

    def on_train_batch_begin(self, batch, logs=None):
        """Set the rate from the part of the run done."""
        rate = self.learning_rate * self._share()
        self.model.optimizer.learning_rate = rate
        self.rates.append(float(rate))

    # An epoch that would start at a rate below this part of the first one teaches nothing
    # more (cosine: past 98 % of the budget); stopping at its end saves the next epoch's
    # start-up and validation, which would overrun the budget.
    LAST_USEFUL_RATE = 1e-3

    def on_epoch_end(self, epoch, logs=None):
        """Log the epoch's last rate (history, CSV log, TensorBoard); stop when the next epoch
        would run at a rate below `LAST_USEFUL_RATE` of the first."""
        if logs is not None and self.rates:
            logs["learning_rate"] = self.rates[-1]
        if self.minutes is None or self.started is None or self.model.stop_training:
            return
        if self._share() < self.LAST_USEFUL_RATE:
            self._stop(f"at the end of epoch {epoch + 1} after", f" (another epoch would start "
                       f"below {self.LAST_USEFUL_RATE:.1%} of the first rate)")

    def _used(self) -> float:
        """Seconds since the budget began."""
        return time.perf_counter() - self.started

    def _stop(self, when: str, why: str = "") -> None:
        """Stop training and say so: when, steps, minutes used and the rate reached."""
        self.model.stop_training = True
        self.message = (f"time budget: stopped {when} {self._steps_done} steps, "
                        f"{self._used() / 60:.1f} of {self.minutes:.1f} minutes used; the "
                        f"learning rate has decayed to {self.rates[-1]:.2g}{why}")
        if self.verbose:
            print(self.message, flush=True)

    def on_train_batch_end(self, batch, logs=None):
        """Count the step; stop when the time budget is spent."""
        self._steps_done += 1
        if self.minutes is None or self.started is None:
            return
        if self._used() >= self.minutes * 60 and not self.model.stop_training:
            self._stop("after")


class CallbacksOnModel(keras.callbacks.Callback):
    """Runs callbacks on another model than the one `fit` trains.

    On the cached path `fit_classifier` trains the trainable tail of a model on precomputed
    features; wrapped in this callback, ModelCheckpoint, BackupAndRestore, TensorBoard and
    the rest see the FULL image-to-label model (which shares the tail's layers and
    optimizer), so what they save takes images. Stopping requests and BackupAndRestore's
    resume epoch are passed on to the model that trains.

    Args:
        callbacks: the Keras callbacks to run.
        model: the model they see (`self.model` inside them).
    """

    def __init__(self, callbacks, model):
        super().__init__()
        self.target = model
        self.inner = keras.callbacks.CallbackList(list(callbacks), model=model)

    def set_params(self, params):
        """Give the inner callbacks the run's parameters (epochs, steps, verbose)."""
        super().set_params(params)
        self.inner.set_params(params)

    def _pass_on(self):
        """Hand a stop request of an inner callback to the model that trains."""
        if getattr(self.target, "stop_training", False):
            self.model.stop_training = True

    def on_train_begin(self, logs=None):
        """Start the inner callbacks; resume where a restored backup says."""
        self.target.stop_training = False
        self.inner.on_train_begin(logs)
        self.model._initial_epoch = getattr(self.target, "_initial_epoch", None)

    def on_train_end(self, logs=None):
        """End the inner callbacks."""
        self.inner.on_train_end(logs)
        self.model._initial_epoch = getattr(self.target, "_initial_epoch", None)

    def on_epoch_begin(self, epoch, logs=None):
        """Forward."""
        self.inner.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        """Forward; pass a stop request on."""
        self.inner.on_epoch_end(epoch, logs)
        self._pass_on()

    def on_train_batch_begin(self, batch, logs=None):
        """Forward."""
        self.inner.on_train_batch_begin(batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        """Forward; pass a stop request on."""
        self.inner.on_train_batch_end(batch, logs)
        self._pass_on()

    def on_test_begin(self, logs=None):
        """Forward."""
        self.inner.on_test_begin(logs)

    def on_test_end(self, logs=None):
        """Forward."""
        self.inner.on_test_end(logs)

    def on_test_batch_begin(self, batch, logs=None):
        """Forward."""
        self.inner.on_test_batch_begin(batch, logs)

    def on_test_batch_end(self, batch, logs=None):
        """Forward."""
        self.inner.on_test_batch_end(batch, logs)


def make_callbacks(run_name: str, log_dir=None, monitor: str = "val_loss",
                   checkpoint: bool = True, backup: bool = True, csv: bool = True,
                   tensorboard: bool = True, confusion_matrix_data=None, class_names=None,
                   histogram_freq: int = 0, progress: bool = False, mode: str = "auto"):
    """The course's standard callbacks for one training run.

    Args:
        run_name: the run's folder name under the log folder.
        log_dir: the log folder (default: `get_settings().log_dir`, i.e. `logs/`).
        monitor: the quantity the best checkpoint is chosen by ("val_loss", "val_accuracy"...).
        checkpoint: save the best model to `<run>/best.keras`.
        backup: `BackupAndRestore` in `<run>/backup`: re-running an interrupted `fit` with
            the same callbacks resumes at the next epoch (the folder is removed when a fit
            finishes normally).
        csv: log every epoch's metrics to `<run>/history.csv` (continued when resuming,
            started afresh otherwise).
        tensorboard: write TensorBoard logs (scalars; weight histograms every
            `histogram_freq` epochs when > 0) to `<run>`.
        confusion_matrix_data: (x, y) or a dataset: write its confusion matrix as an image to
            TensorBoard each epoch (needs `tensorboard` logs to look at).
        class_names: class names for the confusion matrix.
        histogram_freq: TensorBoard weight-histogram frequency (0: off).
        progress: add a compact `TqdmProgress` bar (use with `fit(verbose=0)`).
        mode: "auto", "min" or "max" for the checkpoint's `monitor`.

    Returns:
        A list of Keras callbacks; the run folder is created.
    """
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"make_callbacks: mode must be 'auto', 'min' or 'max', got {mode!r}")
    if isinstance(histogram_freq, bool) or not isinstance(histogram_freq, int) \
            or histogram_freq < 0:
        raise ValueError(f"make_callbacks: histogram_freq must be an int >= 0, "
                         f"got {histogram_freq!r}")
    folder = run_dir(run_name, log_dir)
    folder.mkdir(parents=True, exist_ok=True)
    callbacks = []
    if backup:
        # first, so that it restores the state before the other callbacks see the run
        callbacks.append(BackupAndRestore(str(folder / "backup"), delete_checkpoint=True))
    if tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(str(folder), histogram_freq=histogram_freq,
                                                     write_graph=False))
    if checkpoint:
        callbacks.append(keras.callbacks.ModelCheckpoint(str(folder / "best.keras"),
                                                         monitor=monitor, mode=mode,
                                                         save_best_only=True, verbose=0))
    if csv:
        # append only when resuming an interrupted run; a fresh run starts a fresh log
        resuming = backup and (folder / "backup").exists()
        callbacks.append(keras.callbacks.CSVLogger(str(folder / "history.csv"), append=resuming))
    if confusion_matrix_data is not None:
        callbacks.append(ConfusionMatrixLogger(confusion_matrix_data, folder, class_names))
    if progress:
        callbacks.append(TqdmProgress(desc=run_name))
    return callbacks


# --------------------------------------------------------------------------- per-layer rates


def _layer_names_of(path: str) -> list[str]:
    """The layer names in a variable path ("outer/block1_conv1/kernel" -> both names)."""
    parts = [p for p in str(path).split("/") if p]
    return parts[:-1] if len(parts) > 1 else parts


def rate_for_path(path: str, learning_rates: dict, base_learning_rate: float):
    """The learning rate of a variable: the longest prefix matching one of its layer names.

    A prefix matches when a layer name in the variable's path (e.g. "block1_conv1" in
    "block1_conv1/kernel", or the outer model's name for a nested model) starts with it;
    the longest matching prefix wins; no match gives `base_learning_rate`.

    Returns:
        (rate, matched prefix or None).
    """
    best, best_rate = None, base_learning_rate
    names = _layer_names_of(path)
    for prefix, rate in learning_rates.items():
        if any(name.startswith(prefix) for name in names) or str(path).startswith(prefix):
            if best is None or len(prefix) > len(best):
                best, best_rate = prefix, rate
    return float(best_rate), best


def _make_inner(optimizer: str, rate, options: dict, name: str):
    """One Keras optimizer of the kind `optimizer` with learning rate `rate`."""
    kind = optimizer.lower()
    opts = dict(options, name=name)
    if kind == "sgd":
        return keras.optimizers.SGD(learning_rate=rate, **opts)
    if kind == "nesterov":
        opts.setdefault("momentum", 0.9)
        return keras.optimizers.SGD(learning_rate=rate, nesterov=True, **opts)
    classes = {"adam": keras.optimizers.Adam, "rmsprop": keras.optimizers.RMSprop,
               "adamw": keras.optimizers.AdamW, "nadam": keras.optimizers.Nadam,
               "adagrad": keras.optimizers.Adagrad}
    return classes[kind](learning_rate=rate, **opts)


@keras.saving.register_keras_serializable(package="fer_utils")
class LayerwiseOptimizer(keras.optimizers.MultiOptimizer):
    """Per-layer learning rates: one inner optimizer per distinct rate.

    Every trainable variable is routed, by the layer names in `variable.path`, to the
    inner optimizer of its rate (longest matching prefix wins, else the base rate), so
    each group has its own learning rate *and* its own optimizer state. A rate of 0
    leaves a layer unchanged (it is frozen in effect). Setting `learning_rate`
    (e.g. by `ReduceLROnPlateau` or `LearningRateScheduler`) rescales every group
    proportionally; a schedule given as base rate is followed by the base group.
    """

    def __init__(self, learning_rates=None, base_learning_rate=1e-3, optimizer="adam",
                 optimizer_options=None, name="layerwise", **kwargs):
        kwargs.pop("optimizer_map", None)  # from a MultiOptimizer config: rebuilt below
        learning_rates = dict(learning_rates or {})
        options = dict(optimizer_options or {})
        base_opt = _make_inner(optimizer, base_learning_rate, options, "lr_base")
        base_is_number = isinstance(base_learning_rate, (int, float))
        table = {}
        for rate in sorted({float(r) for r in learning_rates.values()}):
            if base_is_number and rate == float(base_learning_rate):
                table[rate] = base_opt  # same rate as the base: share its optimizer
            else:
                table[rate] = _make_inner(optimizer, rate, options, f"lr_{len(table)}")

        def selector(variable):
            """The inner optimizer of the variable's learning rate."""
            rate, prefix = rate_for_path(variable.path, learning_rates, 0.0)
            return base_opt if prefix is None else table[rate]

        super().__init__(selector, name=name, **kwargs)
        self.learning_rates = learning_rates
        self.base_learning_rate = base_learning_rate
        self.optimizer_kind = optimizer
        self.optimizer_options = options
        self._base_opt = base_opt
        self._opt_for_rate = table
        for opt in [base_opt, *table.values()]:
            if opt not in self._inner_optimizers:
                self._inner_optimizers.append(opt)
        self.assignments = {}

    def build(self, var_list):
        """Route every variable to the optimizer of its rate; remember who got what."""
        if self.built:
            return
        super().build(var_list)
        self.assignments = {}
        for v in var_list:
            rate, prefix = rate_for_path(v.path, self.learning_rates, -1.0)
            self.assignments[v.path] = ("base" if prefix is None else prefix,
                                        None if prefix is None else rate)

    def rate_of(self, path: str) -> float:
        """The current learning rate applied to the variable (or layer) at `path`."""
        rate, prefix = rate_for_path(path if "/" in path else f"{path}/kernel",
                                     self.learning_rates, -1.0)
        opt = self._base_opt if prefix is None else self._opt_for_rate[rate]
        return float(np.asarray(opt.learning_rate))

    @property
    def learning_rate(self):
        """The base learning rate (what schedulers and ReduceLROnPlateau read)."""
        return self._base_opt.learning_rate

    @learning_rate.setter
    def learning_rate(self, value):
        """Set the base rate; every other group keeps its ratio to it."""
        base = self._base_opt
        if not isinstance(self.base_learning_rate, (int, float)):
            raise TypeError("LayerwiseOptimizer: the base learning rate is a schedule; "
                            "it cannot also be set by a callback")
        old = float(np.asarray(base.learning_rate))
        new = float(np.asarray(value))
        base.learning_rate = new
        if old > 0:  # keep every group's ratio to the base rate
            for opt in self._opt_for_rate.values():
                if opt is not base:
                    opt.learning_rate = float(np.asarray(opt.learning_rate)) * new / old

    def get_config(self):
        """The rates, inner optimizer kind and options, for saving."""
        from keras.saving import serialize_keras_object

        base = self.base_learning_rate
        if not isinstance(base, (int, float)):
            base = serialize_keras_object(base)
        return {"learning_rates": {str(k): float(v) for k, v in self.learning_rates.items()},
                "base_learning_rate": base, "optimizer": self.optimizer_kind,
                "optimizer_options": self.optimizer_options, "name": self.name}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        """Rebuild from `get_config` (a schedule as base rate included)."""
        from keras.saving import deserialize_keras_object

        config = dict(config)
        if isinstance(config.get("base_learning_rate"), dict):
            config["base_learning_rate"] = deserialize_keras_object(
                config["base_learning_rate"], custom_objects=custom_objects)
        return cls(**config)


def layerwise_optimizer(learning_rates: dict, base_learning_rate=1e-3, optimizer: str = "adam",
                        **optimizer_options):
    """A Keras optimizer with a learning rate per layer, chosen by layer-name prefix.

    Args:
        learning_rates: {layer-name prefix: learning rate}, e.g. `{"block1": 0,
            "block2": 1e-5, "block5": 1e-4, "fc": 1e-3}`. The longest prefix that matches a
            layer name in a variable's path wins; a rate of 0 leaves those layers unchanged.
        base_learning_rate: the rate of layers no prefix matches (a float or a Keras
            LearningRateSchedule).
        optimizer: "adam", "sgd", "nesterov" (SGD, momentum 0.9), "rmsprop", "adamw",
            "nadam" or "adagrad".
        **optimizer_options: passed to every inner optimizer (e.g. momentum=0.9).

    Returns:
        A `LayerwiseOptimizer` (a `keras.optimizers.MultiOptimizer`) for `model.compile`.
    """
    if not isinstance(learning_rates, dict):
        raise ValueError(f"layerwise_optimizer: learning_rates must be a dict "
                         f"{{layer-name prefix: rate}}, got {learning_rates!r}")
    for prefix, rate in learning_rates.items():
        if not isinstance(prefix, str) or not prefix:
            raise ValueError(f"layerwise_optimizer: every key must be a non-empty layer-name "
                             f"prefix, got {prefix!r}")
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not np.isfinite(rate) \
                or rate < 0:
            raise ValueError(f"layerwise_optimizer: the rate of {prefix!r} must be a number "
                             f">= 0, got {rate!r}")
    if isinstance(base_learning_rate, (int, float)) and not isinstance(base_learning_rate, bool):
        if not np.isfinite(base_learning_rate) or base_learning_rate < 0:
            raise ValueError(f"layerwise_optimizer: base_learning_rate must be >= 0, "
                             f"got {base_learning_rate!r}")
    elif not callable(base_learning_rate):
        raise ValueError(f"layerwise_optimizer: base_learning_rate must be a number or a "
                         f"LearningRateSchedule, got {base_learning_rate!r}")
    if not isinstance(optimizer, str) or optimizer.lower() not in OPTIMIZERS:
        raise ValueError(f"layerwise_optimizer: optimizer={optimizer!r} is not supported; "
                         f"allowed: {', '.join(OPTIMIZERS)}")
    return LayerwiseOptimizer(learning_rates, base_learning_rate, optimizer.lower(),
                              optimizer_options)


# --------------------------------------------------------------------------- class balance


def class_weights(labels, num_classes: int | None = None, kind: str = "balanced") -> dict:
    """"Balanced" class weights n_samples / (n_classes * count) as {class: weight} for `fit`.

    Computed by scikit-learn's `compute_class_weight("balanced")`; a class absent from
    `labels` (possible when `num_classes` is given) gets weight 1.0. kind="sqrt" gives the
    square roots of the balanced weights: rare classes count more, but less than "balanced"
    (FER2013's "disgust" gets ×2.5 instead of ×6.6).
    """
    from sklearn.utils.class_weight import compute_class_weight

    if kind not in CLASS_WEIGHTS:
        raise ValueError(f"class_weights: kind={kind!r} is not supported; allowed: "
                         f"{', '.join(CLASS_WEIGHTS)}")

    y = np.asarray(labels)
    if y.ndim == 2 and y.shape[1] > 1:
        y = y.argmax(axis=1)
    y = y.reshape(-1)
    if y.size == 0:
        raise ValueError("class_weights: no labels given")
    if not np.all(np.equal(np.mod(y.astype(float), 1), 0)) or y.min() < 0:
        raise ValueError(f"class_weights: labels must be class indices >= 0, got values "
                         f"such as {np.unique(y)[:5].tolist()}")
    y = y.astype(np.int64)
    present = np.unique(y)
    if num_classes is not None and present.max() >= num_classes:
        raise ValueError(f"class_weights: label {present.max()} >= num_classes={num_classes}")
    weights = compute_class_weight("balanced", classes=present, y=y)
    if kind == "sqrt":
        weights = np.sqrt(weights)
    out = {int(c): float(w) for c, w in zip(present, weights)}
    for c in range(int(num_classes or 0)):
        out.setdefault(c, 1.0)
    return dict(sorted(out.items()))


# --------------------------------------------------------------------------- devices


def distribution_strategy(kind: str = "auto"):
    """A tf.distribute strategy for one machine, several GPUs or several workers.

    Args:
        kind: "auto" (MultiWorkerMirroredStrategy when TF_CONFIG is set, MirroredStrategy
            with more than one GPU, else the default one-device strategy), "one"
            (OneDeviceStrategy on the first GPU, else the CPU), "mirrored" or "multiworker".

    Returns:
        A `tf.distribute.Strategy`; build and compile the model inside `strategy.scope()`.
    """
    allowed = ("auto", "one", "mirrored", "multiworker")
    if kind not in allowed:
        raise ValueError(f"distribution_strategy: kind={kind!r} is not supported; "
                         f"allowed: {', '.join(allowed)}")
    if kind == "auto":
        if os.environ.get("TF_CONFIG"):
            try:
                json.loads(os.environ["TF_CONFIG"])
            except ValueError:
                raise ValueError("distribution_strategy: TF_CONFIG is set but is not valid "
                                 "JSON") from None
            kind = "multiworker"
        elif len(tf.config.list_logical_devices("GPU")) > 1:
            kind = "mirrored"
        else:
            return tf.distribute.get_strategy()
    if kind == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")


# --------------------------------------------------------------------------- precision


def cpu_supports_bf16(cpuinfo: str | None = None) -> bool:
    """True when the CPU advertises bfloat16 instructions (AVX512-BF16 or AMX-BF16)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    flags = set(cpuinfo.replace("\n", " ").split())
    return bool(flags & {"avx512_bf16", "amx_bf16"})


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


def measure_precision_speed(policies=("float32", "mixed_bfloat16"), batch_size: int = 32,
                            image_size: int = 48, steps: int = 8, warmup: int = 2,
                            filters=(32, 64, 128), seed: int = 0) -> dict:
    """Time training steps of a small CNN under each Keras dtype policy.

    Returns:
        {policy: seconds per training step} (median of `steps` timed steps). The global
        policy is restored afterwards.
    """
    rng = np.random.default_rng(seed)
    x = tf.constant(rng.random((batch_size, image_size, image_size, 1), dtype=np.float32))
    y = tf.constant(rng.integers(0, 7, batch_size))
    previous = keras.mixed_precision.global_policy()
    results = {}
    try:
        for policy in policies:
            keras.mixed_precision.set_global_policy(policy)
            model = _probe_cnn(image_size, filters)
            model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
            times = []
            for i in range(warmup + steps):
                start = time.perf_counter()
                model.train_on_batch(x, y)
                if i >= warmup:
                    times.append(time.perf_counter() - start)
            results[policy] = float(np.median(times))
    finally:
        keras.mixed_precision.set_global_policy(previous)
    return results


_POLICY_CACHE: dict = {}


def mixed_precision_policy(measure: bool = True, verbose: bool = False) -> str:
    """The dtype policy that pays on this machine: the kit's one precision decision.

    "mixed_float16" on a GPU; on a CPU with AVX512-BF16/AMX, "mixed_bfloat16" only if a
    measured small-CNN training step is at least 5 % faster than in float32 (measured once
    per process); otherwise "float32".
    """
    if tf.config.list_logical_devices("GPU"):
        return "mixed_float16"
    if not cpu_supports_bf16() or not measure:
        return "float32"
    if "cpu" not in _POLICY_CACHE:
        speed = measure_precision_speed()
        _POLICY_CACHE["cpu_speed"] = speed
        faster = speed["mixed_bfloat16"] < 0.95 * speed["float32"]
        _POLICY_CACHE["cpu"] = "mixed_bfloat16" if faster else "float32"
    if verbose:
        speed = _POLICY_CACHE["cpu_speed"]
        print(f"CPU step time: float32 {speed['float32'] * 1e3:.1f} ms, "
              f"bfloat16 {speed['mixed_bfloat16'] * 1e3:.1f} ms -> {_POLICY_CACHE['cpu']}")
    return _POLICY_CACHE["cpu"]


def resolve_precision(precision: str) -> tuple[str, str]:
    """("float32" | "bfloat16" | "float16", why) for a precision argument.

    Args:
        precision: "float32" (or "fp32"), "bfloat16" ("bf16"), "float16" ("fp16"), or
            "auto": what `mixed_precision_policy` measures to pay on this machine.
    """
    name = _PRECISION_ALIASES.get(precision, precision) if isinstance(precision, str) else None
    if name not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)} (or fp32, bf16, "
                         f"fp16), got {precision!r}")
    if name != "auto":
        return name, "asked for"
    policy = mixed_precision_policy()
    chosen = _PRECISION_ALIASES.get(policy, policy)
    speed = _POLICY_CACHE.get("cpu_speed")
    if policy == "mixed_float16":
        why = "auto: a GPU is present"
    elif speed:
        why = (f"auto: a small-CNN step measured {speed['float32'] * 1e3:.0f} ms in float32 and "
               f"{speed['mixed_bfloat16'] * 1e3:.0f} ms in bfloat16 on this CPU")
    else:
        why = "auto: this CPU has no bfloat16 instructions"
    return chosen, why


def enable_mixed_precision(policy: str = "auto", verbose: bool = True) -> str:
    """Set Keras' global dtype policy (opt-in; call before building the model).

    Args:
        policy: "auto" (see `mixed_precision_policy`), "float32", "mixed_float16" or
            "mixed_bfloat16".
        verbose: print the chosen policy.

    Returns:
        The policy now in effect.
    """
    allowed = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
    if policy not in allowed:
        raise ValueError(f"enable_mixed_precision: policy={policy!r} is not supported; "
                         f"allowed: {', '.join(allowed)}")
    chosen = mixed_precision_policy(verbose=verbose) if policy == "auto" else policy
    keras.mixed_precision.set_global_policy(chosen)
    if verbose:
        print(f"Keras dtype policy: {chosen}")
    return chosen


def _all_layers(model):
    """Every layer of `model`, looking inside nested models."""
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


@contextlib.contextmanager
def computing_in(model, precision: str):
    """Let a built float32 model compute in mixed `precision` for a while (weights stay float32).

    Every layer except the outputs gets the Keras policy "mixed_<precision>"; the output
    layers stay float32 (a softmax in bfloat16 loses precision). The policies are restored
    on exit, so the model saves and predicts in float32 afterwards.
    """
    if precision == "float32":
        yield model
        return
    outputs = set(getattr(model, "output_names", None) or [model.layers[-1].name])
    saved = []
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.InputLayer) or layer.name in outputs:
            continue
        saved.append((layer, layer.dtype_policy))
        layer.dtype_policy = f"mixed_{precision}"
    try:
        yield model
    finally:
        for layer, policy in saved:
            layer.dtype_policy = policy


# --------------------------------------------------------------------------- the one fit


_RANDOM_LAYERS = (keras.layers.Dropout, keras.layers.GaussianNoise, keras.layers.GaussianDropout,
                  keras.layers.AlphaDropout, keras.layers.SpatialDropout2D)


def _chain_problem(model, layers) -> str | None:
    """Why `model` is not a single chain of layers (None when it is)."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        return f"model {model.name!r} has several inputs or outputs"
    previous = model.inputs[0]
    for layer in layers:
        try:
            if layer.input is not previous:
                return f"layer {layer.name!r} does not take the previous layer's output"
        except (AttributeError, ValueError):
            return f"layer {layer.name!r} has several inputs"
        previous = layer.output
    return None


def split_frozen(model):
    """Split a chain model at its first trainable layer: (frozen_part, trainable_part).

    `frozen_part` maps the model input to the input of the first trainable layer (None when
    nothing is frozen); `trainable_part` maps those features to the output and SHARES the
    layer objects with `model`, so training it trains `model`. Frozen layers run in
    inference mode, so `trainable_part(frozen_part(x)) == model(x)`.

    Raises:
        ValueError: the model is not a chain of layers, has no trainable layer, or holds a
            random layer (dropout, noise) before the first trainable one; the message says so.
    """
    layers = [layer for layer in model.layers
              if not isinstance(layer, keras.layers.InputLayer)]
    problem = _chain_problem(model, layers)
    if problem:
        raise ValueError(f"{problem}: its frozen part cannot be split off")
    first = next((i for i, layer in enumerate(layers)
                  if layer.trainable and layer.trainable_weights), None)
    if first is None:
        raise ValueError(f"model {model.name!r} has no trainable layer: nothing to train")
    for layer in layers[:first]:
        if isinstance(layer, _RANDOM_LAYERS) or type(layer).__name__.startswith("Random"):
            raise ValueError(f"layer {layer.name!r} before the first trainable layer is random "
                             f"at every step, so its output cannot be computed once")
    if not any(layer.weights for layer in layers[:first]):  # e.g. only the preprocessing
        return None, model
    frozen = keras.Model(model.inputs, layers[first - 1].output, name=f"{model.name}_frozen")
    inputs = keras.Input(shape=tuple(layers[first - 1].output.shape[1:]), name="features")
    x = inputs
    for layer in layers[first:]:
        x = layer(x)
    return frozen, keras.Model(inputs, x, name=f"{model.name}_trainable")


@dataclasses.dataclass
class FitResult:
    """What `fit_classifier` did: the trained model, its history and how fast it went."""

    model: object  # the full image-to-label Keras model, trained in place and compiled
    history: dict  # per-epoch metrics, as keras.callbacks.History.history
    path: str  # "cached" (frozen part computed once) or "full" (every layer every step)
    reason: str  # why that path
    precision: str  # "float32", "bfloat16" or "float16" (mixed precision; weights float32)
    images: int  # training images
    epochs: int  # epochs run by this call (fewer when the time budget stopped it or resuming)
    seconds: float  # wall time: feature caching + training + per-epoch validation
    cache_seconds: float  # wall time of the frozen-feature pass (0 on the full path)
    stopped: str | None = None  # the time budget's message when it stopped training early
    val_report: dict | None = None  # `fer_utils.metrics.prediction_report` on the validation set
    run_dir: Path | None = None  # the run folder (TensorBoard, best.keras, backup) if any
    val_probabilities: np.ndarray | None = None  # the returned model's outputs on `val`

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


def collapse_message(report: dict, where: str) -> str | None:
    """A one-line warning when one class takes > 90 % of the predictions of `report`."""
    if not report or not report.get("collapsed"):
        return None
    return (f"collapse on the {where} set: {report['dominant_share']:.0%} of the "
            f"{report['faces']} faces are predicted '{report['dominant_class']}' (more than "
            f"{metrics.COLLAPSE_SHARE:.0%} in one class): the model has not learned to tell "
            f"the expressions apart (try more epochs, a lower learning rate, pretrained "
            f"weights or class weights)")


@dataclasses.dataclass
class _Inputs:
    """How a classifier takes its images: size, channels, classes (raw pixels, 0-255)."""

    size: tuple
    channels: int
    num_classes: int

    @classmethod
    def of(cls, model) -> "_Inputs":
        """Read them from the model (one raw-pixel image input, one softmax output)."""
        from .models.preprocess import check_takes_raw_pixels

        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise ValueError(f"fit_classifier trains a model with one image input and one "
                             f"softmax output; {model.name!r} has {len(model.inputs)} inputs "
                             f"and {len(model.outputs)} outputs")
        shape = tuple(model.input_shape[1:])
        if len(shape) != 3 or None in shape or shape[2] not in (1, 3):
            raise ValueError(f"fit_classifier: the model's input must be H×W×C images with a "
                             f"fixed size and 1 or 3 channels, got {shape}")
        check_takes_raw_pixels(model, "fit_classifier")
        return cls(shape[:2], shape[2], int(model.output_shape[-1]))

    def batches(self, faces, batch_size: int, shuffle: bool, seed: int, augment=False):
        """The faces as a tf.data pipeline of (images, labels) the model takes.

        augment: False, True / "full" (`augment.tf_random_augment` inside `to_tf_dataset`) or
        "flip-shift" (`augment.tf_flip_shift` on each finished batch: mirror, and shift by up
        to 1/12 of the side, 4 px at 48 px).
        """
        from . import data

        full = augment is True or augment == "full"
        batches = data.to_tf_dataset(faces, batch_size=batch_size, shuffle=shuffle, seed=seed,
                                     image_size=self.size, channels=self.channels,
                                     augment=full)
        if augment != "flip-shift":
            return batches
        from .augment import tf_flip_shift

        shift = max(1, int(round(min(self.size) / 12)))
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        return tf.data.Dataset.zip(batches, seeds).map(
            lambda xy, r: (tf_flip_shift(xy[0], tf.stack([tf.constant(seed, tf.int64), r]),
                                         max_shift=shift), xy[1]),
            num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def _is_vgg(model) -> bool:
    """True for a model holding VGG16's named conv layers."""
    names = {layer.name for layer in _all_layers(model)}
    return {"block4_conv3", "block5_conv3"} <= names


def classifier_batches(model, faces, batch_size: int, shuffle: bool = False, seed: int = 0,
                       augment=False):
    """The faces as the (images, labels) batches `model` takes, as `fit_classifier` makes them.

    Args:
        model: a classifier with one H×W×C image input.
        faces: a FaceSet.
        batch_size: faces per batch.
        shuffle: reshuffle every epoch.
        seed: seed of the order and of augmentation.
        augment: False, True / "full" or "flip-shift" (see `fit_classifier`).

    Returns:
        A tf.data.Dataset of (raw-pixel float images, int labels) batches.
    """
    _check_fit_args(1, batch_size, None, "auto", augment, 1)
    return _Inputs.of(model).batches(faces, int(batch_size), shuffle, int(seed),
                                                 augment=augment)


def _as_faces(part, name: str, num_classes: int):
    """A FaceSet from a FaceSet or an (uint8 images, labels) pair; labels checked."""
    from . import data

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
                    schedule=None, class_weight=None) -> None:
    """Reject bad `fit_classifier` arguments with the bad value in the message."""
    for arg, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{arg} must be a positive integer, got {value!r}")
    if not any(augment is a if isinstance(a, bool) else augment == a for a in AUGMENTATIONS):
        raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {augment!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be None or 'cosine', got {schedule!r}")
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


@dataclasses.dataclass
class _Plan:
    """The chosen path: cached (frozen part + trainable tail) or full, and why."""

    cached: bool
    reason: str
    frozen: object = None
    tail: object = None


def _plan(model, train, val, augment: bool, cache, max_cache_mb: float, precision: str) -> _Plan:
    """Choose the cached path when nothing upstream of the trainable layers changes per step."""
    if augment:
        return _Plan(False, "augmentation changes the images at every step, so every layer "
                            "runs every step")
    if cache is False:
        return _Plan(False, "cache=False")
    try:
        frozen, tail = split_frozen(model)
    except ValueError as error:
        if cache is True:
            raise
        return _Plan(False, str(error))
    first = next(layer.name for layer in tail.layers if layer.weights)
    if frozen is None:
        if cache is True:
            raise ValueError(f"cache=True, but nothing of {model.name!r} is frozen")
        return _Plan(False, f"nothing is frozen ({first} trains), so every layer runs every step")
    images = len(train) + (0 if val is None else len(val))
    per_image = int(np.prod(frozen.output_shape[1:])) * (4 if precision == "float32" else 2)
    mb = images * per_image / 2**20
    if mb > max_cache_mb:
        if cache is True:
            raise ValueError(f"cache=True, but the frozen part's output takes {mb:,.0f} MB "
                             f"> max_cache_mb={max_cache_mb:,.0f}")
        return _Plan(False, f"the frozen part's output would take {mb:,.0f} MB, more than "
                            f"max_cache_mb={max_cache_mb:,.0f}")
    last = frozen.layers[-1].name
    return _Plan(True, f"the layers up to {last} are frozen and deterministic, so they run once "
                       f"per image ({images} images, {mb:,.1f} MB of features); {first} and the "
                       f"layers after it train", frozen, tail)


def _features(frozen, faces, inputs: _Inputs, batch_size: int, dtype, desc: str,
              verbose: int):
    """Run the frozen part once over the faces, batch by batch: one tensor of features."""
    step = tf.function(lambda x: tf.cast(frozen(x, training=False), dtype),
                       reduce_retracing=True)
    bar = keras.utils.Progbar(len(faces), unit_name="image") if verbose else None
    if bar is not None:
        print(desc, flush=True)
    chunks = []
    for x, _ in inputs.batches(faces, batch_size, shuffle=False, seed=0):
        chunks.append(step(x))
        if bar is not None:
            bar.add(int(chunks[-1].shape[0]))
    return tf.concat(chunks, axis=0)


def _feature_batches(features, labels, batch_size: int, shuffle: bool, seed: int):
    """(features, labels) batches, shuffled each epoch like `to_tf_dataset` shuffles faces."""
    n = int(features.shape[0])
    labels = tf.constant(np.asarray(labels, np.int32))
    index = tf.data.Dataset.range(n)
    if shuffle:
        index = index.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    return (index.batch(batch_size)
            .map(lambda i: (tf.gather(features, i), tf.gather(labels, i)))
            .prefetch(tf.data.AUTOTUNE))


def _compile(model, optimizer) -> None:
    """Sparse categorical cross-entropy and accuracy, with the (shared) optimizer."""
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])


def _fit_cached(model, plan: _Plan, train, val, inputs: _Inputs, opts: dict):
    """Cached path: the frozen part once, then the tail trains; callbacks see the full model."""
    dtype = {"float32": tf.float32, "bfloat16": tf.bfloat16, "float16": tf.float16}[
        opts["precision"]]
    started = time.perf_counter()
    big = max(opts["batch_size"], 64)
    x_train = _features(plan.frozen, train, inputs, big, dtype,
                        "computing the frozen layers once (training faces)", opts["verbose"])
    x_val = None if val is None else _features(
        plan.frozen, val, inputs, big, dtype, "computing the frozen layers once (validation "
        "faces)", opts["verbose"])
    cache_seconds = time.perf_counter() - started
    _compile(plan.tail, opts["optimizer"])
    _compile(model, opts["optimizer"])  # what checkpoints save: the same layers and optimizer
    callbacks = [CallbacksOnModel(opts["callbacks"], model)] if opts["callbacks"] else []
    history = plan.tail.fit(
        _feature_batches(x_train, train.labels, opts["batch_size"], True, opts["seed"]),
        validation_data=None if val is None else _feature_batches(x_val, val.labels, big,
                                                                  False, 0),
        epochs=opts["epochs"], callbacks=opts["budget"] + callbacks, shuffle=False,
        class_weight=opts["class_weight"], verbose=opts["keras_verbose"])
    predict = None if val is None else (
        lambda: plan.tail.predict(_feature_batches(x_val, val.labels, big, False, 0), verbose=0))
    return history.history, cache_seconds, predict


def _fit_full(model, train, val, inputs: _Inputs, opts: dict, augment: bool):
    """Full path: every layer runs on every batch of (possibly augmented) images."""
    _compile(model, opts["optimizer"])
    big = max(opts["batch_size"], 64)
    history = model.fit(
        inputs.batches(train, opts["batch_size"], True, opts["seed"], augment=augment),
        validation_data=None if val is None else inputs.batches(val, big, False, 0),
        epochs=opts["epochs"], callbacks=opts["budget"] + opts["callbacks"], shuffle=False,
        class_weight=opts["class_weight"], verbose=opts["keras_verbose"])
    predict = None if val is None else (
        lambda: model.predict(inputs.batches(val, big, False, 0), verbose=0))
    return history.history, 0.0, predict


def _callbacks(run_name, log_dir, callbacks, monitor: str) -> tuple[list, Path | None]:
    """The run's callbacks: `make_callbacks(run_name)` (when named) plus the caller's."""
    extra = list(callbacks or [])
    if run_name is None:
        return extra, None
    return make_callbacks(run_name, log_dir=log_dir, monitor=monitor) + extra, \
        run_dir(run_name, log_dir)


def fit_classifier(model, train, val=None, *, epochs: int, batch_size: int = 32,
                   learning_rate: float | None = None, optimizer=None, augment=False,
                   precision: str = "float32", class_weight=None, run_name: str | None = None,
                   log_dir=None, callbacks=None, monitor: str | None = None, seed: int = 0,
                   verbose: int = 1, minutes: float | None = None, cache="auto", max_cache_mb: float = 2048,
                   schedule: str | None = None) -> FitResult:
    """Train a classifier on uint8 faces: the kit's one training entry point.

    The CACHED path: when the model starts with frozen layers (e.g. VGG16 blocks 1-4 with
    pretrained weights), nothing is augmented and their output fits in `max_cache_mb`, those
    layers are deterministic, so they run ONCE per image and the epochs train only the
    trainable tail on their output. In float32 that is the same training as running the
    whole model every step (same weights after each step). Otherwise the FULL path runs
    every layer on every batch. Either way `model` itself is trained in place, and
    checkpoints (`best.keras`), BackupAndRestore and TensorBoard see the full image-to-label
    model. It prints the path and why, the precision, and warns (`CollapseWarning`) when
    one class takes more than 90 % of the validation predictions.

    Args:
        model: a Keras classifier: one H×W×C raw-pixel image input (it starts with its own
            preprocessing layer, as every `fu.models` builder's model does), one softmax
            output (sparse labels).
        train: FaceSet, or (uint8 images N×H×W×C, labels). Faces are resized and converted
            to the model's input size and channels per batch (`fu.data.to_tf_dataset`).
        val: optional validation FaceSet or pair: per-epoch validation and the final report.
        epochs: training epochs.
        batch_size: images per step.
        learning_rate: Adam's rate when `optimizer` is None; default 1e-4 for a model with
            VGG16's layers (fine-tuning) and 1e-3 otherwise.
        optimizer: a Keras optimizer instead (e.g. `layerwise_optimizer(...)`).
        augment: augmentation of every batch, on the full path: False (none), True or
            "full" (`fu.augment.tf_random_augment`: pixel ops, rotation, shift) or
            "flip-shift" (`fu.augment.tf_flip_shift`: mirror, and shift by up to 1/12 of
            the side; nearly free).
        precision: "float32" (default), "bfloat16", "float16" (mixed precision, weights stay
            float32) or "auto" (`mixed_precision_policy`: measured on this machine).
        class_weight: None, {class: weight}, "balanced" or "sqrt" (`class_weights(train
            labels, kind=...)`).
        run_name: a run folder under `log_dir` with the standard callbacks (`make_callbacks`:
            TensorBoard, best.keras, BackupAndRestore: re-running resumes, history.csv).
        log_dir: the log folder of `run_name` (default: the FER_LOG_DIR setting).
        callbacks: more Keras callbacks (they see the full model on either path).
        monitor: the checkpoint's quantity (default "val_loss", or "loss" without `val`).
        seed: seed of the batch order (and of augmentation).
        verbose: 0 silent; 1 progress bars and the lines about path and result; 2 one line
            per epoch instead of progress bars.
        minutes: wall-clock budget (feature caching included): training stops after the
            epoch when one more epoch would end past it, or, with schedule="cosine", when the
            time is up (the output says so); None: no budget.
        cache: "auto" (choose as above), True (require the cached path) or False (full path).
        max_cache_mb: memory allowed for the frozen part's output ("auto" mode).
        schedule: None (constant rate) or "cosine": `CosineDecayToBudget`, a cosine from the
            learning rate to 0 over the time budget (or over the epochs when they end
            first), set before every batch; the history logs each epoch's last rate.

    Returns:
        FitResult: model (trained in place, compiled, float32), history, path and reason,
        precision, images, epochs, seconds (caching + training), images_per_second,
        val_report (`fu.metrics.prediction_report`), val_accuracy, stopped, run_dir,
        val_probabilities (N×K outputs of the returned model on `val`).
    """
    started = time.perf_counter()
    _check_fit_args(epochs, batch_size, minutes, cache, augment, max_cache_mb, schedule,
                    class_weight)
    inputs = _Inputs.of(model)
    train_faces = _as_faces(train, "train", inputs.num_classes)
    val_faces = _as_faces(val, "val", inputs.num_classes)
    chosen, why = resolve_precision(precision)
    if isinstance(class_weight, str):
        class_weight = class_weights(train_faces.labels, inputs.num_classes, class_weight)
    plan = _plan(model, train_faces, val_faces, augment, cache, max_cache_mb, chosen)
    if verbose:
        print(f"fit_classifier: {'cached' if plan.cached else 'full'} path: {plan.reason}; "
              f"precision {chosen} ({why})", flush=True)
    user, folder = _callbacks(run_name, log_dir, callbacks,
                              monitor or ("val_loss" if val_faces is not None else "loss"))
    if optimizer is None:
        optimizer = keras.optimizers.Adam(learning_rate or (
            1e-4 if _is_vgg(model) else 1e-3))
    if schedule == "cosine":
        budget = [CosineDecayToBudget(float(np.asarray(optimizer.learning_rate)), minutes,
                                      started, bool(verbose))]
    else:
        budget = [] if minutes is None else [TimeBudget(minutes, started, bool(verbose))]
    if chosen == "float16" and not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    opts = dict(epochs=int(epochs), batch_size=int(batch_size), optimizer=optimizer,
                callbacks=user, budget=budget, class_weight=class_weight, seed=int(seed),
                precision=chosen, verbose=verbose,
                keras_verbose=0 if not verbose else 2 if verbose == 2 else 1)
    with computing_in(model, chosen):
        if plan.cached:
            history, cache_seconds, predict = _fit_cached(model, plan, train_faces, val_faces,
                                                          inputs, opts)
        else:
            history, cache_seconds, predict = _fit_full(model, train_faces, val_faces, inputs,
                                                        opts, augment)
    seconds = time.perf_counter() - started
    _compile(model, optimizer)  # float32 again: evaluate, predict and save the full model
    probabilities = None if predict is None else np.asarray(predict())
    report = None if predict is None else metrics.prediction_report(
        val_faces.labels, probabilities, val_faces.class_names[:inputs.num_classes])
    result = FitResult(model=model, history=history, path="cached" if plan.cached else "full",
                       reason=plan.reason, precision=chosen, images=len(train_faces),
                       epochs=len(history.get("loss", [])), seconds=seconds,
                       cache_seconds=cache_seconds,
                       stopped=budget[0].message if budget else None, val_report=report,
                       val_probabilities=probabilities,
                       run_dir=folder)
    message = collapse_message(report, "validation")
    if message:
        warnings.warn(message, CollapseWarning, stacklevel=2)
    if verbose:
        print(result, flush=True)
    return result


# --------------------------------------------------------------------------- batch size


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
