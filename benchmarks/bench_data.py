"""Data-layer figures: FER2013 CSV write/read time and peak memory of a 96 px RGB tf.data epoch.

Usage: python benchmarks/bench_data.py [--faces 35887] [--size 96] [--batch 64] [--source random|synth]

Each measurement runs in a fresh subprocess so that its peak RSS (resource.getrusage) is its own.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _faces(n: int, source: str):
    """A FER2013-sized FaceSet: the built-in synthetic faces or random uint8 pixels."""
    import numpy as np

    from fer_utils import data

    if source == "synth":
        from fer_utils import synth

        return synth.make_dataset(n, seed=0, size=48, channels=1, progress=False)
    rng = np.random.default_rng(0)
    return data.FaceSet(images=rng.integers(0, 256, (n, 48, 48, 1), dtype=np.uint8),
                        labels=rng.integers(0, 7, n), source="random")


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child_epoch(n: int, size: int, batch: int, source: str) -> dict:
    """One epoch of to_tf_dataset(image_size=size, channels=3, preprocess='vgg'): time and RSS."""
    import tensorflow as tf  # noqa: F401  (imported before the baseline RSS)

    from fer_utils import data

    fs = _faces(n, source)
    before = _peak_rss_mb()
    start = time.perf_counter()
    seen = 0
    for x, y in data.to_tf_dataset(fs, batch_size=batch, image_size=size, channels=3,
                                   preprocess="vgg", seed=0):
        seen += int(y.shape[0])
    seconds = time.perf_counter() - start
    return {"faces": seen, "seconds": round(seconds, 1), "img_per_s": round(seen / seconds),
            "rss_before_epoch_mb": round(before), "peak_rss_mb": round(_peak_rss_mb()),
            "float_copy_would_be_mb": round(n * size * size * 3 * 4 / 2**20)}


def child_csv(n: int, source: str) -> dict:
    """Write the faces as a FER2013 CSV and read it back: seconds for each."""
    from fer_utils import data

    fs = _faces(n, source)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fer2013.csv"
        start = time.perf_counter()
        data.write_fer2013_csv(fs, path)
        written = time.perf_counter() - start
        start = time.perf_counter()
        back = data.load_fer2013(path)
        read = time.perf_counter() - start
        size_mb = path.stat().st_size / 2**20
    assert len(back) == n
    return {"rows": n, "csv_mb": round(size_mb), "write_s": round(written, 1),
            "load_s": round(read, 1), "peak_rss_mb": round(_peak_rss_mb())}


def main(argv=None) -> None:
    """Run each measurement in its own process and print one line per figure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=35887)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--source", choices=("random", "synth"), default="random")
    parser.add_argument("--child", choices=("epoch", "csv"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child == "epoch":
        print(json.dumps(child_epoch(args.faces, args.size, args.batch, args.source)))
        return
    if args.child == "csv":
        print(json.dumps(child_csv(args.faces, args.source)))
        return
    for child in ("csv", "epoch"):
        out = subprocess.run([sys.executable, __file__, "--child", child, "--faces",
                              str(args.faces), "--size", str(args.size), "--batch",
                              str(args.batch), "--source", args.source],
                             capture_output=True, text=True, cwd=ROOT, check=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{child}: " + ", ".join(f"{k}={v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
