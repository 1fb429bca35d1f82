"""The training engine shared by the teacher (`fer pretrain-teacher`) and the student (`fer train`).

One loop: seeded epoch order (optionally class-balanced), batch augmentation seeded by
``(seed, epoch, step)``, SGD with step decay, validation every epoch on the manifest's ``valid``
split (never ``test``), the best checkpoint by validation accuracy, ``metrics.csv`` and
``curves.png``. ``last.pt`` is written atomically every ``checkpoint_every`` steps and at each
epoch's end with the optimiser, scheduler and RNG state, so ``--resume`` continues exactly where a
run stopped. AMP and channels-last are used on CUDA only. Under ``torchrun`` the model is wrapped in
DistributedDataParallel and each rank takes its share of every epoch.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from fercli import distributed
from fercli.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint
from fercli.config import config_dict
from fercli.data import (
    Split,
    augment,
    batches,
    cache_dir_for,
    epoch_order,
    load_batches,
    make_split,
    normalize,
    stratified_holdout,
)
from fercli.device import resolve_device
from fercli.errors import FerError
from fercli.fileio import atomic_path, atomic_write_text
from fercli.losses import LFERLoss, LossConfig
from fercli.models import build_model, model_args
from fercli.progress import Track, no_track
from fercli.schema import COL_LABEL, COL_PATH, COL_SPLIT, Manifest, make_provenance, read_labels, read_manifest
from fercli.transforms import IMAGENET_MEAN, IMAGENET_STD, Preprocess, check_input_size
from fercli.workspace import Artifact, Workspace

log = logging.getLogger(__name__)

# Recipe presets from the paper; applied below workspace config, config files and flags.
RECIPES: dict[str, dict[str, Any]] = {
    "paper": {},
    "rafdb": {"batch_size": 32, "lr_step": 30, "beta": 0.2},
    "affectnet": {"batch_size": 64, "lr_step": 10, "balanced": True, "beta": 0.6},
}


@dataclass
class TrainConfig:
    """`fer train`: the LFER-LDL student. Defaults are the paper's (see docs in the README)."""

    manifest: Path | None = None
    labels: Path | None = None
    out: Path | None = None  # run directory; default: the workspace's student/
    arch: str = "lfer"
    pretrained: str | None = None  # imagenet
    init: Path | None = None
    input_size: int = 224
    recipe: str | None = None  # paper, rafdb, affectnet
    epochs: int = 120
    batch_size: int = 32
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_step: int = 30
    lr_gamma: float = 0.1
    balanced: bool = False
    flip: float = 0.5
    shift: float = 0.0  # random translation, a fraction of the input size (0: the paper's flip only)
    loss: str = "combo"  # combo (eq. 6) or ce
    alpha: float = 0.5
    beta: float = 0.2
    dice_eps: float = 1.0
    kl_weight: float = 1.0
    kl_reduction: str = "paper"
    targets: str = "auto"  # auto (teacher labels when available), teacher, votes, none
    val_fraction: float | None = None
    limit: int | None = None  # train on a seeded, stratified subset of this many images
    seed: int = 0
    deterministic: bool = False
    workers: int = 2
    cache: bool = True
    device: str = "auto"
    amp: bool = True  # CUDA only
    channels_last: bool = True  # CUDA only
    threads: int | None = None
    checkpoint_every: int = 500  # steps between resumable checkpoints (plus every epoch end)
    max_steps: int | None = None  # stop (resumably) after this many optimiser steps in total
    resume: bool = False
    overwrite: bool = False


@dataclass
class TeacherConfig(TrainConfig):
    """`fer pretrain-teacher`: the same engine, cross-entropy on the single labels, no distributions."""

    arch: str = "resnet50"
    loss: str = "ce"
    targets: str = "none"


class TrainProgress(Protocol):
    """How the engine reports; the CLI draws it with rich, the default logs epoch lines."""

    def epoch_start(self, epoch: int, epochs: int, steps: int, done: int) -> None: ...
    def step(self, images: int, stats: dict[str, float]) -> None: ...
    def epoch_end(self, row: dict[str, Any]) -> None: ...


class LogProgress:
    def epoch_start(self, epoch: int, epochs: int, steps: int, done: int) -> None:
        pass

    def step(self, images: int, stats: dict[str, float]) -> None:
        pass

    def epoch_end(self, row: dict[str, Any]) -> None:
        log.info("epoch %d: %s", row["epoch"], {k: v for k, v in row.items() if k != "epoch"})


