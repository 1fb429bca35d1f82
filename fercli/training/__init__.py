"""The training engine shared by the teacher (`fer pretrain-teacher`) and the student (`fer train`).

One loop (:func:`run_train`: train one epoch, validate, checkpoint; calibrate at the end): seeded epoch
order (optionally class-balanced), per-face augmentation from :mod:`fercli.augment` seeded by
``(seed, epoch, step)`` (optionally MixUp/CutMix), SGD (optionally Nesterov) with a step or cosine
schedule and linear warm-up stepped per iteration, label smoothing, logit adjustment for rare
classes, an EMA of the weights (``torch.optim.swa_utils``: the EMA is what is validated, saved and
exported), validation every epoch on the manifest's ``valid`` split (never ``test``) with per-class
recall, the best checkpoint by holdout accuracy or mean per-class accuracy, ``metrics.csv`` and
``curves.png``. ``last.pt`` is written atomically every ``checkpoint_every`` steps and at each
epoch's end with the optimiser, scheduler and RNG state, so ``--resume`` continues exactly where a
run stopped. AMP and channels-last are used on CUDA only. Under ``torchrun`` the model is wrapped in
DistributedDataParallel and each rank takes its share of every epoch.

Modules: :mod:`~fercli.training.config` (recipes, options, validation), :mod:`~fercli.training.prepare`
(data), :mod:`~fercli.training.engine` (the run's state and steps), :mod:`~fercli.training.optim`
(schedule, EMA), :mod:`~fercli.training.history` (``metrics.csv``, ``curves.png``) and
:mod:`~fercli.training.run` (:func:`run_train`). Everything public is re-exported here: the config's names
at import, the engine's on first use (no torch until then).
"""

from typing import TYPE_CHECKING

from fercli.lazy import lazy_exports
from fercli.training.config import (
    BALANCE_MODES,
    RECIPES,
    RUN_SETTINGS,
    SCHEDULES,
    SELECT_METRICS,
    TARGET_MODES,
    TeacherConfig,
    TrainConfig,
    validate_train_config,
)

if TYPE_CHECKING:
    from fercli.training.engine import LogProgress, TrainProgress, evaluate_split
    from fercli.training.history import plot_curves
    from fercli.training.optim import build_scheduler
    from fercli.training.prepare import Prepared, prepare_data
    from fercli.training.run import TrainResult, run_train

# The engine imports torch: its names load on first use (PEP 562), so that a command builds and
# validates its config (above, light) before it pays for torch.
_MODULES = {
    "engine": ("LogProgress", "TrainProgress", "evaluate_split"),
    "history": ("plot_curves",),
    "optim": ("build_scheduler",),
    "prepare": ("Prepared", "prepare_data"),
    "run": ("TrainResult", "run_train"),
}
__getattr__ = lazy_exports(__name__, _MODULES)

__all__ = [
    "BALANCE_MODES", "RECIPES", "RUN_SETTINGS", "SCHEDULES", "SELECT_METRICS", "TARGET_MODES", "LogProgress",
    "Prepared", "TeacherConfig", "TrainConfig", "TrainProgress", "TrainResult", "build_scheduler", "evaluate_split",
    "plot_curves", "prepare_data", "run_train", "validate_train_config",
]
