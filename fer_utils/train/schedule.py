"""The learning-rate schedule and the time budget of a run: reproducible and resumable.

`BudgetSchedule` sets the rate before every training step from the step count alone, so a
run is reproducible: "cosine" decays it from its start to 0 over the run's planned steps,
"constant" keeps it. Given a time budget but no epoch count, the plan is made once, at the
end of the first epoch: as many whole epochs as the measured epoch time fits in the budget
(the budget becomes a step count, recorded in `state()` and meta.json; `--epochs N` repeats
the same run exactly). The budget also stops training after the step that spends it, so a
busier machine never overruns. The state (plan, steps, seconds used, attempts) is written
to a JSON file at every epoch end; a resumed run (Keras' BackupAndRestore restarts at the
next epoch) reads it back and continues the schedule where it was, with the rest of the
budget.
"""

from __future__ import annotations

import datetime
import json
import math
import time
from pathlib import Path

import keras
import numpy as np

__all__ = ["SCHEDULES", "BudgetSchedule"]

# the rate over the planned steps: cosine from the first rate to 0, or constant
SCHEDULES = ("cosine", "constant")


def _now_text() -> str:
    """The local time as ISO text (seconds)."""
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


class BudgetSchedule(keras.callbacks.Callback):
    """The rate of every step (cosine or constant over the planned steps) and the time budget.

    Args:
        learning_rate: the first rate.
        shape: "cosine" (to 0 over the planned steps) or "constant".
        epochs: the planned epochs; None: planned after the first epoch from `minutes`.
        minutes: the time budget of training (None: no budget; then `epochs` is needed).
        started: `time.perf_counter()` when the budget began (e.g. before features were
            cached); default: when training begins.
        state_path: a JSON file for the state, written at every epoch end and read back when
            a run resumes (None: no state file).
        verbose: print the lines that say what was planned and why training stopped.
    """

    def __init__(self, learning_rate: float, shape: str = "cosine", epochs: int | None = None,
                 minutes: float | None = None, started: float | None = None,
                 state_path=None, verbose: bool = True):
        super().__init__()
        if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float)) \
                or not learning_rate > 0:
            raise ValueError(f"BudgetSchedule: learning_rate must be a number > 0, "
                             f"got {learning_rate!r}")
        if shape not in SCHEDULES:
            raise ValueError(f"BudgetSchedule: shape must be one of {SCHEDULES}, got {shape!r}")
        if minutes is not None and (isinstance(minutes, bool)
                                    or not isinstance(minutes, (int, float)) or minutes <= 0):
            raise ValueError(f"BudgetSchedule: minutes must be a number > 0 or None, "
                             f"got {minutes!r}")
        if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int)
                                   or epochs < 1):
            raise ValueError(f"BudgetSchedule: epochs must be an int >= 1 or None, got {epochs!r}")
        if epochs is None and minutes is None:
            raise ValueError("BudgetSchedule: give epochs, minutes or both")
        self.learning_rate = float(learning_rate)
        self.shape = shape
        self.epochs = epochs
        self.minutes = None if minutes is None else float(minutes)
        self.started = started
        self.state_path = None if state_path is None else Path(state_path)
        self.defer_state = False  # True: the run's last callback writes it (`make_callbacks`)
        self.verbose = verbose
        self.message = None  # why training stopped early (the budget), when it did
        self.planned = None  # how the plan was made
        self.rates: list[float] = []  # the rate of every step of this attempt, in order
        self.total_epochs = epochs
        self.steps_per_epoch = None
        self.steps_done = 0
        self.seconds_before = 0.0  # training seconds of earlier attempts (a resumed run)
        self.attempts: list[dict] = []
        self._epoch_began = None
        self._batch_seconds: list[float] = []
        self._batch_began = None

    # --- the plan ------------------------------------------------------------------------
    @property
    def total_steps(self) -> int | None:
        """The planned steps (None until the plan is made)."""
        if self.total_epochs is None or self.steps_per_epoch is None:
            return None
        return self.total_epochs * self.steps_per_epoch

    def share(self, step: int) -> float:
        """The rate at `step` as a part of the first rate (1 before the plan is made)."""
        total = self.total_steps
        if self.shape == "constant" or not total:
            return 1.0
        return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))

    def used_seconds(self) -> float:
        """Training seconds of the whole run so far (earlier attempts included)."""
        return self.seconds_before + (time.perf_counter() - self.started)

    def _budget(self) -> float:
        """The budget in seconds (inf without one)."""
        return math.inf if self.minutes is None else self.minutes * 60

    def _plan_after(self, epochs_done: int) -> None:
        """Plan the epochs from the budget, after the first epoch (recorded in `planned`)."""
        batches = self._batch_seconds
        steady = float(np.mean(batches[1:])) if len(batches) > 1 else float(np.sum(batches))
        epoch_wall = time.perf_counter() - self._epoch_began
        # one epoch from now on: its steps at the steady pace, plus what is not steps
        # (validation, callbacks); the first step's tracing happens once
        per_epoch = steady * self.steps_per_epoch + max(0.0, epoch_wall - float(np.sum(batches)))
        left = self._budget() - self.used_seconds()
        more = max(0, int(left // max(per_epoch, 1e-9)))
        self.total_epochs = epochs_done + more
        self.planned = (f"planned after epoch {epochs_done}: {per_epoch:.0f} s per epoch and "
                        f"{left / 60:.1f} of {self.minutes:g} training minutes left give "
                        f"{self.total_epochs} epochs ({self.total_steps} steps)")
        if self.verbose:
            print(f"schedule: {self.planned}; repeat this run exactly with "
                  f"--epochs {self.total_epochs}", flush=True)

    # --- state ---------------------------------------------------------------------------
    def state(self) -> dict:
        """What meta.json records and a resumed run reads back."""
        return {"shape": self.shape, "learning_rate": self.learning_rate,
                "epochs": self.total_epochs, "steps": self.total_steps,
                "steps_per_epoch": self.steps_per_epoch, "planned": self.planned,
                "budget_minutes": self.minutes, "steps_done": self.steps_done,
                "training_seconds": round(self.used_seconds(), 1) if self.started else 0.0,
                "stopped": self.message, "attempts": self.attempts}

    def write_state(self) -> None:
        """Write `state()` to the state file (atomically: a kill leaves the old one)."""
        if self.state_path is None:
            return
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.state_path.with_suffix(".partial")
        partial.write_text(json.dumps(self.state(), indent=1))
        partial.replace(self.state_path)

    def _resume(self, initial_epoch: int) -> None:
        """Read the state of the interrupted attempt and continue its plan."""
        if self.state_path is None or not self.state_path.is_file():
            return
        saved = json.loads(self.state_path.read_text())
        if saved.get("steps_per_epoch") not in (None, self.steps_per_epoch):
            raise ValueError(f"{self.state_path}: the interrupted run had "
                             f"{saved['steps_per_epoch']} steps per epoch, this one "
                             f"{self.steps_per_epoch}: it is another run (other data or batch "
                             f"size); delete {self.state_path.parent} to start afresh")
        self.total_epochs = saved.get("epochs") or self.total_epochs
        self.planned = saved.get("planned")
        self.seconds_before = float(saved.get("training_seconds", 0.0))
        self.attempts = list(saved.get("attempts", []))
        self.steps_done = initial_epoch * self.steps_per_epoch

    # --- Keras hooks ---------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        """Start the clock; read the plan back when the run resumes (after BackupAndRestore)."""
        self.started = time.perf_counter() if self.started is None else self.started
        self.steps_per_epoch = int((self.params or {}).get("steps") or 0) or None
        self.steps_done, self.message, self.rates = 0, None, []
        initial = int(getattr(self.model, "_initial_epoch", None) or 0)
        if initial:
            self._resume(initial)
        self.attempts.append({"started": _now_text(), "from_epoch": initial})
        if initial and self.verbose:
            print(f"resuming at epoch {initial + 1}: the schedule continues at step "
                  f"{self.steps_done} of {self.total_steps or '?'}; "
                  f"{self.seconds_before / 60:.1f} training minutes were used before", flush=True)

    def on_epoch_begin(self, epoch, logs=None):
        """Time the epoch."""
        self._epoch_began = time.perf_counter()
        self._batch_seconds = []

    def on_train_batch_begin(self, batch, logs=None):
        """Set the rate of this step."""
        rate = self.learning_rate * self.share(self.steps_done)
        self.model.optimizer.learning_rate = rate
        self.rates.append(float(rate))
        self._batch_began = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        """Count the step; stop when the budget is spent."""
        self.steps_done += 1
        self._batch_seconds.append(time.perf_counter() - self._batch_began)
        if self.total_steps and self.steps_done >= self.total_steps:
            return  # the plan is complete: training ends with this epoch
        if self.used_seconds() >= self._budget() and not self.model.stop_training:
            self._stop("after", "the time budget is spent")

    def on_epoch_end(self, epoch, logs=None):
        """Log the rate; make the plan after the first epoch; stop at its end; save the state."""
        if logs is not None and self.rates:
            logs["learning_rate"] = self.rates[-1]
        done = epoch + 1
        if self.total_epochs is None and self.steps_per_epoch:
            self._plan_after(done)
        if self.total_epochs is not None and done >= self.total_epochs \
                and not self.model.stop_training:
            self.model.stop_training = True  # the plan is complete (the rate has reached 0)
        if not self.defer_state:
            self.write_state()

    def _stop(self, when: str, why: str) -> None:
        """Stop training and say so: when, steps, minutes used and the rate reached."""
        self.model.stop_training = True
        self.message = (f"time budget: stopped {when} {self.steps_done} steps of "
                        f"{self.total_steps or '?'}, {self.used_seconds() / 60:.1f} of "
                        f"{self.minutes:g} minutes used ({why}); the learning rate had reached "
                        f"{self.rates[-1] if self.rates else self.learning_rate:.2g}")
        if self.verbose:
            print(self.message, flush=True)
