"""What `predict` does on videos and folders, measured: accuracy, speed, files, memory.

Prints (never asserts) four figures with the CPU they were measured on:

* accuracy: on a rendered clip (two people, their expression known in every frame), the share
  of person-frames whose predicted label is the true one, without smoothing and with the
  default smoothing, and how often the labels change (against the truth's changes);
* speed: frames per second (and CPU seconds per frame) of `predict` on that clip with
  `--every 1` and `--every 5`;
* folder: a folder of photos, a few of them broken, through `predict FOLDER`: every file
  accounted for in the one CSV, and the time it took;
* memory: the peak resident memory of `predict` on a 10-second and on a 10-minute clip (the
  long clip repeats the short one), each in a process of its own.

    python benchmarks/bench_predict.py --model logs/cli-small            # all four
    python benchmarks/bench_predict.py --model logs/cli-small --only accuracy speed
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PARTS = ("accuracy", "speed", "folder", "memory")


def parse_args(argv=None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True,
                        help="a model folder from `python -m fer_utils train`, or a .keras file")
    parser.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--work", type=Path, help="folder for the clips and photos (default: "
                                                  "a temporary folder)")
    parser.add_argument("--seconds", type=float, default=20.0, help="rendered clip (default 20)")
    parser.add_argument("--fps", type=float, default=25.0, help="its frame rate (default 25)")
    parser.add_argument("--photos", type=int, default=1000, help="photos in the folder")
    parser.add_argument("--broken", type=int, default=5, help="broken photos among them")
    parser.add_argument("--long-minutes", type=float, default=10.0,
                        help="length of the long clip of the memory figure (default 10)")
    parser.add_argument("--memory-every", type=int, default=5,
                        help="--every of the memory runs (default 5; every frame is decoded)")
    return parser.parse_args(argv)


def cpu_name() -> str:
    """The CPU's model name and its widest vector instructions (lscpu)."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except OSError:
        return "unknown CPU"
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    flags = fields.get("Flags", "").split()
    isa = [name for name, flag in (("AVX-512", "avx512f"), ("AVX512-BF16", "avx512_bf16"),
                                   ("AVX2", "avx2")) if flag in flags]
    cores = fields.get("CPU(s)", "?").strip()
    limit = os.environ.get("ONEDNN_MAX_CPU_ISA")
    return (f"{fields.get('Model name', '?').strip()}, {cores} cores, {', '.join(isa) or 'no AVX'}"
            + (f" (ONEDNN_MAX_CPU_ISA={limit})" if limit else ""))


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def label_changes(matched) -> int:
    """How often the predicted label changes, summed over the people."""
    return sum(int((g["predicted"] != g["predicted"].shift()).iloc[1:].sum())
               for _, g in matched.groupby("person"))


def bench_accuracy(model, meta, clip: Path, truth) -> None:
    """Frame accuracy and label changes, without and with the default smoothing."""
    from fer_utils import synth_clip, tracking, video

    raw = video.predict_video(model, clip, meta, smooth=0, progress=False).table
    true_changes = sum(int((g["label"] != g["label"].shift()).iloc[1:].sum())
                       for _, g in truth.groupby("person"))
    print(f"accuracy: {clip.name}, {truth['frame'].nunique()} frames, {truth['person'].nunique()} "
          f"people; the true label changes {true_changes} times")
    for seconds in (0.0, tracking.DEFAULT_SMOOTH, 1.0):
        table = tracking.smooth_table(raw, meta["class_names"], seconds) if seconds else raw
        matched = synth_clip.match_truth(table, truth)
        right = matched.assign(right=matched["predicted"] == matched["label"])
        per_class = right.groupby("label")["right"].mean()
        print(f"  smooth {seconds:.1f} s: frame accuracy {synth_clip.frame_accuracy(matched):.1%} "
              f"(a face found on {matched['face_id'].notna().mean():.1%} of the person-frames), "
              f"label changes {label_changes(matched)}; per true class: "
              + ", ".join(f"{name} {value:.0%}" for name, value in per_class.items()))


def bench_speed(model, meta, clip: Path) -> None:
    """Frames per second of the whole pipeline with --every 1 and --every 5."""
    from fer_utils import video

    video.predict_video(model, clip, meta, every=25, progress=False)  # warm-up
    for every, upsample in ((1, None), (5, None), (1, 0)):
        start = cpu_seconds()
        result = video.predict_video(model, clip, meta, every=every, upsample=upsample,
                                     progress=False)
        cpu = cpu_seconds() - start
        print(f"speed: --every {every}{' --upsample 0' if upsample == 0 else ''}: "
              f"{result.frames_read} frames of video in {result.seconds:.1f} s = "
              f"{result.frames_read / result.seconds:.1f} video frames/s "
              f"({result.frames_predicted / result.seconds:.1f} predicted frames/s); "
              f"{cpu:.1f} CPU-s, {1000 * cpu / result.frames_predicted:.0f} CPU-ms per "
              f"predicted frame")


def make_photos(folder: Path, count: int, broken: int) -> list[Path]:
    """`count` photos in nested folders: rendered faces, some without a face, some broken."""
    import cv2
    import numpy as np

    from fer_utils import synth
    from fer_utils.faceset import EXPRESSIONS

    paths = []
    for i in range(count):
        sub = folder / f"day{i % 7}" / ("morning" if i % 3 else "evening")
        sub.mkdir(parents=True, exist_ok=True)
        if i % 10 == 9:  # a wall: no face
            picture = np.full((160, 200, 3), 40 + (i * 7) % 200, np.uint8)
        else:
            face, _ = synth.render_face(expression=EXPRESSIONS[i % 7], identity_seed=i,
                                        size=112, channels=3, pose={"scale": 0.8})
            picture = cv2.copyMakeBorder(face, 24, 24, 24, 24, cv2.BORDER_REPLICATE)
        path = sub / f"photo{i:04d}.{'png' if i % 4 == 0 else 'jpg'}"
        cv2.imwrite(str(path), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
        paths.append(path)
    for k in range(broken):  # cut off mid-download, or not a picture at all
        path = paths[(k * 197 + 3) % count]
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2] if k % 2 == 0 else b"not a picture\n")
    return paths


