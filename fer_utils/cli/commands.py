"""`train`, `export`, `data`, `bench`, `fetch-weights`, `fetch-data`: parse, call, print."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from .common import check_output_folder, load_settings, quiet_tensorflow
from .parser import CliError
from .predict import cmd_predict

__all__ = ["COMMANDS"]


def cmd_train(args) -> int:
    """`train`: the course's recipe headless; writes model.keras, meta.json, TensorBoard logs."""
    if args.no_class_weights and args.class_weights not in (None, "none"):
        raise CliError(f"--no-class-weights contradicts --class-weights {args.class_weights}")
    settings = load_settings()
    quiet_tensorflow()
    from ..train import Recipe, train_recipe

    recipe = Recipe(model=args.model, epochs=args.epochs, minutes=args.minutes, size=args.size,
                    batch_size=args.batch_size, learning_rate=args.learning_rate,
                    augment=args.augment,
                    class_weights="none" if args.no_class_weights else args.class_weights,
                    precision=args.precision, tta=args.tta, strategy=args.strategy,
                    init_from=args.init_from, fine_tune=args.fine_tune,
                    keep_head=args.keep_head, width=args.width)
    result = train_recipe(recipe, out=args.out, settings=settings)
    for line in result.lines:
        print(line, file=sys.stderr if line.startswith("warning:") else sys.stdout, flush=True)
    return 0


def cmd_export(args) -> int:
    """`export`: .keras + SavedModel + TFLite + meta.json, and the TFLite-vs-Keras check."""
    settings = load_settings()
    model_path = Path(args.model)
    if not model_path.exists():
        raise FileNotFoundError(f"model not found: {model_path}")
    folder = model_path if model_path.is_dir() else model_path.parent
    out = check_output_folder(args.out or folder / "export")
    quiet_tensorflow()
    import numpy as np

    from .. import data, export, inference
    from ..models import layers  # noqa: F401  (registers the kit's layers, e.g. HorizontalFlip)

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
    from .. import data

    data.write_image_folder(faces, check_output_folder(folder, "--to"),
                            by_split=faces.split is not None)
    return len(faces)


def _with_split(faces, seed: int):
    """(faces with a train/val/test split, a note saying where the split came from)."""
    import numpy as np

    from .. import data

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
    from .. import data

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

    from .. import plots

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
    settings = load_settings()
    from .. import config, data

    spec = (settings.dataset if args.spec is None
            else config.parse_dataset(args.spec, settings.data_dir, variable="SPEC"))
    if args.fit and not spec.startswith(("folder:", "au-csv:")):
        raise CliError(f"--fit {args.fit} applies to folder: and au-csv: sets, not {spec}")
    out = check_output_folder(args.out or settings.log_dir / "data-report")
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
    load_settings()
    quiet_tensorflow()
    from .. import bench

    bench.run(args.what, data=args.data, size=args.size, epochs=args.epochs, images=args.images,
              precision=args.precision, augment=args.augment)
    return 0


def cmd_fetch_weights(args) -> int:
    """`fetch-weights`: the ImageNet VGG16 weights into the Keras cache; exit 1 when offline."""
    from .. import _stderr_held

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with _stderr_held(True):  # keras.utils.get_file loads TensorFlow: keep its banner out
        from ..models import vgg

    try:
        path = vgg.fetch_imagenet_weights(timeout=args.timeout)
    except RuntimeError as err:
        raise CliError(str(err)) from None
    print(f"ImageNet VGG16 weights: {path}")
    return 0


def cmd_fetch_data(args) -> int:
    """`fetch-data`: FER2013 from Kaggle into FER_DATA_DIR; prints the FER_DATASET to use."""
    from ..data import fetch

    to = args.to or load_settings().data_dir
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
