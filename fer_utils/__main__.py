"""The kit's command line: `python -m fer_utils {train,predict,export,data,bench,fetch-*}`.

Examples (settings come from the FER_* environment variables: the README's "Settings")::

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
with the same recipe: model, loss, class weights, the learning-rate schedule and the time
budget (every worker stops at the same step), precision, the float32 best checkpoint and
TensorBoard scalars. A multi-worker run does not resume after an interruption: it starts
again. On one machine with several GPUs, `--strategy mirrored` (or `auto`) splits each batch
across the GPUs with `fit`.

Errors in the input (a missing picture, a bad setting) print ONE line `error: ...` on stderr
and exit with status 1 (2 for a wrong command line); `--debug` shows the full traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from .config import (AUGMENTS, CLASS_WEIGHT_CHOICES, FINE_TUNE_MODES, MODELS, PRECISIONS,
                     STRATEGIES, TTA_CHOICES)

PROG = "python -m fer_utils"
BENCH_PARTS = ("all", "generate", "augment", "train")
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

    _add_predict_parser(commands)

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
Train the course's classifier on FER_DATASET within a time budget; writes OUT/model.keras
(raw pixels in, probabilities out: the preprocessing is the model's first layer), OUT/best.keras
(the best epoch on validation), OUT/meta.json (what was trained, how, and how it scored) and
TensorBoard logs in OUT.

The small CNN's recipe: four conv blocks with batch norm, Adam 2e-3, batch 128, flips and
shifts of up to 4 px, a cosine learning-rate decay that reaches 0 at the end of the planned
epochs, bf16 where this CPU computes it faster, and test-time flips when they pay on the
validation split. With a real data set (not the built-in one) the laptop profile reads the
WHOLE training split, and after the first epoch plans as many whole epochs as the budget
allows (meta.json records the plan; --epochs N repeats the run exactly). Choices are made on
the validation split (FER2013's PublicTest); the test split (PrivateTest) is reported once, at
the end.

Interrupted (Ctrl-C, a kill, a reboot)? Run the same command again: training resumes at the
epoch after the last one saved, with the learning-rate schedule where it was and the rest of
the budget; meta.json says when it resumed."""


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
    train.add_argument("--tta", choices=TTA_CHOICES, default="auto",
                       help="test-time flips: average each face's prediction with its mirror "
                            "image's, inside the saved model. auto (default): only when they "
                            "raise the validation accuracy (both are printed)")
    train.add_argument("--init-from", metavar="PATH",
                       help="start from a trained model (a run folder `train` wrote, a "
                            "model.keras or a weights file): its trunk, a new head for this "
                            "data set's classes, trained as --fine-tune says; meta.json records "
                            "the source (path, sha256, its data set and classes)")
    train.add_argument("--fine-tune", choices=FINE_TUNE_MODES, default="last-block",
                       help="with --init-from: what trains. last-block (default, the source's "
                            "recipe: the early blocks frozen, the last block and the head "
                            "train), head (the trunk frozen), layerwise (per-layer rates: the "
                            "first block frozen, the middle ones at a tenth of the rate), all")
    train.add_argument("--precision", choices=PRECISIONS, default="auto",
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
    bench.add_argument("--precision", choices=PRECISIONS, default="fp32",
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


def _at_least_zero(convert, what: str):
    """An argparse type: `what` (converted by `convert`) >= 0, echoing the bad value."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not value >= 0:
            raise argparse.ArgumentTypeError(f"expected {what} >= 0, got {text!r}")
        return value

    return parse


_non_negative_int = _at_least_zero(int, "an integer")
_non_negative_float = _at_least_zero(float, "a number")


def _add_predict_parser(commands) -> None:
    """The `predict` command: pictures, videos, folders of photos, or a camera."""
    from .tracking import DEFAULT_SMOOTH

    predict = commands.add_parser(
        "predict", help="predict the expressions of the faces in pictures, videos, folders",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=_PREDICT_DESCRIPTION)
    predict.add_argument("inputs", nargs="*", type=Path, metavar="INPUT",
                         help="pictures (PNG, JPEG, ...), videos (mp4, avi, mov, mkv, webm, "
                              "any file OpenCV reads) and folders of photos (read recursively)")
    predict.add_argument("--model", type=Path, required=True,
                         help="a .keras or .tflite model, or the folder `train --out` wrote "
                              "(its meta.json: NAME.meta.json, or meta.json beside model.*)")
    predict.add_argument("--out", type=Path, default=Path("predictions"),
                         help="output folder (default: ./predictions)")
    predict.add_argument("--camera", type=_non_negative_int, metavar="N",
                         help="instead of files: camera N (0 = the first) in a live window; "
                              "needs OpenCV with windows (opencv-python), outside Docker")
    predict.add_argument("--save-crops", action="store_true",
                         help="pictures: also save each face as the model sees it "
                              "(NAME_face0.png, ...): the first thing to look at when "
                              "predictions look wrong")
    predict.add_argument("--min-score", type=float, default=0.5,
                         help="ignore detections with a dlib score below this (default 0.5; "
                              "0 keeps everything dlib reports)")
    predict.add_argument("--detector", choices=("hog", "cnn"), default="hog",
                         help="face detector: hog (default; dlib's fast frontal-face detector) "
                              "or cnn (dlib's CNN detector from face-recognition-models: a few "
                              "seconds per photo on a CPU, finds turned, tilted and partly "
                              "hidden faces)")
    predict.add_argument("--upsample", type=_non_negative_int, metavar="N",
                         help="videos, folders, camera: double the picture N times before "
                              "detecting (default 1 for hog: faces of 40 px or more; 0 is "
                              "about 4x faster and finds faces of 80 px or more)")
    rate = predict.add_mutually_exclusive_group()
    rate.add_argument("--every", type=_positive_int, default=1, metavar="N",
                      help="videos: predict every N-th frame (default 1: all)")
    rate.add_argument("--fps", type=_positive_float, metavar="F",
                      help="videos: predict F frames per second of video instead")
    predict.add_argument("--smooth", type=_non_negative_float, default=DEFAULT_SMOOTH,
                         metavar="SECONDS",
                         help="videos, camera: average each face's probabilities over about "
                              f"this many seconds (default {DEFAULT_SMOOTH}; 0 = off)")
    predict.add_argument("--annotate", action="store_true",
                         help="videos: also write NAME_annotated.mp4 (boxes, ids, labels and "
                              "bars on the predicted frames)")


_PREDICT_DESCRIPTION = """\
Detect faces (dlib), crop and preprocess them exactly like the model's training faces
(meta.json from `train`), predict, and write into --out:
  picture  NAME.json ({image, faces: [{box, score, label, probabilities}]}, most confident
           face first; a note when no face is found) and NAME_annotated.png (boxes, labels,
           a bar per class next to each face);
  video    NAME.csv (frame, time, face_id, box, score, label, one column per class; a frame
           without a face is a row with an empty face_id), NAME_timeline.png (each class's
           probability over time, one panel per face id) and, with --annotate,
           NAME_annotated.mp4. Frames are streamed (memory stays flat), faces keep one id
           per person (box overlap across frames), probabilities are smoothed (--smooth);
  folder   one predictions.csv for all folders of the run: file, face, box, score, label,
           probabilities, error; a photo without a face is a row with an empty label, a
           broken file a row with its error (and a warning), never a stop.
--camera N shows the same pipeline live in a window (outside Docker: the container has no
camera). A broken picture, a file that is not a video or a missing input stops the command
with one error line before anything is predicted; a video cut short is predicted as far as
it can be read, with a warning."""


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


# --- commands ---------------------------------------------------------------------------------


def cmd_train(args) -> int:
    """`train`: the course's recipe headless; writes model.keras, meta.json, TensorBoard logs."""
    if args.no_class_weights and args.class_weights not in (None, "none"):
        raise CliError(f"--no-class-weights contradicts --class-weights {args.class_weights}")
    settings = _settings()
    _quiet_tensorflow()
    from .train import Recipe, train_recipe

    recipe = Recipe(model=args.model, epochs=args.epochs, minutes=args.minutes, size=args.size,
                    batch_size=args.batch_size, learning_rate=args.learning_rate,
                    augment=args.augment,
                    class_weights="none" if args.no_class_weights else args.class_weights,
                    precision=args.precision, tta=args.tta, strategy=args.strategy,
                    init_from=args.init_from, fine_tune=args.fine_tune)
    result = train_recipe(recipe, out=args.out, settings=settings)
    for line in result.lines:
        print(line, file=sys.stderr if line.startswith("warning:") else sys.stdout, flush=True)
    return 0


def _load_any_model(path: Path):
    """(model, meta) for a .keras file, a train --out folder, or a .tflite file."""
    from . import inference

    return inference.load_any_model(path)


def _output_names(paths, out: Path) -> list[str]:
    """A unique file stem in `out` per input picture or video (photo.jpg, photo_2.jpg, ...)."""
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


def _check_inputs(pictures, videos) -> None:
    """Read every picture and open every video before TensorFlow loads: one `error:` line per
    bad file, then stop."""
    from .data import read_image
    from .video import VideoReader

    def open_video(path):
        VideoReader(path).close()

    problems = []
    for path, check in [(p, read_image) for p in pictures] + [(v, open_video) for v in videos]:
        try:
            check(path)
        except (FileNotFoundError, ValueError) as err:  # DataError and VideoError included
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


def _sort_inputs(paths) -> tuple[list, list, list]:
    """(pictures, videos, folders) among the inputs: folders, then by extension, then content."""
    from .data.readers import IMAGE_EXTENSIONS, sniff
    from .video import VIDEO_EXTENSIONS

    pictures, videos, folders = [], [], []
    for path in paths:
        suffix = path.suffix.lower()
        if path.is_dir():
            folders.append(path)
        elif suffix in IMAGE_EXTENSIONS:
            pictures.append(path)
        elif suffix in VIDEO_EXTENSIONS:
            videos.append(path)
        elif not path.exists():
            raise FileNotFoundError(f"input not found: {path}")
        else:  # an unknown extension: a picture if it looks like one, else try it as a video
            with open(path, "rb") as handle:
                (pictures if sniff(handle.read(16)) else videos).append(path)
    return pictures, videos, folders


def _video_line(result, out: Path) -> str:
    """What `predict` prints for a video."""
    files = ", ".join(p.name for p in (result.timeline, result.annotated) if p is not None)
    rate = result.frames_predicted / max(result.seconds, 1e-9)
    ids = sorted(result.face_ids)
    found = (f"face id(s) {', '.join(map(str, ids[:10]))}"
             + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")) if ids else result.note
    return (f"{result.source}: {result.frames_read:,} frames ({result.frames_read / result.fps:.1f}"
            f" s at {result.fps:g} fps), {result.frames_predicted:,} predicted at {rate:.1f} "
            f"frames/s; {found} -> {result.csv}, {files}")


def _predict_videos(model, meta, paths, stems, args, out: Path) -> None:
    """Predict each video; print a line per video and a warning for one cut short."""
    from .video import predict_video

    for path, stem in zip(paths, stems):
        result = predict_video(model, path, meta, out=out, every=args.every, fps=args.fps,
                               smooth=args.smooth, annotate=args.annotate,
                               min_score=args.min_score, detector=args.detector,
                               upsample=args.upsample, progress=sys.stderr.isatty(),
                               name=stem)
        if result.truncated:
            print(f"warning: {result.truncated}; the frames read were predicted",
                  file=sys.stderr)
        print(_video_line(result, out), flush=True)


def _predict_folders(model, meta, folders, args, out: Path) -> None:
    """Predict every photo of the folders into one predictions.csv; list the broken files."""
    from .photo_folder import predict_folder

    result = predict_folder(model, folders, meta, out=out, min_score=args.min_score,
                            detector=args.detector, upsample=args.upsample,
                            progress=sys.stderr.isatty())
    for path, reason in result.broken[:20]:
        print(f"warning: {path}: {reason} (a row with this error is in the CSV)",
              file=sys.stderr)
    if len(result.broken) > 20:
        print(f"warning: {len(result.broken) - 20} more broken photos: see the CSV's error "
              f"column", file=sys.stderr)
    if result.other_files:
        names = ", ".join(str(p) for p in result.other_files[:3])
        more = f" and {len(result.other_files) - 3} more" if len(result.other_files) > 3 else ""
        print(f"note: {len(result.other_files)} file(s) without a picture extension were not "
              f"read: {names}{more}", file=sys.stderr)
    rate = result.photos / max(result.seconds, 1e-9)
    print(f"{', '.join(map(str, folders))}: {result.photos:,} photos, {result.faces:,} face(s), "
          f"{result.without_face:,} without a face, {len(result.broken):,} broken "
          f"({rate:.1f} photos/s) -> {result.csv}", flush=True)


def _predict_camera(args) -> int:
    """`predict --camera N`: check OpenCV's windows and the camera, then the live window."""
    from .camera import camera_support, open_camera, predict_camera
    from .video import VideoError

    problem = camera_support()
    if problem:
        raise CliError(f"--camera: {problem}")
    open_camera(args.camera).release()
    _quiet_tensorflow()
    model, meta = _load_any_model(Path(args.model))
    try:
        shown = predict_camera(model, meta, camera=args.camera, smooth=args.smooth,
                               min_score=args.min_score, detector=args.detector,
                               upsample=args.upsample)
    except VideoError as err:
        raise CliError(str(err)) from None
    print(f"camera {args.camera}: {shown:,} frames shown")
    return 0


def cmd_predict(args) -> int:
    """`predict`: faces → crops like training → probabilities, for pictures, videos, folders."""
    if args.camera is not None:
        if args.inputs:
            raise CliError("give either inputs (pictures, videos, folders) or --camera, "
                           "not both")
        return _predict_camera(args)
    if not args.inputs:
        raise CliError("nothing to predict: give pictures, videos or folders, or --camera N")
    pictures, videos, folders = _sort_inputs(args.inputs)
    # Check every picture and video before loading TensorFlow: bad input fails in a second.
    _check_inputs(pictures, videos)
    model_path = Path(args.model)
    if not model_path.exists():
        raise FileNotFoundError(f"model not found: {model_path}")
    out = _check_output_folder(args.out)
    _quiet_tensorflow()
    model, meta = _load_any_model(model_path)
    if "note" in meta:
        print(f"warning: {meta['note']}", file=sys.stderr)
    stems = _output_names(pictures + videos, out)
    for path, stem in zip(pictures, stems):
        print(_predict_one(model, meta, path, stem, args, out), flush=True)
    _predict_videos(model, meta, videos, stems[len(pictures):], args, out)
    if folders:
        _predict_folders(model, meta, folders, args, out)
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
    from . import _stderr_held

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with _stderr_held(True):  # keras.utils.get_file loads TensorFlow: keep its banner out
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
