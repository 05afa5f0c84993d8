"""Minutes per notebook: run the course's notebooks in fresh kernels and print how long each took.

Each notebook is executed top to bottom with nbclient in a kernel of its own (as a learner's
Run All after a kernel restart), with `FER_PROFILE=laptop` (or `--profile`) and, with
`--dataset SPEC`, `FER_DATASET=SPEC` (default: whatever the environment says, i.e. the built-in
set unless data/fer2013.csv exists). The committed notebooks are only read: the executed copies
stay in memory, or go to `--save-to DIR` when asked (never into notebooks/).

For every notebook it prints the wall-clock minutes, the CPU seconds of its kernel (user +
system, read from the operating system once the kernel has exited: on 2 quiet cores wall
≈ CPU / 1.7), the machine's load average before and after, and `ok`, or one line that names
the cell and the error when the notebook raised. A script that prints figures, not a test;
the exit status is 1 when a notebook failed. Ctrl-C or SIGTERM stops the running notebook, shuts
its kernel down, prints the rows so far and exits with 130 (143 for SIGTERM).

Usage:
    python benchmarks/bench_notebooks.py                         # every notebook
    python benchmarks/bench_notebooks.py --only 00 07 --dataset fer2013:$HOME/fer2013.csv
    python benchmarks/bench_notebooks.py --only 01 --save-to /tmp/executed --profile ci
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import signal
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
PROFILES = ("ci", "laptop", "full")


def parse_args(argv=None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", metavar="NN",
                        help="notebook numbers or name prefixes (e.g. 00 07); default: all")
    parser.add_argument("--dataset", metavar="SPEC",
                        help="FER_DATASET for the kernels (synthetic, fer2013:PATH, folder:PATH, "
                             "...); default: the environment's")
    parser.add_argument("--profile", default="laptop", choices=PROFILES,
                        help="FER_PROFILE for the kernels (default: laptop)")
    parser.add_argument("--timeout", type=float, default=1800,
                        help="seconds one cell may run before the notebook counts as failed "
                             "(default 1800)")
    parser.add_argument("--kernel", default="python3", help="Jupyter kernel name (python3)")
    parser.add_argument("--save-to", type=Path, metavar="DIR",
                        help="also write each executed notebook (with its outputs) to DIR")
    parser.add_argument("--notebooks", type=Path, default=NOTEBOOKS, metavar="DIR",
                        help="folder of the NN_*.ipynb notebooks (default: the course's "
                             "notebooks/)")
    args = parser.parse_args(argv)
    if not args.notebooks.is_dir():
        parser.error(f"--notebooks {args.notebooks}: no such folder")
    if args.save_to is not None and args.save_to.resolve() == args.notebooks.resolve():
        parser.error(f"--save-to must not be {args.notebooks}: the notebooks run there stay "
                     f"without outputs")
    if args.timeout <= 0:
        parser.error(f"--timeout must be > 0 seconds, got {args.timeout}")
    return args


def select(only, folder: Path) -> list[Path]:
    """The notebooks to run, in course order; an unknown NN is an error naming it."""
    every = sorted(folder.glob("[0-9]*.ipynb"))
    if not every:
        raise SystemExit(f"error: no NN_*.ipynb notebook in {folder}")
    if not only:
        return every
    chosen, unknown = [], []
    for key in only:
        hits = [p for p in every if p.name.startswith(key)]
        (chosen.extend(hits) if hits else unknown.append(key))
    if unknown:
        names = ", ".join(p.stem for p in every)
        raise SystemExit(f"error: no notebook starts with {', '.join(unknown)} (there are: "
                         f"{names})")
    return sorted(set(chosen), key=every.index)


def kernel_environment(args) -> None:
    """The settings every kernel inherits: profile, data set, fer_utils importable, quiet TF."""
    os.environ["FER_PROFILE"] = args.profile
    if args.dataset:
        os.environ["FER_DATASET"] = args.dataset
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    paths = [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))


def children_cpu_seconds() -> float:
    """User + system CPU seconds of the finished child processes (the kernels) so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def failure_line(error: BaseException, nb) -> str:
    """One line: which code cell failed and the error's name and first line."""
    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    ran = [i for i, c in enumerate(code_cells, start=1) if c.get("execution_count")]
    where = f"code cell {ran[-1]} of {len(code_cells)}" if ran else "before the first cell"
    if isinstance(error, CellExecutionError):
        what = f"{error.ename}: {str(error.evalue).strip().splitlines()[0] if error.evalue else ''}"
    elif isinstance(error, CellTimeoutError):
        what = "cell timed out"
    else:
        what = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error) else ''}"
    return f"{where}: {what}"[:300]


