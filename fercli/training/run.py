"""`run_train`: a whole run, from options to a recorded best checkpoint (see :mod:`fercli.training`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fercli import distributed
from fercli.checkpoint import load_checkpoint
from fercli.device import resolve_device
from fercli.errors import FerError
from fercli.progress import Track, no_track
from fercli.schema import LAST_CHECKPOINT, RUN_FILES
from fercli.training.config import TrainConfig, resumed_config, validate_train_config
from fercli.training.engine import LogProgress, Run, TrainProgress
from fercli.training.prepare import prepare_data
from fercli.workspace import Artifact, Workspace


@dataclass
class TrainResult:
    out_dir: Path
    best: Path
    last: Path
    history: list[dict[str, Any]]
    best_row: dict[str, Any] | None
    stopped_at_step: int | None  # set when --max-steps ended the run early (resume to continue)
    notes: list[str]
    inputs: dict[str, Artifact]
    targets: str
    rank: int = 0  # under torchrun, only rank 0 reports

    def summary(self) -> dict[str, Any]:
        return {
            "out": str(self.out_dir), "best": str(self.best), "targets": self.targets,
            "epochs_run": len(self.history), "best_epoch": (self.best_row or {}).get("epoch"),
            "best_val_acc": (self.best_row or {}).get("val_acc"),
            "stopped_at_step": self.stopped_at_step, "notes": self.notes, "history": self.history,
        }


def run_train(cfg: TrainConfig, ws: Workspace, kind: str = "student", track: Track = no_track,
              progress: TrainProgress | None = None, command: str | None = None,
              on_inputs: Callable[[dict[str, Artifact]], None] | None = None) -> TrainResult:
    """Train a model as ``cfg`` says and write its run directory; see :mod:`fercli.training`."""
    progress = progress or LogProgress()
    validate_train_config(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    dist_info = distributed.init_distributed(device)
    if dist_info.enabled and device.type == "cuda":
        device = torch.device("cuda", dist_info.local_rank)
        torch.cuda.set_device(device)

    out_dir = Path(cfg.out) if cfg.out is not None else ws.default_path(kind).parent
    last_path = out_dir / LAST_CHECKPOINT
    if not cfg.resume and last_path.exists() and not cfg.overwrite:
        raise FerError(f"{last_path}: a training run is already here; pass --resume to continue it (same data and "
                       "settings), --overwrite to start again (e.g. after the dataset changed), or --out for a new "
                       "directory")
    if cfg.resume and not last_path.exists():
        raise FerError(f"{last_path}: nothing to resume; start the run without --resume")
    state: dict[str, Any] | None = None
    resume_notes: list[str] = []
    if cfg.resume:
        state = load_checkpoint(last_path)
        cfg, resume_notes = resumed_config(cfg, state.get("config") or {})
    elif cfg.overwrite and dist_info.is_main:
        # Start clean: a new run that stops early must not sit beside the old run's best.pt and metrics.
        for name in RUN_FILES:
            (out_dir / name).unlink(missing_ok=True)

    data = prepare_data(cfg, ws, track, teacher_stage=kind == "teacher",
                        on_inputs=on_inputs if dist_info.is_main else None)
    run = Run(cfg, ws, data, kind, device, dist_info, out_dir, command)
    if state is not None:
        data.notes.extend(resume_notes)
        run.load_state(state)
    run.wrap_ddp()
    if dist_info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    stopped_at = None
    failed = False
    try:
        for epoch in range(run.epoch, cfg.epochs):
            if run.train_one_epoch(epoch, progress):
                stopped_at = run.global_step
                break
            run.end_epoch(epoch, progress)
    except BaseException:
        failed = True
        raise
    finally:
        distributed.shutdown(barrier=not failed)
    if dist_info.is_main and run.best_path.exists() and stopped_at is None:
        if cfg.calibrate:
            info = run.calibrate()
            data.notes.append(f"calibrated on the holdout: temperature {info['temperature']:.3f}, "
                              f"ECE {info['ece_before']:.4f} -> {info['ece_after']:.4f}")
        ws.record(kind, run.best_path)
    return TrainResult(out_dir, run.best_path, last_path, run.history, run.best_row, stopped_at, data.notes,
                       data.inputs, data.targets, dist_info.rank)