@dataclass
class Prepared:
    """Everything a run trains and validates on."""

    manifest: Manifest
    train: Split
    valid: Split
    classes: tuple[str, ...]
    targets: str
    inputs: dict[str, Artifact]
    notes: list[str] = field(default_factory=list)


def prepare_data(cfg: TrainConfig, ws: Workspace, track: Track = no_track, teacher_stage: bool = False,
                 on_inputs: Callable[[dict[str, Artifact]], None] | None = None) -> Prepared:
    """Resolve the manifest (and labels), pick train/valid rows and targets, build (cached) splits.

    ``on_inputs`` is told the resolved artifacts as soon as they are known (the CLI prints them).
    """
    want_labels = not teacher_stage and cfg.targets in ("auto", "teacher")
    explicit = {"dataset": cfg.manifest}
    notes: list[str] = []
    if want_labels:
        has_labels = cfg.labels is not None or ws.current_path("labels") is not None
        if has_labels:
            explicit["labels"] = cfg.labels
        elif cfg.targets == "teacher":
            raise FerError("--targets teacher needs label distributions: run `fer gen-labels` first, or pass --labels")
    inputs = ws.resolve_inputs(explicit)
    if on_inputs is not None:
        on_inputs(inputs)
    m = read_manifest(inputs["dataset"].path)
    targets = cfg.targets
    if targets == "auto":
        targets = "teacher" if "labels" in inputs else "none"
        if not teacher_stage and targets == "none":
            notes.append("no label distributions in the workspace: training on single labels only (the ablation baseline); "
                         "run `fer gen-labels` for LFER-LDL")
    if targets not in ("teacher", "votes", "none"):
        raise FerError(f"--targets must be auto, teacher, votes or none, got {targets!r}")

    df = m.labelled()
    train = df[df[COL_SPLIT] == "train"]
    valid = df[df[COL_SPLIT] == "valid"]
    if train.empty:
        raise FerError(f"{m.path}: no labelled training images")
    if valid.empty:
        if cfg.val_fraction is None:
            raise FerError(f"{m.path}: no labelled 'valid' split to select the best epoch on (the test split is never "
                           "used for that); pass --val-fraction 0.1 to hold out a stratified 10% of train")
        hold = stratified_holdout(train[COL_LABEL].to_numpy(), cfg.val_fraction, cfg.seed)
        train, valid = train[~hold], train[hold]
        notes.append(f"validation: {len(valid):,} images held out of train (--val-fraction {cfg.val_fraction}, seed {cfg.seed})")
    if cfg.limit is not None and cfg.limit < len(train):
        keep = stratified_holdout(train[COL_LABEL].to_numpy(), cfg.limit / len(train), cfg.seed + 1)
        train = train[keep]
        notes.append(f"training on a stratified subset of {len(train):,} images (--limit {cfg.limit})")

    train_targets = None
    if targets == "teacher":
        lab_df, lab_meta = read_labels(inputs["labels"].path)
        cols = [f"dist_{c}" for c in m.classes]
        table = lab_df.set_index(COL_PATH)
        missing = ~train[COL_PATH].isin(table.index)
        if missing.any():
            raise FerError(f"{inputs['labels'].path}: no distribution for {int(missing.sum()):,} training images of "
                           f"{m.path} (e.g. {train[COL_PATH][missing].iloc[0]!r}); rerun `fer gen-labels`")
        train_targets = table.loc[train[COL_PATH], cols].to_numpy(dtype=np.float32)
    elif targets == "votes":
        if not m.has_dist:
            raise FerError(f"{m.path}: --targets votes needs distribution columns (dist_*), e.g. FERPlus crowd votes "
                           "imported with `fer data import ferplus`")
        train_targets = train[m.dist_columns].to_numpy(dtype=np.float32)
        if np.isnan(train_targets).any():
            raise FerError(f"{m.path}: some training rows have no vote distribution")

    size = check_input_size(cfg.input_size, "--input-size")
    cache = cache_dir_for(ws.root) if cfg.cache else None
    sha = ws.sha256(m.path)
    tr = make_split(m.root, train[COL_PATH].tolist(), train[COL_LABEL].to_numpy(), train_targets, size, cache, sha,
                    cfg.workers, track)
    va = make_split(m.root, valid[COL_PATH].tolist(), valid[COL_LABEL].to_numpy(), None, size, cache, sha,
                    cfg.workers, track)
    return Prepared(m, tr, va, m.classes, targets, inputs, notes)


