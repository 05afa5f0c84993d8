"""Training: the one recipe, the one fit, and what they are made of (one module per concern).

- `recipe`: `train_recipe(Recipe(...))`, the course's recipe headless (data → model →
  budgeted, scheduled, checkpointed fit → test-time flips → evaluation → meta.json); what
  `python -m fer_utils train` runs. An interrupted run resumes.
- `fit`: `fit_classifier`, the one training entry point (cached or full path).
- `schedule`: `BudgetSchedule`, the rate of every step (cosine or constant) and the time
  budget, reproducible (the budget becomes a step count) and resumable.
- `callbacks`: TensorBoard, the float32 best checkpoint, BackupAndRestore, CSV log, progress.
- `precision`: one vocabulary ("auto", "fp32", "bf16", "fp16") and the one decision.
- `cache`: the frozen layers computed once (the cached path).
- `fer_utils.optimizers` (re-exported): per-layer learning rates (`layerwise_optimizer`).
- `balance`: class weights. `devices`: strategies and the multi-worker loop.
- `profiling`: batch size against memory and speed.

Every public name is available as `fer_utils.train.NAME`.
"""

from .balance import *  # noqa: F401,F403
from .cache import *  # noqa: F401,F403
from .callbacks import *  # noqa: F401,F403
from .devices import *  # noqa: F401,F403
from .fit import *  # noqa: F401,F403
from ..optimizers import *  # noqa: F401,F403 (per-layer rates, also used by fer_utils.transfer)
from .precision import *  # noqa: F401,F403
from .profiling import *  # noqa: F401,F403
from .recipe import *  # noqa: F401,F403
from .schedule import *  # noqa: F401,F403
