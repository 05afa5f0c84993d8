"""Training helpers: callbacks, per-layer learning rates, class weights, devices, precision.

- `make_callbacks`: TensorBoard under `logs/<run>`, best-model checkpoint, BackupAndRestore
  (re-running an interrupted `fit` resumes at the next epoch), CSV log, optional
  confusion-matrix images and a compact tqdm progress bar.
- `layerwise_optimizer`: real per-layer learning rates (one inner optimizer per rate).
- `class_weights`: "balanced" weights for rare classes (scikit-learn).
- `distribution_strategy`: one device, MirroredStrategy or MultiWorkerMirroredStrategy.
- `mixed_precision_policy` / `enable_mixed_precision`: float16 on GPUs, bfloat16 on CPUs
  that have the instructions *and* measure faster with it; opt-in.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

__all__ = [
    "make_callbacks",
    "TqdmProgress",
    "ConfusionMatrixLogger",
    "LayerwiseOptimizer",
    "layerwise_optimizer",
    "rate_for_path",
    "class_weights",
    "distribution_strategy",
    "cpu_supports_bf16",
    "measure_precision_speed",
    "mixed_precision_policy",
    "enable_mixed_precision",
    "run_dir",
    "activation_bytes",
    "measure_batch_sizes",
]

OPTIMIZERS = ("adam", "sgd", "nesterov", "rmsprop", "adamw", "nadam", "adagrad")


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


def _keras_callback_base():
    """keras.callbacks.Callback (imported lazily: no TensorFlow at import time)."""
    import keras

    return keras.callbacks.Callback


def TqdmProgress(*args, **kwargs):
    """A compact progress bar for notebooks: one tqdm bar over epochs with the last metrics.

    Use it with `fit(..., verbose=0)`. Args: `metrics` (names to show; default all),
    `desc` (bar title), `leave` (keep the finished bar).
    """
    return _tqdm_progress_class()(*args, **kwargs)


_CLASSES: dict = {}


def _tqdm_progress_class():
    """Create (once) the Keras callback class behind `TqdmProgress`."""
    if "tqdm" in _CLASSES:
        return _CLASSES["tqdm"]
    base = _keras_callback_base()

    class _TqdmProgress(base):
        """One tqdm bar over epochs, postfix = the last epoch's logs."""

        def __init__(self, metrics=None, desc: str = "epochs", leave: bool = True):
            super().__init__()
            self.metrics = None if metrics is None else tuple(metrics)
            self.desc = desc
            self.leave = leave
            self.bar = None

        def on_train_begin(self, logs=None):
            from tqdm.auto import tqdm

            epochs = self.params.get("epochs") if self.params else None
            self.bar = tqdm(total=epochs, desc=self.desc, leave=self.leave, unit="epoch")

        def on_epoch_begin(self, epoch, logs=None):
            # a resumed run (BackupAndRestore) starts later: move the bar there
            if self.bar is not None and self.bar.n < epoch:
                self.bar.update(epoch - self.bar.n)

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            shown = {k: f"{float(v):.3g}" for k, v in logs.items()
                     if (self.metrics is None or k in self.metrics)
                     and np.ndim(v) == 0 and k != "learning_rate"}
            if self.bar is not None:
                self.bar.set_postfix(shown, refresh=False)
                self.bar.update(1)

        def on_train_end(self, logs=None):
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    _TqdmProgress.__qualname__ = _TqdmProgress.__name__ = "TqdmProgress"
    _CLASSES["tqdm"] = _TqdmProgress
    return _TqdmProgress


def ConfusionMatrixLogger(data, log_dir, class_names=None, freq: int = 1, normalize=True):
    """A callback that writes the validation confusion matrix as an image to TensorBoard.

    Args:
        data: (x, y) arrays or a finite tf.data dataset of (x, y) batches; y are class
            indices or one-hot rows.
        log_dir: the run folder (images go to `<log_dir>/confusion_matrix`).
        class_names: names for the axes (default "0".."K-1").
        freq: write every `freq` epochs.
        normalize: row-normalise (recall per class on the diagonal).
    """
    return _confusion_class()(data, log_dir, class_names, freq, normalize)