# Settings that define a run: `--resume` takes them from the run itself, whatever is typed now.
RUN_SETTINGS = ("arch", "pretrained", "input_size", "recipe", "batch_size", "lr", "momentum", "weight_decay",
                "lr_step", "lr_gamma", "balanced", "flip", "shift", "loss", "alpha", "beta", "dice_eps", "kl_weight",
                "kl_reduction", "targets", "val_fraction", "limit", "seed", "deterministic", "channels_last", "amp")


def _resumed_config(cfg: TrainConfig, saved: dict[str, Any]) -> tuple[TrainConfig, list[str]]:
    """``cfg`` with the resumed run's own settings (epochs, device, workers and the like stay as given)."""
    changes, notes = {}, []
    for name in RUN_SETTINGS:
        if name in saved and saved[name] != getattr(cfg, name):
            changes[name] = saved[name]
            notes.append(f"{name}={saved[name]!r}")
    if changes:
        notes = [f"--resume keeps the run's own settings: {', '.join(notes)}"]
    return dataclasses.replace(cfg, **changes), notes


@dataclass
class FitResult:
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


def _seed_everything(seed: int, deterministic: bool, device: torch.device) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


@torch.no_grad()
def evaluate_split(model: torch.nn.Module, split: Split, pre: Preprocess, device: torch.device, batch_size: int,
                   workers: int, criterion: LFERLoss | None = None, channels_last: bool = False) -> dict[str, float]:
    """Accuracy, mean per-class accuracy and (optionally) the single-label loss on a split."""
    model.eval()
    preds, losses, weights = [], [], []
    order = list(range(len(split)))
    for x, idx in load_batches(split, batches(order, batch_size), workers):
        logits = model(normalize(x, pre, device, channels_last)).float()
        y = split.labels[idx].to(device)
        preds.append(logits.argmax(1).cpu())
        if criterion is not None:
            loss, _ = criterion(logits, y)
            losses.append(float(loss))
            weights.append(len(idx))
    pred = torch.cat(preds)
    y = split.labels
    acc = float((pred == y).float().mean())
    per_class = [float((pred[y == c] == c).float().mean()) for c in torch.unique(y)]
    out = {"acc": acc, "mean_class_acc": float(np.mean(per_class))}
    if criterion is not None:
        out["loss"] = float(np.average(losses, weights=weights))
    return out


