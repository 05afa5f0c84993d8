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

import os
import sys

from .commands import COMMANDS
from .parser import PROG, CliError, build_parser

__all__ = ["main", "build_parser", "CliError", "PROG"]


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