def _confusion_class():
    """Create (once) the Keras callback class behind `ConfusionMatrixLogger`."""
    if "cm" in _CLASSES:
        return _CLASSES["cm"]
    base = _keras_callback_base()

    class _ConfusionMatrixLogger(base):
        """Writes a confusion-matrix image per epoch (TensorBoard "Images" tab)."""

        def __init__(self, data, log_dir, class_names=None, freq=1, normalize=True):
            super().__init__()
            if not isinstance(freq, int) or freq < 1:
                raise ValueError(f"ConfusionMatrixLogger: freq must be an int >= 1, got {freq!r}")
            self.data = data
            self.log_dir = str(Path(log_dir) / "confusion_matrix")
            self.class_names = None if class_names is None else [str(c) for c in class_names]
            self.freq = freq
            self.normalize = normalize
            self._writer = None
            self.last_matrix = None

        def _predict(self):
            from . import metrics

            if isinstance(self.data, (tuple, list)) and len(self.data) == 2:
                x, y = self.data
                prob = self.model.predict(x, verbose=0)
                return metrics.as_labels(y), metrics.as_labels(prob)
            y, prob = metrics.predict_labels(self.model, self.data)
            return metrics.as_labels(y), metrics.as_labels(prob)

        def on_epoch_end(self, epoch, logs=None):
            if (epoch + 1) % self.freq:
                return
            import matplotlib.pyplot as plt
            import tensorflow as tf

            from . import metrics, plots

            y_true, y_pred = self._predict()
            k = len(self.class_names) if self.class_names else int(max(y_true.max(),
                                                                       y_pred.max())) + 1
            names = self.class_names or [str(i) for i in range(k)]
            cm = metrics.confusion_matrix(y_true, y_pred, k)
            self.last_matrix = cm
            fig = plt.figure(figsize=(4.8, 4.2))
            plots.plot_confusion_matrix(cm, names, ax=fig.gca(), normalize=self.normalize,
                                        title=f"epoch {epoch + 1}")
            fig.tight_layout()
            import io

            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", dpi=80)
            plt.close(fig)
            image = tf.image.decode_png(buffer.getvalue(), channels=4)[None]
            if self._writer is None:
                self._writer = tf.summary.create_file_writer(self.log_dir)
            with self._writer.as_default():
                tf.summary.image("confusion_matrix", image, step=epoch)
            self._writer.flush()

        def on_train_end(self, logs=None):
            if self._writer is not None:
                self._writer.close()
                self._writer = None

    _ConfusionMatrixLogger.__qualname__ = _ConfusionMatrixLogger.__name__ = "ConfusionMatrixLogger"
    _CLASSES["cm"] = _ConfusionMatrixLogger
    return _ConfusionMatrixLogger


def _backup_class():
    """Create (once) a BackupAndRestore that forgets the resume epoch once a fit is over."""
    if "backup" in _CLASSES:
        return _CLASSES["backup"]
    import keras

    class _BackupAndRestore(keras.callbacks.BackupAndRestore):
        """keras.callbacks.BackupAndRestore without its leftover: after a resumed fit, Keras
        keeps `model._initial_epoch`, so the next `fit` of the same model would skip epochs."""

        def on_train_end(self, logs=None):
            super().on_train_end(logs)
            self.model._initial_epoch = None

    _BackupAndRestore.__qualname__ = _BackupAndRestore.__name__ = "BackupAndRestore"
    _CLASSES["backup"] = _BackupAndRestore
    return _BackupAndRestore


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
    import keras

    if mode not in ("auto", "min", "max"):
        raise ValueError(f"make_callbacks: mode must be 'auto', 'min' or 'max', got {mode!r}")
    if not isinstance(histogram_freq, int) or histogram_freq < 0:
        raise ValueError(f"make_callbacks: histogram_freq must be an int >= 0, "
                         f"got {histogram_freq!r}")
    folder = run_dir(run_name, log_dir)
    folder.mkdir(parents=True, exist_ok=True)
    callbacks = []
    if backup:
        # first, so that it restores the state before the other callbacks see the run
        callbacks.append(_backup_class()(str(folder / "backup"), delete_checkpoint=True))
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
    import keras

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


