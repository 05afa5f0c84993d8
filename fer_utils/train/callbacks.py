"""The course's callbacks: TensorBoard, a float32 best checkpoint, resume, CSV log, progress.

`make_callbacks(run_name)` gives the standard set for one run under `logs/<run_name>`;
`CallbacksOnModel` lets them see the full image-to-label model while only its trainable tail
trains (the cached path of `fit_classifier`).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import keras
import tensorflow as tf
from tqdm.keras import TqdmCallback

from .. import metrics
from .precision import float32_policies

__all__ = ["run_dir", "TqdmProgress", "ConfusionMatrixLogger", "BackupAndRestore",
           "EpochRecords", "Float32Checkpoint", "CallbacksOnModel", "make_callbacks"]


def run_dir(run_name: str, log_dir=None) -> Path:
    """The folder of one run: `<log_dir or settings.log_dir>/<run_name>` (not created)."""
    if not isinstance(run_name, str) or not run_name.strip() or run_name.strip() in (".", ".."):
        raise ValueError(f"run_name must be a non-empty folder name, got {run_name!r}")
    if os.sep in run_name.strip("/") or "/" in run_name.strip("/"):
        raise ValueError(f"run_name must be a single folder name without '/', got {run_name!r}")
    if log_dir is None:
        from ..config import get_settings

        log_dir = get_settings().log_dir
    return Path(log_dir) / run_name.strip().strip("/")


class TqdmProgress(TqdmCallback):
    """tqdm's Keras callback as the course uses it: one bar over the epochs, metrics beside it.

    Use it with `fit(..., verbose=0)`; a resumed run's bar starts at its first epoch.
    """

    def __init__(self, desc: str = "epochs", leave: bool = True):
        super().__init__(verbose=0, desc=desc, leave=leave)


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

        from .. import plots

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
    """keras.callbacks.BackupAndRestore for runs that resume cleanly.

    - A resumed run's CSV log keeps only the epochs the backup holds (a kill after the log
      was written but before the backup was saved would otherwise repeat an epoch).
    - With `deferred`, the backup is saved by the run's last callback (`EpochRecords`), after
      the logs and checkpoints of the epoch, so that a resumed run never misses them.
    - After a resumed fit Keras keeps `model._initial_epoch`, so the next `fit` of the same
      model would skip epochs; it is cleared at the end of training.
    """

    def __init__(self, backup_dir, delete_checkpoint: bool = True, history_csv=None):
        super().__init__(backup_dir, delete_checkpoint=delete_checkpoint)
        self.history_csv = None if history_csv is None else Path(history_csv)
        self.deferred = False

    def on_train_begin(self, logs=None):
        """Restore the backup (Keras); trim the CSV log to the restored epochs."""
        super().on_train_begin(logs)
        resumed = int(getattr(self.model, "_initial_epoch", None) or 0)
        if resumed and self.history_csv is not None and self.history_csv.is_file():
            import csv

            with open(self.history_csv, newline="") as f:
                rows = list(csv.reader(f))
            kept = rows[:1] + [r for r in rows[1:] if r and int(r[0]) < resumed]
            with open(self.history_csv, "w", newline="") as f:
                csv.writer(f).writerows(kept)

    def on_epoch_end(self, epoch, logs=None):
        """Save the backup (Keras), unless the run's last callback does it."""
        if self.deferred:
            self._current_epoch, self._last_batch_seen = epoch + 1, 0
            return
        super().on_epoch_end(epoch, logs)

    def on_train_end(self, logs=None):
        """Delete the backup (Keras, unless kept) and clear the resume epoch."""
        super().on_train_end(logs)
        self.model._initial_epoch = None


class EpochRecords(keras.callbacks.Callback):
    """The last callback of a run: saves the backup, then the schedule's state, once the
    epoch's logs, TensorBoard scalars and checkpoint are written."""

    def __init__(self, backup=None, schedule=None):
        super().__init__()
        self.backup, self.schedule = backup, schedule
        if backup is not None:
            backup.deferred = True
        if schedule is not None:
            schedule.defer_state = True

    def on_epoch_end(self, epoch, logs=None):
        """Backup first (what a resumed run restores), then the schedule's state."""
        if self.backup is not None:
            self.backup._save_model()
        if self.schedule is not None:
            self.schedule.write_state()


class Float32Checkpoint(keras.callbacks.ModelCheckpoint):
    """keras.callbacks.ModelCheckpoint whose files reload as float32 models.

    Keras stores every layer's dtype policy in a `.keras` file, so a model saved while it
    computes in mixed precision would reload as "mixed_bfloat16"; this checkpoint saves the
    model with its float32 policies (its weights are float32 anyway).
    """

    def _save_model(self, epoch, batch, logs):
        """Save as ModelCheckpoint does, with float32 policies for the moment."""
        with float32_policies(self.model):
            super()._save_model(epoch, batch, logs)


class CallbacksOnModel(keras.callbacks.Callback):
    """Runs callbacks on another model than the one `fit` trains.

    On the cached path `fit_classifier` trains the trainable tail of a model on precomputed
    features; wrapped in this callback, ModelCheckpoint, BackupAndRestore, TensorBoard and
    the schedule see the FULL image-to-label model (which shares the tail's layers and
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
                   histogram_freq: int = 0, progress: bool = False, mode: str = "auto",
                   schedule=None):
    """The course's standard callbacks for one training run.

    Args:
        run_name: the run's folder name under the log folder.
        log_dir: the log folder (default: `get_settings().log_dir`, i.e. `logs/`).
        monitor: the quantity the best checkpoint is chosen by ("val_loss", "val_accuracy"...).
        checkpoint: save the best model to `<run>/best.keras` (float32, `Float32Checkpoint`).
        backup: `BackupAndRestore` in `<run>/backup`: re-running an interrupted `fit` with
            the same callbacks resumes at the next epoch (the folder is removed when a fit
            finishes normally; "keep": kept, for a caller with more work after the fit).
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
        schedule: a `BudgetSchedule` to run right after the backup is restored (it keeps
            its state next to the backup, in `<run>/backup/schedule.json`).

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
    callbacks, restore = [], None
    if backup:
        # first, so that it restores the state before the other callbacks see the run
        restore = BackupAndRestore(str(folder / "backup"), delete_checkpoint=backup != "keep",
                                   history_csv=folder / "history.csv" if csv else None)
        callbacks.append(restore)
    if schedule is not None:
        if backup and schedule.state_path is None:
            schedule.state_path = folder / "backup" / "schedule.json"
        callbacks.append(schedule)
    if tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(str(folder), histogram_freq=histogram_freq,
                                                     write_graph=False))
    if checkpoint:
        callbacks.append(Float32Checkpoint(str(folder / "best.keras"), monitor=monitor,
                                           mode=mode, save_best_only=True, verbose=0))
    if csv:
        # append only when resuming an interrupted run; a fresh run starts a fresh log
        resuming = backup and (folder / "backup").exists()
        callbacks.append(keras.callbacks.CSVLogger(str(folder / "history.csv"), append=resuming))
    if confusion_matrix_data is not None:
        callbacks.append(ConfusionMatrixLogger(confusion_matrix_data, folder, class_names))
    if progress:
        callbacks.append(TqdmProgress(desc=run_name))
    if restore is not None:  # last: the backup and the schedule's state, after the logs
        callbacks.append(EpochRecords(restore, schedule))
    return callbacks
