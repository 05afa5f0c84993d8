"""Fine-tune from a trained run, against training from scratch, on a small set of new people.

The experiment of "Fine-tune on your own faces" (README): a small folder of faces, several per
person, the person id in each file name, split by person (`FER_GROUPS`) so that the test faces
belong to people never seen in training. Two ways to train on it, on the same splits:

- scratch: the `train --model small` network (`fu.models.SMALL_RECIPE`) from random weights;
- fine-tuned: `fu.transfer.init_from(SOURCE)`, the trunk of a run `python -m fer_utils train`
  wrote (a FER2013 run: `FER_DATASET=fer2013 python -m fer_utils train --model small`), with a
  new head, its last block and the head trained (`--mode`).

The folder is made once by the built-in renderer (`fu.synth.render_face`): PEOPLE identities
× PER_PERSON faces each, every expression, random intensity, pose, lighting, blur, noise and
background, written as `<class>/p007_03.png`; or pass `--folder` with your own faces (any
layout `FER_DATASET=folder:` reads, person ids matched by `--groups`). It prints, per seed
(each seed splits the people another way), the test accuracy and macro-F1 of both, then
mean ± sd, the CPU seconds, and the two `train` commands that run the same comparison from the
command line. With `--cli` it runs those commands (one per seed) instead of the library calls
and reads each run's meta.json. A script that prints figures, not a test.

Usage:
    python benchmarks/bench_transfer.py --source logs/cli-train-small
    python benchmarks/bench_transfer.py --source logs/cli-train-small --people 80 --seeds 5
    python benchmarks/bench_transfer.py --source RUN --folder data/my_faces --groups 'S(\\d+)_'
    python benchmarks/bench_transfer.py --source logs/cli-train-small --cli
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_FOLDER = ROOT / "data" / "rendered_people"
GROUPS = r"p(\d+)_"


def parse_args(argv=None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, required=True,
                        help="the run to start from: a folder `train` wrote, or a model.keras")
    parser.add_argument("--folder", type=Path, default=DEFAULT_FOLDER,
                        help=f"the faces (default {DEFAULT_FOLDER.relative_to(ROOT)}: rendered "
                             f"here when absent)")
    parser.add_argument("--groups", default=GROUPS,
                        help=f"FER_GROUPS: the person id in a file name (default {GROUPS!r})")
    parser.add_argument("--people", type=int, default=60, help="people to render (60)")
    parser.add_argument("--per-person", type=int, default=7, help="faces per person (7)")
    parser.add_argument("--seeds", type=int, default=3, help="splits by person (3)")
    parser.add_argument("--epochs", type=int, default=30, help="epochs of both runs (30)")
    parser.add_argument("--mode", default="last-block",
                        help="init_from's mode: head, last-block, layerwise or all")
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="Adam's rate (1e-3)")
    parser.add_argument("--cli", action="store_true",
                        help="run `python -m fer_utils train` (with and without --init-from) "
                             "instead of the library calls")
    args = parser.parse_args(argv)
    for name in ("people", "per_person", "seeds", "epochs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if not args.source.exists():
        parser.error(f"--source {args.source}: no such run folder or file (train one: "
                     f"FER_DATASET=fer2013 python -m fer_utils train --model small)")
    return args


def render_people(folder: Path, people: int, per_person: int, seed: int = 0) -> int:
    """Write PEOPLE × PER_PERSON rendered faces as `<class>/pNNN_KK.png`; the number written."""
    import numpy as np
    from PIL import Image

    from fer_utils import synth
    from fer_utils.faceset import EXPRESSIONS

    rng = np.random.default_rng(seed)
    written = 0
    for person in range(people):
        identity = 100_000 + person                      # people the data set never drew
        background = str(rng.choice(synth.BACKGROUNDS))
        for k in range(per_person):
            expression = EXPRESSIONS[(person + k) % len(EXPRESSIONS)]
            pose = {"roll": rng.uniform(-10, 10), "yaw": rng.uniform(-15, 15),
                    "scale": rng.uniform(0.92, 1.08), "shift_x": rng.uniform(-0.04, 0.04),
                    "shift_y": rng.uniform(-0.04, 0.04)}
            image, _ = synth.render_face(
                expression=expression, identity_seed=identity, size=48, channels=1, pose=pose,
                intensity=0.0 if expression == "neutral" else rng.uniform(0.5, 1.0),
                background=background, lighting=rng.uniform(0, 0.4),
                blur=rng.uniform(0, 0.8), noise=rng.uniform(0, 6))
            path = folder / expression / f"p{person:03d}_{k:02d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image[..., 0]).save(path)
            written += 1
    return written


def _report(model, faces, num_classes: int) -> dict:
    """Accuracy and macro-F1 of `model` on `faces`."""
    from fer_utils import metrics, train

    y_true, y_prob = metrics.predict_labels(model, train.classifier_batches(model, faces, 256))
    return {"accuracy": metrics.accuracy(y_true, y_prob),
            "macro_f1": metrics.macro_f1(y_true, y_prob, num_classes)}


def library_runs(args, faces) -> list[dict]:
    """Both ways per seed through the library: fit_classifier on the same split."""
    import keras

    from fer_utils import data, models, train, transfer

    rows = []
    for seed in range(args.seeds):
        parts = data.split(faces, seed=seed)
        for way in ("scratch", "init-from"):
            keras.utils.set_random_seed(seed)
            optimizer = keras.optimizers.Adam(args.learning_rate)
            if way == "scratch":
                model = models.small_cnn(faces.image_shape, faces.num_classes,
                                         **models.SMALL_RECIPE)
            else:
                start = transfer.init_from(args.source, faces.num_classes, mode=args.mode,
                                           class_names=faces.class_names,
                                           learning_rate=args.learning_rate)
                model, optimizer = start.model, start.optimizer or optimizer
            started = time.process_time()
            train.fit_classifier(model, parts[0], parts[1], epochs=args.epochs, batch_size=32,
                                 optimizer=optimizer, seed=seed, verbose=0)
            rows.append({"way": way, "seed": seed, "test_faces": len(parts[2]),
                         "cpu_seconds": time.process_time() - started,
                         **_report(model, parts[2], faces.num_classes)})
            print(f"seed {seed} {way:9s}: test accuracy {rows[-1]['accuracy']:.3f}, macro-F1 "
                  f"{rows[-1]['macro_f1']:.3f} on {len(parts[2])} faces of unseen people "
                  f"({rows[-1]['cpu_seconds']:.0f} CPU-s)", flush=True)
    return rows


def cli_commands(args, seed: int) -> dict:
    """The two `train` commands of one seed: {way: argv}."""
    common = [sys.executable, "-m", "fer_utils", "train", "--epochs", str(args.epochs),
              "--learning-rate", str(args.learning_rate), "--augment", "none",
              "--class-weights", "none", "--tta", "off"]
    out = ROOT / "logs" / "bench-transfer"
    return {"scratch": common + ["--model", "small", "--out", str(out / f"scratch-{seed}")],
            "init-from": common + ["--init-from", str(args.source),
                                   "--out", str(out / f"init-from-{seed}")]}


def cli_runs(args) -> list[dict]:
    """Both ways per seed through `python -m fer_utils train`; figures from meta.json."""
    help_text = subprocess.run([sys.executable, "-m", "fer_utils", "train", "--help"],
                               capture_output=True, text=True, cwd=ROOT).stdout
    if "--init-from" not in help_text:
        raise SystemExit("error: this checkout's `train` has no --init-from option yet; run "
                         "without --cli (the library calls)")
    rows = []
    for seed in range(args.seeds):
        env = dict(os.environ, FER_DATASET=f"folder:{args.folder}", FER_GROUPS=args.groups,
                   FER_SEED=str(seed))
        for way, argv in cli_commands(args, seed).items():
            started = time.time()
            subprocess.run(argv, env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
            meta = json.loads((Path(argv[-1]) / "meta.json").read_text())
            rows.append({"way": way, "seed": seed, "test_faces": meta["test_faces"],
                         "cpu_seconds": float("nan"), "wall_seconds": time.time() - started,
                         "accuracy": meta["test_accuracy"], "macro_f1": meta["test_macro_f1"]})
            print(f"seed {seed} {way:9s}: test accuracy {meta['test_accuracy']:.3f}, macro-F1 "
                  f"{meta['test_macro_f1']:.3f} on {meta['test_faces']} faces of unseen people",
                  flush=True)
    return rows


def main(argv=None) -> int:
    """Render the folder when needed, run both ways per seed, print the figures."""
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if not args.folder.exists():
        written = render_people(args.folder, args.people, args.per_person)
        print(f"rendered {written} faces of {args.people} people into {args.folder}")
    import fer_utils as fu
    from fer_utils import data

    fu.setup(verbose=False)
    faces = data.load_image_folder(args.folder, size=48, channels=1, groups=args.groups,
                                   progress=False)
    people = len(set(faces.groups)) if faces.groups is not None else 0
    print(f"{len(faces)} faces of {people} people in {args.folder}; source {args.source}; "
          f"{args.epochs} epochs; mode {args.mode}; {args.seeds} splits by person")
    rows = cli_runs(args) if args.cli else library_runs(args, faces)
    import pandas as pd

    frame = pd.DataFrame(rows)
    summary = frame.groupby("way")[["accuracy", "macro_f1"]].agg(["mean", "std"]).round(3)
    print(summary.to_string())
    gain = (frame[frame.way == "init-from"].set_index("seed")["macro_f1"]
            - frame[frame.way == "scratch"].set_index("seed")["macro_f1"])
    print(f"init-from minus scratch, macro-F1: {gain.mean():+.3f} (per seed: "
          f"{', '.join(f'{g:+.3f}' for g in gain)})")
    print("the same from the command line, per seed:")
    for way, argv in cli_commands(args, 0).items():
        print(f"  FER_DATASET=folder:{args.folder} FER_GROUPS='{args.groups}' FER_SEED=0 "
              f"python {' '.join(argv[1:])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