def _write_metrics(out_dir: Path, history: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(out_dir / "metrics.csv", buf.getvalue())
    plot_curves(history, out_dir / "curves.png")


def plot_curves(history: list[dict[str, Any]], dest: Path) -> None:
    """Accuracy and loss per epoch (train and valid), like the paper's Figs. 8-9."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(ep, [r["train_acc"] for r in history], label="train")
    ax1.plot(ep, [r["val_acc"] for r in history], label="valid")
    ax1.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    ax2.plot(ep, [r["train_loss"] for r in history], label="train")
    ax2.plot(ep, [r["val_loss"] for r in history], label="valid (single-label part)")
    ax2.set(xlabel="epoch", ylabel="loss", title="loss")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def fit(cfg: TrainConfig, ws: Workspace, kind: str = "student", track: Track = no_track,
        progress: TrainProgress | None = None, command: str | None = None,
        on_inputs: Callable[[dict[str, Artifact]], None] | None = None) -> FitResult:
    """Train a model as ``cfg`` says and write its run directory; see the module docstring."""
    progress = progress or LogProgress()
    if cfg.recipe is not None and cfg.recipe not in RECIPES:
        raise FerError(f"unknown recipe {cfg.recipe!r}; choose one of {', '.join(RECIPES)}")
    for name, value, ok in (("--epochs", cfg.epochs, cfg.epochs >= 1), ("--batch-size", cfg.batch_size, cfg.batch_size >= 2),
                            ("--lr", cfg.lr, cfg.lr > 0), ("--lr-step", cfg.lr_step, cfg.lr_step >= 1),
                            ("--flip", cfg.flip, 0 <= cfg.flip <= 1),
                            ("--shift", cfg.shift, 0 <= cfg.shift < 0.5)):
        if not ok:
            raise FerError(f"{name} {value} is out of range")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    dist_info = distributed.init_distributed(device)
    if dist_info.enabled and device.type == "cuda":
        device = torch.device("cuda", dist_info.local_rank)
        torch.cuda.set_device(device)

    out_dir = Path(cfg.out) if cfg.out is not None else ws.default_path(kind).parent
    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"
    if not cfg.resume and last_path.exists() and not cfg.overwrite:
        raise FerError(f"{last_path}: a training run is already here; pass --resume to continue it, "
                       "--overwrite to start again, or --out for a new directory")
    if cfg.resume and not last_path.exists():
        raise FerError(f"{last_path}: nothing to resume; start the run without --resume")
    state: dict[str, Any] | None = None
    resume_notes: list[str] = []
    if cfg.resume:
        state = load_checkpoint(last_path)
        cfg, resume_notes = _resumed_config(cfg, state.get("config") or {})
    elif cfg.overwrite and dist_info.is_main:
        # Start clean: a new run that stops early must not sit beside the old run's best.pt and metrics.
        for name in ("best.pt", "last.pt", "metrics.csv", "curves.png"):
            (out_dir / name).unlink(missing_ok=True)

    teacher_stage = kind == "teacher"
    data = prepare_data(cfg, ws, track, teacher_stage=teacher_stage,
                        on_inputs=on_inputs if dist_info.is_main else None)
    classes = data.classes
    pre = Preprocess("train", cfg.input_size, IMAGENET_MEAN, IMAGENET_STD)
    margs = model_args(cfg.arch, len(classes))
    # Seed after data preparation: building the decoded cache draws from the global RNG (DataLoader
    # seeding), and initial weights must not depend on whether the cache already existed.
    _seed_everything(cfg.seed, cfg.deterministic, device)
    model, report = build_model(cfg.arch, len(classes), pretrained=cfg.pretrained, init=cfg.init)
    if report is not None:
        data.notes.append(report.summary())
    use_cuda = device.type == "cuda"
    channels_last = cfg.channels_last and use_cuda
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.lr_step, gamma=cfg.lr_gamma)
    scaler = torch.amp.GradScaler("cuda", enabled=use_cuda and cfg.amp)
    criterion = LFERLoss(LossConfig(cfg.loss, cfg.alpha, cfg.beta, cfg.dice_eps, cfg.kl_weight, cfg.kl_reduction))
    val_criterion = LFERLoss(LossConfig(cfg.loss, cfg.alpha, cfg.beta, cfg.dice_eps, 0.0, cfg.kl_reduction))

    manifest_sha = ws.sha256(data.manifest.path)
    start_epoch, start_step, global_step = 0, 0, 0
    history: list[dict[str, Any]] = []
    best_row: dict[str, Any] | None = None
    sums = [0.0, 0.0, 0.0]  # this epoch's loss x n, correct, n (saved with a mid-epoch checkpoint)
    seconds_done = 0.0  # this epoch's training time before a resume
    if state is not None:
        data.notes.extend(resume_notes)
        train_state = state.get("train_state") or {}
        if state["arch"] != cfg.arch or train_state.get("manifest_sha256") != manifest_sha:
            raise FerError(f"{last_path}: was trained with {state['arch']} on another manifest; it cannot be resumed "
                           "with these inputs (use --overwrite to start again)")
        model.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(train_state["optimizer"])
        scheduler.load_state_dict(train_state["scheduler"])
        if train_state.get("scaler"):
            scaler.load_state_dict(train_state["scaler"])
        torch.set_rng_state(train_state["torch_rng"])
        start_epoch, start_step, global_step = train_state["epoch"], train_state["step"], train_state["global_step"]
        history, best_row = list(train_state["history"]), train_state.get("best_row")
        sums = list(train_state.get("epoch_sums", sums))
        seconds_done = float(train_state.get("epoch_seconds", 0.0))
        data.notes.append(f"resumed from {last_path} at epoch {start_epoch + 1}, step {start_step}")

    ddp_model: torch.nn.Module = model
    if dist_info.enabled:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if use_cuda else None)

    def make_ckpt(metrics: dict[str, Any], train_state: dict[str, Any] | None) -> dict[str, Any]:
        inputs = {k: ws.input_ref(a) for k, a in data.inputs.items()}
        summary = {"arch": cfg.arch, "val_acc": round(float((best_row or {}).get("val_acc", 0.0)), 4),
                   "best_epoch": (best_row or {}).get("epoch", 0), "epochs_run": len(history)}
        ck = make_checkpoint(model, cfg.arch, margs, classes, cfg.input_size, IMAGENET_MEAN, IMAGENET_STD,
                             config={**config_dict(cfg), "targets": data.targets}, metrics=metrics,
                             provenance=make_provenance(kind, inputs, summary, command))
        if train_state is not None:
            ck["train_state"] = train_state
        return ck

    def save_last(epoch: int, step: int, epoch_sums: list[float], epoch_seconds: float) -> None:
        if not dist_info.is_main:
            return
        save_checkpoint(last_path, make_ckpt({"last": history[-1] if history else {}}, {
            "epoch": epoch, "step": step, "global_step": global_step, "epoch_sums": list(epoch_sums),
            "epoch_seconds": epoch_seconds, "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler.is_enabled() else {},
            "torch_rng": torch.get_rng_state(), "history": history, "best_row": best_row,
            "manifest_sha256": manifest_sha,
        }))

    if dist_info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    train = data.train
    stopped_at = None
    failed = False
    try:
        for epoch in range(start_epoch, cfg.epochs):
            order = epoch_order(len(train), epoch, cfg.seed, train.labels, cfg.balanced, dist_info.rank, dist_info.world)
            idx_batches = batches(order, cfg.batch_size, drop_last=True)
            first = start_step if epoch == start_epoch else 0
            progress.epoch_start(epoch, cfg.epochs, len(idx_batches), first)
            ddp_model.train()
            if epoch != start_epoch or first == 0:
                sums, seconds_done = [0.0, 0.0, 0.0], 0.0
            t0 = time.perf_counter() - seconds_done
            for step, (x, idx) in enumerate(load_batches(train, idx_batches[first:], cfg.workers), start=first):
                g = torch.Generator().manual_seed((cfg.seed * 1_000_003 + epoch) * 1_000_003 + step)
                x = normalize(augment(x, cfg.flip, g, cfg.shift), pre, device, channels_last)
                y = train.labels[idx].to(device)
                t = train.targets[idx].to(device) if train.targets is not None else None
                with torch.autocast("cuda", dtype=torch.float16, enabled=use_cuda and cfg.amp):
                    logits = ddp_model(x)
                loss, parts = criterion(logits, y, t)
                loss_value = float(loss.detach())
                finite = math.isfinite(loss_value)
                if dist_info.enabled:
                    # Every rank must stop together: a rank that raised alone would leave the others
                    # waiting in DDP's gradient all-reduce for ever.
                    finite = distributed.all_reduce_sum([float(finite)], device)[0] == dist_info.world
                if not finite:
                    what = loss_value if not math.isfinite(loss_value) else "non-finite on another process"
                    where = ", ".join(train.paths[i] for i in idx[:3])
                    good = last_path if last_path.exists() else "none yet"
                    raise FerError(f"loss became {what} at epoch {epoch + 1}, step {step} (images {where}, ...); "
                                   f"stopped; last good checkpoint: {good}; lower --lr or check those images")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                global_step += 1
                n = len(idx)
                correct = float((logits.detach().argmax(1) == y).sum())
                sums[0] += loss_value * n
                sums[1] += correct
                sums[2] += n
                progress.step(n * dist_info.world, {"loss": loss_value, "acc": correct / n, **parts})
                if cfg.max_steps is not None and global_step >= cfg.max_steps:
                    save_last(epoch, step + 1, sums, time.perf_counter() - t0)
                    stopped_at = global_step
                    break
                if cfg.checkpoint_every and global_step % cfg.checkpoint_every == 0:
                    save_last(epoch, step + 1, sums, time.perf_counter() - t0)
            if stopped_at is not None:
                break
            seconds = time.perf_counter() - t0
            loss_sum, correct, count = distributed.all_reduce_sum(sums, device)
            row: dict[str, Any] = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"],
                                   "train_loss": loss_sum / max(count, 1), "train_acc": correct / max(count, 1)}
            scheduler.step()
            if dist_info.is_main:
                val = evaluate_split(model, data.valid, pre, device, max(cfg.batch_size, 64), cfg.workers, val_criterion,
                                     channels_last)
                row.update(val_loss=val["loss"], val_acc=val["acc"], val_mean_class_acc=val["mean_class_acc"],
                           images_per_s=count / seconds if seconds > 0 else 0.0, seconds=seconds)
                history.append(row)
                improved = best_row is None or row["val_acc"] > best_row["val_acc"]
                if improved:
                    best_row = row
                progress.epoch_end(row)
                _write_metrics(out_dir, history)
                if improved:
                    save_checkpoint(best_path, make_ckpt({"best": best_row}, None))
                save_last(epoch + 1, 0, [0.0, 0.0, 0.0], 0.0)
            distributed.barrier()
    except BaseException:
        failed = True
        raise
    finally:
        distributed.shutdown(barrier=not failed)
    if dist_info.is_main and best_path.exists() and stopped_at is None:
        ws.record(kind, best_path)
    return FitResult(out_dir, best_path, last_path, history, best_row, stopped_at, data.notes, data.inputs, data.targets,
                     dist_info.rank)
