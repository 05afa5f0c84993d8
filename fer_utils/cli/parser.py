"""The command line's parser: the commands, their options and their help."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import (AUGMENTS, CLASS_WEIGHT_CHOICES, FINE_TUNE_MODES, MODELS, PRECISIONS,
                      STRATEGIES, TTA_CHOICES)

__all__ = ["PROG", "BENCH_PARTS", "CONVERT_FORMATS", "CliError", "build_parser"]

PROG = "python -m fer_utils"
BENCH_PARTS = ("all", "generate", "augment", "train")
CONVERT_FORMATS = ("fer2013", "folder")


class CliError(Exception):
    """An error in what the user asked for: printed as one line, exit status 1."""


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
allows, at most 60 (meta.json records the plan; --epochs N repeats the run exactly). Choices are made on
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
    train.add_argument("--keep-head", action="store_true",
                       help="with --init-from: keep the source's own head instead of a new one "
                            "(the new faces must have the source's classes, in its order: a "
                            "FER2013 model fine-tuned on CIFE)")
    train.add_argument("--width", type=_positive_float, metavar="SHARE",
                       help="small: train with this share (0-1] of the small CNN's filters "
                            "(32-256). Default: chosen for the CPU: 0.75 when the budget "
                            "decides the epochs and training runs in fp32 (a CPU without "
                            "bfloat16), else 1")
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
    import fer_utils.cli as cli  # its docstring holds the multi-worker guide

    doc = cli.__doc__ or ""
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
    from ..tracking import DEFAULT_SMOOTH

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