def bench_folder(model, meta, work: Path, count: int, broken: int) -> None:
    """One CSV for a folder of photos, a few broken: every file accounted for, and the time."""
    from fer_utils import photo_folder

    folder = work / "photos"
    paths = make_photos(folder, count, broken)
    start, cpu = time.perf_counter(), cpu_seconds()
    result = photo_folder.predict_folder(model, folder, meta, out=work / "folder_out",
                                         progress=False)
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    import pandas as pd

    table = pd.read_csv(result.csv)
    missing = {str(p) for p in paths} - set(table["file"])
    print(f"folder: {len(paths):,} photos ({broken} broken) -> {result.csv.name}: "
          f"{table['file'].nunique():,} files in {len(table):,} rows ({result.faces:,} faces, "
          f"{result.without_face:,} photos without a face, {len(result.broken)} errors); "
          f"{'every file accounted for' if not missing else f'MISSING {len(missing)} files'}; "
          f"{seconds:.1f} s ({len(paths) / seconds:.1f} photos/s, {cpu:.1f} CPU-s)")


def long_clip(short: Path, target: Path, minutes: float) -> int:
    """Write `short` again and again into `target` until it lasts `minutes`; frames written."""
    import cv2

    from fer_utils import video

    reader = video.VideoReader(short)
    writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"mp4v"), reader.fps,
                             (reader.width, reader.height))
    total = int(round(minutes * 60 * reader.fps))
    written = 0
    while written < total:
        for _, _, frame in video.VideoReader(short):
            if written == total:
                break
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            written += 1
    writer.release()
    return written


CHILD = """
import resource, runpy, sys, time
sys.argv = ["fer_utils", *sys.argv[1:]]
start = time.perf_counter()
try:
    runpy.run_module("fer_utils", run_name="__main__")
except SystemExit as stop:
    assert not stop.code, stop.code
usage = resource.getrusage(resource.RUSAGE_SELF)
print("PEAK", usage.ru_maxrss, time.perf_counter() - start, usage.ru_utime + usage.ru_stime)
"""


def peak_memory(clip: Path, model: Path, out: Path, every: int) -> tuple[float, float, float]:
    """(peak RSS in MB, wall s, CPU s) of `python -m fer_utils predict CLIP` in a new process."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", MPLBACKEND="Agg",
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH"))
                                          if p))
    result = subprocess.run([sys.executable, "-c", CHILD, "predict", str(clip), "--model",
                             str(model), "--out", str(out), "--every", str(every)],
                            capture_output=True, text=True, env=env)
    line = [x for x in result.stdout.splitlines() if x.startswith("PEAK")]
    if result.returncode or not line:
        raise RuntimeError(f"predict failed on {clip}: {result.stderr[-2000:]}")
    _, kilobytes, wall, cpu = line[0].split()
    return int(kilobytes) / 1024, float(wall), float(cpu)


def bench_memory(model_path: Path, work: Path, minutes: float, every: int) -> None:
    """Peak memory of `predict` on a 10-second and on a long clip."""
    from fer_utils import synth_clip

    short = work / "ten_seconds.mp4"
    synth_clip.render_clip(short, seconds=10, fps=25)
    long = work / f"{minutes:g}_minutes.mp4"
    frames = long_clip(short, long, minutes)
    figures = {}
    for name, clip in (("10 s", short), (f"{minutes:g} min", long)):
        figures[name] = peak_memory(clip, model_path, work / f"memory_{clip.stem}", every)
        peak, wall, cpu = figures[name]
        print(f"memory: {name} clip ({clip.stat().st_size / 1e6:.1f} MB file), predict --every "
              f"{every}: peak RSS {peak:,.0f} MB; {wall:.0f} s, {cpu:.0f} CPU-s", flush=True)
    (short_peak, *_), (long_peak, *_) = figures.values()
    print(f"memory: the {minutes:g}-minute clip ({frames:,} frames) peaks "
          f"{long_peak - short_peak:+,.0f} MB from the 10-second clip's")


def main(argv=None) -> int:
    """Run the chosen parts and print their figures."""
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    print(f"CPU: {cpu_name()}", flush=True)
    work_context = tempfile.TemporaryDirectory() if args.work is None else None
    work = Path(work_context.name) if work_context else args.work
    work.mkdir(parents=True, exist_ok=True)
    try:
        if set(args.only) & {"accuracy", "speed", "folder"}:
            from fer_utils import inference, synth_clip

            model, meta = inference.load_any_model(args.model)
            if set(args.only) & {"accuracy", "speed"}:
                clip = work / "two_people.mp4"
                truth = synth_clip.render_clip(clip, seconds=args.seconds, fps=args.fps)
                if "accuracy" in args.only:
                    bench_accuracy(model, meta, clip, truth)
                if "speed" in args.only:
                    bench_speed(model, meta, clip)
            if "folder" in args.only:
                bench_folder(model, meta, work, args.photos, args.broken)
        if "memory" in args.only:
            bench_memory(args.model, work, args.long_minutes, args.memory_every)
    finally:
        if work_context:
            work_context.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