def run_one(path: Path, args) -> dict:
    """Execute one notebook in a fresh kernel; its minutes, CPU seconds, load and outcome."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=args.timeout, kernel_name=args.kernel,
                            resources={"metadata": {"path": str(path.parent)}})
    STOP["client"] = client
    load_before = os.getloadavg()[0]
    cpu_before, start = children_cpu_seconds(), time.perf_counter()
    outcome = {"error": None}

    def execute():
        """Run the notebook; any failure is kept and reported, the other notebooks still run."""
        try:
            client.execute()
        except Exception as caught:
            outcome["error"] = caught

    # A worker thread, because nbclient replaces SIGINT/SIGTERM handling while it runs in the
    # main thread (it ends the kernel and carries on with the next notebook); in a thread it
    # leaves the signals to `_stop` here.
    worker = threading.Thread(target=execute, name=f"run {path.stem}")
    worker.start()
    worker.join()  # a signal runs `_stop` here, in the main thread, and the join carries on
    STOP["client"] = None
    error = outcome["error"]
    wall = time.perf_counter() - start
    cpu = children_cpu_seconds() - cpu_before
    if args.save_to is not None:
        args.save_to.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, args.save_to / path.name)
    return {"name": path.stem, "minutes": wall / 60, "cpu_s": cpu, "load": (load_before,
            os.getloadavg()[0]), "error": None if error is None else failure_line(error, nb)}


STOP = {"signum": None, "client": None}  # the stop signal received, the running NotebookClient


def _stop(signum, frame):
    """SIGTERM / SIGINT handler: remember the signal and end the running kernel.

    nbclient then reports the kernel as dead and cleans up; the loop stops before the next one.
    """
    STOP["signum"] = signum
    km = getattr(STOP["client"], "km", None)
    if km is not None and km.has_kernel and km.provisioner.pid:
        os.kill(km.provisioner.pid, signal.SIGTERM)


def main(argv=None) -> int:
    """Run the chosen notebooks and print one row per notebook, then the failures."""
    args = parse_args(argv)
    paths = select(args.only, args.notebooks)
    kernel_environment(args)
    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return run_all(paths, args)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_all(paths: list[Path], args) -> int:
    """Run the notebooks one after the other and print the table; the exit status."""
    dataset = os.environ.get("FER_DATASET") or "(environment default)"
    print(f"{len(paths)} notebook(s), FER_PROFILE={args.profile}, FER_DATASET={dataset}; "
          f"{os.cpu_count()} CPU(s), {platform.machine()}, Python {platform.python_version()}",
          flush=True)
    header = f"{'notebook':32s} {'minutes':>8s} {'CPU s':>8s} {'load 1-min':>12s}  result"
    print(header + "\n" + "-" * len(header), flush=True)
    rows, stopped = [], None
    for path in paths:
        row = run_one(path, args) if STOP["signum"] is None else None
        if STOP["signum"] is not None:  # its kernel was ended: the row would say little
            stopped = path.stem
            break
        rows.append(row)
        load = f"{row['load'][0]:.1f}→{row['load'][1]:.1f}"
        print(f"{row['name']:32s} {row['minutes']:8.2f} {row['cpu_s']:8.0f} {load:>12s}  "
              f"{'ok' if row['error'] is None else 'FAILED'}", flush=True)
    total = sum(r["minutes"] for r in rows)
    print("-" * len(header) + f"\n{'total':32s} {total:8.2f} "
          f"{sum(r['cpu_s'] for r in rows):8.0f}")
    failed = [r for r in rows if r["error"]]
    for row in failed:
        print(f"FAILED {row['name']}: {row['error']}")
    if args.save_to is not None and rows:
        print(f"executed copies in {args.save_to}")
    if stopped:
        signum = STOP["signum"]
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        print(f"STOPPED by {name} while running {stopped}: its kernel was shut down; "
              f"{len(rows)} of {len(paths)} notebook(s) finished", flush=True)
        return 128 + signum  # the shell's convention: 130 for Ctrl-C, 143 for SIGTERM
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
