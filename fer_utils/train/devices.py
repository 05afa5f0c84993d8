"""Devices: one CPU or GPU, several GPUs (MirroredStrategy), several machines (multi-worker).

Keras 3's `fit` fails under MultiWorkerMirroredStrategy (keras-team/keras#20585), so
`fit_multiworker` runs TensorFlow's documented custom loop with the same recipe as
`fit_classifier`: the `BudgetSchedule` (rate per step, plan after the first epoch, time
budget), mixed precision and a float32 best checkpoint. Every decision that could differ
between workers (the plan, the stop at the budget) is averaged across them, so that all
workers take the same steps. An interrupted multi-worker run does not resume: it starts again.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from ..config import STRATEGIES
from .callbacks import run_dir
from .precision import computing_in, float32_policies
from .schedule import BudgetSchedule

__all__ = ["STRATEGIES", "distribution_strategy", "is_chief", "is_multiworker",
           "synchronize_batch_norm", "fit_multiworker"]



def distribution_strategy(kind: str = "auto"):
    """A tf.distribute strategy for one machine, several GPUs or several workers.

    Args:
        kind: "auto" (MultiWorkerMirroredStrategy when TF_CONFIG is set, MirroredStrategy
            with more than one GPU, else the default one-device strategy), "one"
            (OneDeviceStrategy on the first GPU, else the CPU), "mirrored" or "multiworker".

    Returns:
        A `tf.distribute.Strategy`; build and compile the model inside `strategy.scope()`.
    """
    if kind not in STRATEGIES:
        raise ValueError(f"distribution_strategy: kind={kind!r} is not supported; "
                         f"allowed: {', '.join(STRATEGIES)}")
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


def is_multiworker(strategy) -> bool:
    """True for a MultiWorkerMirroredStrategy."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def is_chief(strategy) -> bool:
    """True on the worker that writes the results (always true without multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    if not task_type:
        return True
    if task_type == "chief":
        return True
    cluster = resolver.cluster_spec().as_dict()
    return task_type == "worker" and int(resolver.task_id or 0) == 0 and "chief" not in cluster


def synchronize_batch_norm(model, strategy) -> None:
    """With several replicas, batch norm uses the global batch's statistics (Keras'
    `synchronized=True`): every worker then keeps the same moving averages."""
    if strategy.num_replicas_in_sync < 2:
        return
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = True


def _agreed(strategy, value: float) -> float:
    """The mean of `value` over every replica of every worker (the same number everywhere)."""
    local = tf.constant(float(value), tf.float32)
    per_replica = strategy.run(lambda: tf.identity(local))
    return float(strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica, axis=None))


def _predict_local(model, dataset) -> tuple[np.ndarray, np.ndarray]:
    """(labels, probabilities) for every batch of `dataset`, on this worker alone."""
    step = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    labels, probs = [], []
    for x, y in dataset:
        labels.append(np.asarray(y))
        probs.append(np.asarray(step(x), np.float32))
    return np.concatenate(labels), np.concatenate(probs)


def fit_multiworker(strategy, model, train_ds, val_ds, *, learning_rate: float,
                    epochs: int | None, minutes: float | None, schedule: str = "cosine",
                    precision: str = "fp32", class_weight=None, global_batch: int,
                    out, verbose: bool = True) -> dict:
    """Train `model` on every worker in sync, with the kit's schedule, budget and precision.

    Args:
        strategy: a MultiWorkerMirroredStrategy (the model was built in its scope).
        model: a compiled-or-not classifier (softmax output, sparse labels).
        train_ds, val_ds: tf.data datasets of global (images, labels) batches (val may be None).
        learning_rate: the first rate (Adam).
        epochs: planned epochs, or None: planned after the first epoch from `minutes`.
        minutes: the training budget (all workers stop at the same step when it is spent).
        schedule: "cosine" or "constant" (`BudgetSchedule`).
        precision: "fp32", "bf16" or "fp16" (resolved; weights stay float32).
        class_weight: {class: weight} or None.
        global_batch: images per step over all workers.
        out: the run folder; the chief writes best.keras and TensorBoard logs there, the
            other workers their logs under `out/workers/worker-N`.
        verbose: print one line per epoch and the schedule's lines.

    Returns:
        {"history", "seconds", "path", "precision", "stopped", "schedule"}.
    """
    started = time.perf_counter()
    out = Path(out)
    chief = is_chief(strategy)
    # Every worker must compute alike: "auto" measured on each machine may differ.
    if _agreed(strategy, float(precision == "bf16")) not in (0.0, 1.0) or \
            _agreed(strategy, float(precision == "fp16")) not in (0.0, 1.0):
        print(f"note: the workers chose different precisions; all train in fp32 (this one "
              f"chose {precision})", flush=True)
        precision = "fp32"
    log_dir = out if chief else out / "workers" / f"worker-{strategy.cluster_resolver.task_id}"
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    batches = strategy.experimental_distribute_dataset(train_ds.with_options(options))
    steps_per_epoch = int(sum(1 for _ in train_ds))
    num_classes = int(model.output_shape[-1])
    weights = tf.constant([float((class_weight or {}).get(c, 1.0)) for c in range(num_classes)])
    with strategy.scope():
        optimizer = keras.optimizers.Adam(learning_rate)
        if precision == "fp16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        loss_fn = keras.losses.SparseCategoricalCrossentropy(reduction=None)
        model.optimizer.build(model.trainable_variables)
    plan = BudgetSchedule(learning_rate, schedule, epochs=epochs, minutes=minutes,
                          started=started, verbose=verbose and chief)
    plan.set_model(model)
    plan.set_params({"steps": steps_per_epoch, "epochs": epochs})

    @tf.function
    def train_step(batch, stop_vote):
        """One synchronised step on every replica; (loss, correct, faces, stop votes) summed."""
        def replica_step(x, y, vote):
            """Loss, gradients and update on this replica's share of the batch."""
            y = tf.cast(tf.reshape(y, [-1]), tf.int32)
            with tf.GradientTape() as tape:
                probs = tf.cast(model(x, training=True), tf.float32)
                per_face = loss_fn(y, probs) * tf.gather(weights, y)
                loss = tf.nn.compute_average_loss(per_face, global_batch_size=global_batch)
            grads = tape.gradient(loss, model.trainable_variables)
            model.optimizer.apply_gradients(zip(grads, model.trainable_variables))
            hits = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(probs, 1, output_type=tf.int32), y),
                                         tf.float32))
            return loss, hits, tf.cast(tf.size(y), tf.float32), vote

        values = strategy.run(replica_step, args=(*batch, stop_vote))
        return [strategy.reduce("SUM", v, axis=None) for v in values]

    writers = {name: tf.summary.create_file_writer(str(log_dir / name))
               for name in ("train", "validation")}
    history: dict = {}
    best, best_path = np.inf, out / "best.keras"
    plan.on_train_begin()
    epoch, stop = 0, False
    with computing_in(model, precision):
        while not stop and (plan.total_epochs is None or epoch < plan.total_epochs):
            plan.on_epoch_begin(epoch)
            loss_sum = hits = count = steps = 0.0
            for batch in batches:
                plan.on_train_batch_begin(int(steps))
                over = float(plan.used_seconds() >= plan._budget())
                loss, hit, n, votes = train_step(batch, tf.constant(over))
                loss_sum, hits, count, steps = loss_sum + float(loss), hits + float(hit), \
                    count + float(n), steps + 1
                plan.steps_done += 1
                plan._batch_seconds.append(time.perf_counter() - plan._batch_began)
                if float(votes) > 0:  # some worker is out of time: every worker stops here
                    plan._stop("after", "the time budget is spent")
                    stop = True
                    break
            logs = {"loss": loss_sum / max(steps, 1), "accuracy": hits / max(count, 1)}
            if val_ds is not None:
                labels, probs = _predict_local(model, val_ds)
                logs["val_loss"] = float(np.mean(keras.losses.sparse_categorical_crossentropy(
                    labels, probs)))
                logs["val_accuracy"] = float((probs.argmax(1) == labels).mean())
            if plan.total_epochs is None:
                plan._plan_after(epoch + 1)
                agreed = int(round(_agreed(strategy, plan.total_epochs)))
                if agreed != plan.total_epochs:
                    plan.total_epochs = agreed
                    plan.planned += f"; {agreed} epochs agreed by the workers"
            logs["learning_rate"] = plan.rates[-1] if plan.rates else learning_rate
            for key, value in logs.items():
                history.setdefault(key, []).append(value)
                writer = writers["validation" if key.startswith("val_") else "train"]
                with writer.as_default():
                    tf.summary.scalar(f"epoch_{key.removeprefix('val_')}", value, step=epoch)
            monitored = logs.get("val_loss", logs["loss"])
            if monitored < best:  # every worker saves (the others to a temporary folder)
                best = monitored
                with float32_policies(model), tempfile.TemporaryDirectory() as tmp:
                    model.save(best_path if chief else Path(tmp) / "best.keras")
            if verbose:
                print(f"epoch {epoch + 1}/{plan.total_epochs or '?'}: "
                      + " - ".join(f"{k}: {v:.4g}" for k, v in logs.items()), flush=True)
            epoch += 1
    for writer in writers.values():
        writer.close()
    model.compile(optimizer=model.optimizer, loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return {"history": history, "seconds": time.perf_counter() - started,
            "path": "full (multi-worker)", "precision": precision, "stopped": plan.message,
            "schedule": plan.state(), "run_dir": run_dir(out.name, out.parent)}