def _layerwise_class():
    """Create (once) the LayerwiseOptimizer class (a keras.optimizers.MultiOptimizer)."""
    if "layerwise" in _CLASSES:
        return _CLASSES["layerwise"]
    import keras

    @keras.saving.register_keras_serializable(package="fer_utils", name="LayerwiseOptimizer")
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
            from keras.saving import serialize_keras_object

            base = self.base_learning_rate
            if not isinstance(base, (int, float)):
                base = serialize_keras_object(base)
            return {"learning_rates": {str(k): float(v) for k, v in self.learning_rates.items()},
                    "base_learning_rate": base, "optimizer": self.optimizer_kind,
                    "optimizer_options": self.optimizer_options, "name": self.name}

        @classmethod
        def from_config(cls, config, custom_objects=None):
            from keras.saving import deserialize_keras_object

            config = dict(config)
            if isinstance(config.get("base_learning_rate"), dict):
                config["base_learning_rate"] = deserialize_keras_object(
                    config["base_learning_rate"], custom_objects=custom_objects)
            return cls(**config)

    LayerwiseOptimizer.__qualname__ = "LayerwiseOptimizer"
    LayerwiseOptimizer.__module__ = __name__
    _CLASSES["layerwise"] = LayerwiseOptimizer
    return LayerwiseOptimizer


def __getattr__(name):
    """`fer_utils.train.LayerwiseOptimizer` is created on first access (lazy Keras import)."""
    if name == "LayerwiseOptimizer":
        return _layerwise_class()
    raise AttributeError(f"module 'fer_utils.train' has no attribute {name!r}")


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
    return _layerwise_class()(learning_rates, base_learning_rate, optimizer.lower(),
                              optimizer_options)


# --------------------------------------------------------------------------- class balance


def class_weights(labels, num_classes: int | None = None) -> dict:
    """"Balanced" class weights n_samples / (n_classes * count) as {class: weight} for `fit`.

    Computed by scikit-learn's `compute_class_weight("balanced")`; a class absent from
    `labels` (possible when `num_classes` is given) gets weight 1.0.
    """
    from sklearn.utils.class_weight import compute_class_weight

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
    import tensorflow as tf

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


def measure_precision_speed(policies=("float32", "mixed_bfloat16"), batch_size: int = 32,
                            image_size: int = 48, steps: int = 8, warmup: int = 2,
                            filters=(32, 64, 128), seed: int = 0) -> dict:
    """Time training steps of a small CNN under each Keras dtype policy.

    Returns:
        {policy: seconds per training step} (median of `steps` timed steps). The global
        policy is restored afterwards.
    """
    import keras
    import tensorflow as tf

    from .models.small import small_cnn

    rng = np.random.default_rng(seed)
    x = tf.constant(rng.random((batch_size, image_size, image_size, 1), dtype=np.float32))
    y = tf.constant(rng.integers(0, 7, batch_size))
    previous = keras.mixed_precision.global_policy()
    results = {}
    try:
        for policy in policies:
            keras.mixed_precision.set_global_policy(policy)
            model = small_cnn((image_size, image_size, 1), 7, filters=filters, dropout=0.0)
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
    """The dtype policy that pays on this machine.

    "mixed_float16" on a GPU; on a CPU with AVX512-BF16/AMX, "mixed_bfloat16" only if a
    measured small-CNN training step is faster than in float32 (measured once, cached);
    otherwise "float32".
    """
    import tensorflow as tf

    if tf.config.list_logical_devices("GPU"):
        return "mixed_float16"
    if not cpu_supports_bf16():
        return "float32"
    if not measure:
        return "float32"
    if "cpu" not in _POLICY_CACHE:
        speed = measure_precision_speed()
        _POLICY_CACHE["cpu_speed"] = speed
        faster = speed["mixed_bfloat16"] < 0.95 * speed["float32"]
        _POLICY_CACHE["cpu"] = "mixed_bfloat16" if faster else "float32"
        if verbose:
            print(f"CPU step time: float32 {speed['float32'] * 1e3:.1f} ms, "
                  f"bfloat16 {speed['mixed_bfloat16'] * 1e3:.1f} ms -> {_POLICY_CACHE['cpu']}")
    return _POLICY_CACHE["cpu"]


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
    import keras

    chosen = mixed_precision_policy(verbose=verbose) if policy == "auto" else policy
    keras.mixed_precision.set_global_policy(chosen)
    if verbose:
        print(f"Keras dtype policy: {chosen}")
    return chosen


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
    import tensorflow as tf

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
