"""Kit vs TF-docs recipe: VGG16 fine-tune (block 5 + head) images/s and accuracy, one run.

Renders built-in faces, writes them as PNGs into a temporary folder (one sub-folder per
class, plus a validation folder), then, back to back on the same machine:

1. the reference recipe `../shared/bench/tfdocs_recipe.py FOLDER SIZE EPOCHS`, run unchanged
   (in a subprocess via runpy, so that its trained model can also be evaluated on the
   validation folder);
2. the kit: `fu.data.load_image_folder` on the same folders, then `fu.bench.train_benchmark`
   (the code path of notebook 04 and `python -m fer_utils bench train`).

Both train the same layers (VGG16 block 5 + a new head) with Adam 1e-4, batch 32, the same
weights (FER_WEIGHTS; random when ImageNet is not available offline). The kit's figure
counts the whole run (frozen-feature pass + epochs + per-epoch validation); the recipe's
excludes its warm-up epoch, as the recipe prints it.

Usage: python benchmarks/bench_finetune.py [--images 1000] [--size 96] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = (ROOT / ".." / "shared" / "bench" / "tfdocs_recipe.py").resolve()

_RECIPE_RUNNER = r"""
import json, os, runpy, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
recipe, folder, val_folder, size, epochs = sys.argv[1:6]
sys.argv = [recipe, folder, size, epochs]
g = runpy.run_path(recipe, run_name="__main__")   # the recipe, unchanged: prints its img/s
import keras
val = keras.utils.image_dataset_from_directory(val_folder, image_size=(int(size), int(size)),
                                               batch_size=32, shuffle=False, label_mode="int")
loss, acc = g["m"].evaluate(val, verbose=0)
print("RECIPE_RESULT " + json.dumps({"images_per_second": g["n"] * int(epochs) / g["dt"],
      "val_accuracy": float(acc), "train_accuracy": float(g["m"].history.history["accuracy"][-1]),
      "seconds": g["dt"], "images": g["n"]}))
"""

_KIT_RUNNER = r"""
import json, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
folder, val_folder, size, epochs, precision = sys.argv[1:6]
import fer_utils as fu
fu.setup(verbose=False, plots=False)
t0 = time.perf_counter()
train = fu.data.load_image_folder(folder, size=int(size), channels=1, progress=False)
val = fu.data.load_image_folder(val_folder, size=int(size), channels=1, progress=False)
load_seconds = time.perf_counter() - t0
r = fu.bench.train_benchmark(train, val, int(size), int(epochs), batch_size=32,
                             precision=precision)
print(r)
print("KIT_RESULT " + json.dumps({"images_per_second": r.images_per_second,
      "val_accuracy": r.val_accuracy, "train_accuracy": r.history["accuracy"][-1],
      "seconds": r.seconds, "cache_seconds": r.cache_seconds, "load_seconds": load_seconds,
      "images": r.images, "path": r.path, "precision": r.precision,
      "images_per_second_with_loading": r.images * r.epochs / (r.seconds + load_seconds)}))
"""


def _run(args: list, tag: str) -> dict:
    """Run a Python snippet in a fresh interpreter; return the JSON after `tag`."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT),
                                                                   os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", *args], env=env,
                          capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    for line in lines:
        if not line.startswith(tag):
            print("   ", line)
    if proc.returncode != 0:
        raise SystemExit(f"{tag} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(next(line for line in lines if line.startswith(tag))[len(tag) + 1:])


def main(argv=None) -> dict:
    """Write the faces, run the recipe then the kit, print both figures and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000, help="training faces")
    parser.add_argument("--val-images", type=int, default=300, help="validation faces")
    parser.add_argument("--size", type=int, default=96, help="input size in pixels")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs")
    parser.add_argument("--precision", default="auto",
                        help="kit precision(s), comma-separated: auto, float32, bfloat16")
    parser.add_argument("--seed", type=int, default=0, help="seed of the rendered faces")
    parser.add_argument("--kit-only", action="store_true", help="skip the recipe")
    args = parser.parse_args(argv)
    if not RECIPE.is_file() and not args.kit_only:
        raise SystemExit(f"the reference recipe {RECIPE} is missing")

    sys.path.insert(0, str(ROOT))
    import fer_utils as fu

    with tempfile.TemporaryDirectory(prefix="fer_bench_") as tmp:
        t0 = time.perf_counter()
        faces = fu.synth.make_dataset(args.images + args.val_images, seed=args.seed,
                                      size=args.size, channels=1, cache=False, progress=False)
        train, val, _ = fu.data.split(faces, val=args.val_images / len(faces), test=0.0,
                                      seed=args.seed)
        folder = fu.data.write_image_folder(train, Path(tmp) / "train")
        val_folder = fu.data.write_image_folder(val, Path(tmp) / "val")
        print(f"wrote {len(train)} + {len(val)} built-in faces ({args.size} px grey PNG) in "
              f"{time.perf_counter() - t0:.0f} s; cores: {os.cpu_count()} (shared: timings "
              f"are slowed by other processes, both contenders run back to back)")
        recipe = None
        if not args.kit_only:
            print(f"1. TF-docs recipe ({RECIPE.name}, fp32, augmentation layers, whole VGG16 "
                  f"every step):")
            recipe = _run([_RECIPE_RUNNER, str(RECIPE), str(folder), str(val_folder),
                           str(args.size), str(args.epochs)], "RECIPE_RESULT")
        kits = []
        for precision in args.precision.split(","):
            print(f"2. kit (uint8 in memory, frozen blocks 1-4 computed once, "
                  f"precision={precision}):")
            kits.append(_run([_KIT_RUNNER, str(folder), str(val_folder), str(args.size),
                              str(args.epochs), precision], "KIT_RESULT"))

    print(f"\nsize={args.size} train={len(train)} val={len(val)} epochs={args.epochs}")
    if recipe:
        print(f"recipe: val accuracy {recipe['val_accuracy']:.3f} "
              f"(train {recipe['train_accuracy']:.3f}): {recipe['images_per_second']:.1f} img/s")
    for kit in kits:
        print(f"kit ({kit['path']}, {kit['precision']}): val accuracy {kit['val_accuracy']:.3f} "
              f"(train {kit['train_accuracy']:.3f}), caching {kit['cache_seconds']:.0f} s of "
              f"{kit['seconds']:.0f} s: {kit['images_per_second']:.1f} img/s "
              f"({kit['images_per_second_with_loading']:.1f} img/s counting the folder read)")
        if recipe:
            print(f"speed-up kit ({kit['precision']}) / recipe: "
                  f"{kit['images_per_second'] / recipe['images_per_second']:.2f}x")
    return {"recipe": recipe, "kits": kits}


if __name__ == "__main__":
    main()
