"""The training engine shared by the teacher (`fer pretrain-teacher`) and the student (`fer train`).

One loop (:func:`fit`: train one epoch, validate, checkpoint; calibrate at the end): seeded epoch
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
from fercli.augment import build_augment, mix_batch
from fercli.checkpoint import load_checkpoint, make_checkpoint, model_from_checkpoint, save_checkpoint
from fercli.config import config_dict
from fercli.data import (
    Split,
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
from fercli.schema import (
    COL_LABEL,
    COL_PATH,
    COL_SPLIT,
    Manifest,
    dist_columns,
    make_provenance,
    read_labels,
    read_manifest,
)
from fercli.transforms import DEFAULT_INPUT_SIZE, IMAGENET_MEAN, IMAGENET_STD, Preprocess, check_input_size
from fercli.workspace import Artifact, Workspace

log = logging.getLogger(__name__)

# Recipe presets; applied below workspace config, config files and flags. "paper" and the dataset
# presets are the paper's; "ferplus-cpu" is the strong recipe for small faces (FERPlus-like 48x48
# crops) trained from scratch on a CPU (docs/MODEL_CARD.md says how the bundled model was made).
RECIPES: dict[str, dict[str, Any]] = {
    "paper": {},
    "rafdb": {"batch_size": 32, "lr_step": 30, "beta": 0.2},
    "affectnet": {"batch_size": 64, "lr_step": 10, "balance": "sampler", "beta": 0.6},
    "ferplus-cpu": {"input_size": 64, "batch_size": 64, "epochs": 60, "lr": 0.1, "sched": "cosine",
                    "warmup_epochs": 2, "weight_decay": 5e-4, "nesterov": True, "augment": "strong",
                    "label_smoothing": 0.0, "ema": 0.999, "targets": "auto", "select": "acc",
                    "calibrate": True, "loss": "ce"},
}

SCHEDULES = ("step", "cosine")
BALANCE_MODES = ("none", "sampler", "logit-adjust")
SELECT_METRICS = ("acc", "mean-class")
TARGET_MODES = ("auto", "teacher", "votes", "mix", "none")


@dataclass
class TrainConfig:
    """`fer train`: the LFER-LDL student. Defaults are the paper's (see docs in the README)."""

    manifest: Path | None = None
    labels: Path | None = None
    out: Path | None = None  # run directory; default: the workspace's student/
    arch: str = "lfer"
    pretrained: str | None = None  # imagenet
    init: Path | None = None
    input_size: int = DEFAULT_INPUT_SIZE
    recipe: str | None = None  # see RECIPES
    epochs: int = 120
    batch_size: int = 32
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    sched: str = "step"  # step (x lr_gamma every lr_step epochs) or cosine
    lr_step: int = 30
    lr_gamma: float = 0.1
    warmup_epochs: float = 0.0  # linear warm-up from 1% of --lr, in epochs
    balance: str = "none"  # none, sampler (class-balanced draws), logit-adjust (Menon et al. 2021)
    tau: float = 1.0  # logit adjustment strength (balance=logit-adjust)
    augment: str = "paper"  # paper, light, strong (fercli.augment)
    auto_augment: str = "none"  # none, trivialwide, randaugment
    mix: str = "none"  # none, mixup, cutmix, both
    mix_alpha: float = 0.2  # MixUp's Beta(alpha, alpha)
    flip: float = 0.5
    shift: float = 0.0  # random translation, a fraction of the input size (paper preset; 0: the paper's flip only)
    loss: str = "combo"  # combo (eq. 6) or ce
    alpha: float = 0.5
    beta: float = 0.2
    dice_eps: float = 1.0
    kl_weight: float = 1.0
    kl_reduction: str = "paper"
    label_smoothing: float = 0.0
    targets: str = "auto"  # auto (teacher labels when available), teacher, votes, mix, none
    target_mix: float = 0.5  # targets=mix: weight of the crowd votes (the rest: the teacher's distribution)
    ema: float | None = None  # decay of an exponential moving average of the weights (validated and saved)
    select: str = "acc"  # the best checkpoint by holdout accuracy or mean per-class accuracy
    calibrate: bool = False  # fit a temperature on the holdout after training and store it in best.pt
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


def _finite(v: float) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def validate_train_config(cfg: TrainConfig) -> None:
    """Every option's range and choice, checked once before any data is touched (one-line FerError)."""
    from fercli.augment import AUGMENT_PRESETS, AUTO_AUGMENT, MIX_MODES
    from fercli.losses import KL_REDUCTIONS, LOSSES
    from fercli.models import list_models

    def choice(flag: str, value: Any, options: tuple[str, ...] | list[str]) -> None:
        if value not in options:
            raise FerError(f"{flag} {value!r} is not one of {', '.join(options)}")

    if cfg.recipe is not None:
        choice("--recipe", cfg.recipe, tuple(RECIPES))
    choice("--arch", cfg.arch, list_models())
    choice("--sched", cfg.sched, SCHEDULES)
    choice("--balance", cfg.balance, BALANCE_MODES)
    choice("--augment", cfg.augment, AUGMENT_PRESETS)
    choice("--auto-augment", cfg.auto_augment, AUTO_AUGMENT)
    choice("--mix", cfg.mix, MIX_MODES)
    choice("--loss", cfg.loss, LOSSES)
    choice("--kl-reduction", cfg.kl_reduction, KL_REDUCTIONS)
    choice("--targets", cfg.targets, TARGET_MODES)
    choice("--select", cfg.select, SELECT_METRICS)
    if cfg.pretrained is not None:
        choice("--pretrained", cfg.pretrained, ("imagenet",))
    checks: list[tuple[str, Any, bool, str]] = [
        ("--epochs", cfg.epochs, cfg.epochs >= 1, ">= 1"),
        ("--batch-size", cfg.batch_size, cfg.batch_size >= 2, ">= 2"),
        ("--lr", cfg.lr, _finite(cfg.lr) and cfg.lr > 0, "> 0"),
        ("--momentum", cfg.momentum, _finite(cfg.momentum) and 0 <= cfg.momentum < 1, "in [0, 1)"),
        ("--weight-decay", cfg.weight_decay, _finite(cfg.weight_decay) and cfg.weight_decay >= 0, ">= 0"),
        ("--lr-step", cfg.lr_step, cfg.lr_step >= 1, ">= 1"),
        ("--lr-gamma", cfg.lr_gamma, _finite(cfg.lr_gamma) and 0 < cfg.lr_gamma <= 1, "in (0, 1]"),
        ("--warmup-epochs", cfg.warmup_epochs, _finite(cfg.warmup_epochs) and 0 <= cfg.warmup_epochs < cfg.epochs,
         f"in [0, --epochs={cfg.epochs}) (a warm-up must end before the run does)"),
        ("--tau", cfg.tau, _finite(cfg.tau) and cfg.tau >= 0, ">= 0"),
        ("--mix-alpha", cfg.mix_alpha, _finite(cfg.mix_alpha) and cfg.mix_alpha > 0, "> 0"),
        ("--flip", cfg.flip, _finite(cfg.flip) and 0 <= cfg.flip <= 1, "in [0, 1]"),
        ("--shift", cfg.shift, _finite(cfg.shift) and 0 <= cfg.shift < 0.5, "in [0, 0.5)"),
        ("--alpha", cfg.alpha, _finite(cfg.alpha) and 0 <= cfg.alpha <= 1, "in [0, 1]"),
        ("--beta", cfg.beta, _finite(cfg.beta) and 0 <= cfg.beta <= 1, "in [0, 1]"),
        ("--dice-eps", cfg.dice_eps, _finite(cfg.dice_eps) and cfg.dice_eps > 0, "> 0"),
        ("--kl-weight", cfg.kl_weight, _finite(cfg.kl_weight) and cfg.kl_weight >= 0,
         ">= 0 (a negative weight pushes the student away from its targets)"),
        ("--label-smoothing", cfg.label_smoothing, _finite(cfg.label_smoothing) and 0 <= cfg.label_smoothing < 1,
         "in [0, 1)"),
        ("--target-mix", cfg.target_mix, _finite(cfg.target_mix) and 0 <= cfg.target_mix <= 1, "in [0, 1]"),
        ("--ema", cfg.ema, cfg.ema is None or (_finite(cfg.ema) and 0 < cfg.ema < 1), "in (0, 1), e.g. 0.999"),
        ("--val-fraction", cfg.val_fraction, cfg.val_fraction is None or (_finite(cfg.val_fraction)
                                                                          and 0 < cfg.val_fraction < 1), "in (0, 1)"),
        ("--limit", cfg.limit, cfg.limit is None or cfg.limit >= 1, ">= 1"),
        ("--workers", cfg.workers, cfg.workers >= 0, ">= 0"),
        ("--threads", cfg.threads, cfg.threads is None or cfg.threads >= 1, ">= 1"),
        ("--checkpoint-every", cfg.checkpoint_every, cfg.checkpoint_every >= 0, ">= 0 (0: only at epoch ends)"),
        ("--max-steps", cfg.max_steps, cfg.max_steps is None or cfg.max_steps >= 1, ">= 1"),
    ]
    for flag, value, ok, want in checks:
        if not ok:
            raise FerError(f"{flag} {value!r} is out of range: it must be {want}")
    check_input_size(cfg.input_size, "--input-size")
    if cfg.resume and cfg.overwrite:
        raise FerError("--resume and --overwrite contradict each other; pass one")


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
    want_labels = not teacher_stage and cfg.targets in ("auto", "teacher", "mix")
    explicit = {"dataset": cfg.manifest}
    notes: list[str] = []
    if want_labels:
        has_labels = cfg.labels is not None or ws.current_path("labels") is not None
        if has_labels:
            explicit["labels"] = cfg.labels
        elif cfg.targets in ("teacher", "mix"):
            raise FerError(f"--targets {cfg.targets} needs label distributions: run `fer gen-labels` first, or pass --labels")
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
    if targets in ("teacher", "mix"):
        lab_df, lab_meta = read_labels(inputs["labels"].path)
        cols = dist_columns(m.classes)
        table = lab_df.set_index(COL_PATH)
        missing = ~train[COL_PATH].isin(table.index)
        if missing.any():
            raise FerError(f"{inputs['labels'].path}: no distribution for {int(missing.sum()):,} training images of "
                           f"{m.path} (e.g. {train[COL_PATH][missing].iloc[0]!r}); rerun `fer gen-labels`")
        train_targets = table.loc[train[COL_PATH], cols].to_numpy(dtype=np.float32)
    if targets in ("votes", "mix"):
        if not m.has_dist:
            raise FerError(f"{m.path}: --targets {targets} needs distribution columns (dist_*), e.g. FERPlus crowd votes "
                           "imported with `fer data import ferplus`")
        votes = train[m.dist_columns].to_numpy(dtype=np.float32)
        if np.isnan(votes).any():
            raise FerError(f"{m.path}: some training rows have no vote distribution")
        train_targets = votes if train_targets is None else cfg.target_mix * votes + (1 - cfg.target_mix) * train_targets
        if targets == "mix":
            notes.append(f"targets: {cfg.target_mix:g} x crowd votes + {1 - cfg.target_mix:g} x teacher distributions")

    size = check_input_size(cfg.input_size, "--input-size")
    cache = cache_dir_for(ws.root) if cfg.cache else None
    sha = ws.sha256(m.path)
    tr = make_split(m.root, train[COL_PATH].tolist(), train[COL_LABEL].to_numpy(), train_targets, size, cache, sha,
                    cfg.workers, track)
    va = make_split(m.root, valid[COL_PATH].tolist(), valid[COL_LABEL].to_numpy(), None, size, cache, sha,
                    cfg.workers, track)
    return Prepared(m, tr, va, m.classes, targets, inputs, notes)


# Settings that define a run: `--resume` takes them from the run itself, whatever is typed now.
RUN_SETTINGS = ("arch", "pretrained", "input_size", "recipe", "batch_size", "lr", "momentum", "nesterov",
                "weight_decay", "sched", "lr_step", "lr_gamma", "warmup_epochs", "balance", "tau", "augment",
                "auto_augment", "mix", "mix_alpha", "flip", "shift", "loss", "alpha", "beta", "dice_eps", "kl_weight",
                "kl_reduction", "label_smoothing", "targets", "target_mix", "ema", "select", "calibrate",
                "val_fraction", "limit", "seed", "deterministic", "channels_last", "amp")


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
                   workers: int, criterion: LFERLoss | None = None, channels_last: bool = False,
                   num_classes: int | None = None, return_logits: bool = False) -> dict[str, Any]:
    """Accuracy, mean per-class accuracy, per-class recall and (optionally) the single-label loss on a split.

    ``recall`` lists every class's recall (NaN for a class absent from the split) when ``num_classes``
    is given; ``return_logits`` adds the raw logits (N, C) as ``logits`` (for temperature fitting).
    """
    model.eval()
    preds, losses, weights, all_logits = [], [], [], []
    order = list(range(len(split)))
    for x, idx in load_batches(split, batches(order, batch_size), workers):
        logits = model(normalize(x, pre, device, channels_last)).float()
        y = split.labels[idx].to(device)
        preds.append(logits.argmax(1).cpu())
        if return_logits:
            all_logits.append(logits.cpu())
        if criterion is not None:
            loss, _ = criterion(logits, y)
            losses.append(float(loss))
            weights.append(len(idx))
    pred = torch.cat(preds)
    y = split.labels
    acc = float((pred == y).float().mean())
    per_class = [float((pred[y == c] == c).float().mean()) for c in torch.unique(y)]
    out: dict[str, Any] = {"acc": acc, "mean_class_acc": float(np.mean(per_class))}
    if num_classes is not None:
        out["recall"] = [float((pred[y == c] == c).float().mean()) if bool((y == c).any()) else float("nan")
                         for c in range(num_classes)]
    if criterion is not None:
        out["loss"] = float(np.average(losses, weights=weights))
    if return_logits:
        out["logits"] = torch.cat(all_logits)
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


def _steps_per_epoch(n: int, cfg: TrainConfig, labels: torch.Tensor, rank: int, world: int) -> int:
    order = epoch_order(n, 0, cfg.seed, labels, cfg.balance == "sampler", rank, world)
    return len(batches(order, cfg.batch_size, drop_last=True))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler:
    """The learning-rate schedule, stepped after every optimiser step.

    ``step``: x ``lr_gamma`` every ``lr_step`` epochs; ``cosine``: cosine decay to 0 over the run.
    ``warmup_epochs`` prepends a linear ramp from 1% of ``lr`` (the main schedule starts after it).
    """
    sched = torch.optim.lr_scheduler
    warm = int(round(cfg.warmup_epochs * steps_per_epoch))
    total = cfg.epochs * steps_per_epoch
    main: sched.LRScheduler
    if cfg.sched == "cosine":
        main = sched.CosineAnnealingLR(optimizer, T_max=max(total - warm, 1))
    else:
        main = sched.StepLR(optimizer, step_size=cfg.lr_step * steps_per_epoch, gamma=cfg.lr_gamma)
    if warm == 0:
        return main
    ramp = sched.LinearLR(optimizer, start_factor=0.01, end_factor=1.0, total_iters=warm)
    return sched.SequentialLR(optimizer, [ramp, main], milestones=[warm])


def _ema_with_warmup(decay: float) -> Callable[..., None]:
    """An EMA update for :class:`torch.optim.swa_utils.AveragedModel` whose decay ramps up as
    ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates (as timm's ModelEmaV3 does): with a fixed
    0.999 the average would still be mostly the random initialisation after a short run."""

    @torch.no_grad()
    def update(ema_params: list[torch.Tensor], params: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        n = float(num_averaged)
        d = min(decay, (1 + n) / (10 + n))
        if ema_params[0].is_floating_point():  # AveragedModel groups tensors by dtype
            torch._foreach_lerp_(ema_params, params, 1 - d)
        else:  # integer buffers (BatchNorm's num_batches_tracked): follow the model
            for e, p in zip(ema_params, params):
                e.copy_(p)

    return update


def _batch_seed(seed: int, epoch: int, step: int) -> int:
    return ((seed * 1_000_003 + epoch) * 1_000_003 + step) % (2**63 - 1)


class _Run:
    """One training run's state: model (and its EMA), optimiser, schedule, history; the steps of :func:`fit`.

    The loop in :func:`fit` reads like torchvision's reference script: :meth:`train_one_epoch`,
    :meth:`validate`, :meth:`save_best` / :meth:`save_last`, and :meth:`calibrate` at the end.
    """

    def __init__(self, cfg: TrainConfig, ws: Workspace, data: Prepared, kind: str, device: torch.device,
                 dist_info: distributed.DistInfo, out_dir: Path, command: str | None) -> None:
        self.cfg, self.ws, self.data, self.kind, self.device = cfg, ws, data, kind, device
        self.dist, self.out_dir, self.command = dist_info, out_dir, command
        self.last_path, self.best_path = out_dir / "last.pt", out_dir / "best.pt"
        self.classes = data.classes
        self.pre = Preprocess("train", cfg.input_size, IMAGENET_MEAN, IMAGENET_STD)
        self.margs = model_args(cfg.arch, len(self.classes))
        # Seed after data preparation: building the decoded cache draws from the global RNG (DataLoader
        # seeding), and initial weights must not depend on whether the cache already existed.
        _seed_everything(cfg.seed, cfg.deterministic, device)
        model, report = build_model(cfg.arch, len(self.classes), pretrained=cfg.pretrained, init=cfg.init)
        if report is not None:
            data.notes.append(report.summary())
        self.use_cuda = device.type == "cuda"
        self.amp = self.use_cuda and cfg.amp  # AMP only on CUDA: CPU autocast is slower for these nets
        self.channels_last = cfg.channels_last and self.use_cuda
        model.to(device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        self.model = model
        self.ema: torch.optim.swa_utils.AveragedModel | None = None
        if cfg.ema:
            self.ema = torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=_ema_with_warmup(cfg.ema),
                                                           use_buffers=True)
        self.optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay, nesterov=cfg.nesterov and cfg.momentum > 0)
        train = data.train
        self.steps_per_epoch = _steps_per_epoch(len(train), cfg, train.labels, dist_info.rank, dist_info.world)
        self.scheduler = build_scheduler(self.optimizer, cfg, max(self.steps_per_epoch, 1))
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        prior = torch.bincount(train.labels, minlength=len(self.classes)) if cfg.balance == "logit-adjust" else None
        loss_cfg = LossConfig(cfg.loss, cfg.alpha, cfg.beta, cfg.dice_eps, cfg.kl_weight, cfg.kl_reduction,
                              cfg.label_smoothing, cfg.tau if prior is not None else 0.0)
        self.criterion = LFERLoss(loss_cfg, prior)
        # the holdout loss: single labels only, unadjusted and unsmoothed, comparable across recipes
        self.val_criterion = LFERLoss(LossConfig(cfg.loss, cfg.alpha, cfg.beta, cfg.dice_eps, 0.0, cfg.kl_reduction))
        self.transform = build_augment(cfg.augment, cfg.input_size, cfg.flip, cfg.shift, cfg.auto_augment)
        self.manifest_sha = ws.sha256(data.manifest.path)
        self.ddp_model: torch.nn.Module = model
        self.epoch, self.step, self.global_step = 0, 0, 0
        self.history: list[dict[str, Any]] = []
        self.best_row: dict[str, Any] | None = None
        self.sums = [0.0, 0.0, 0.0]  # this epoch's loss x n, correct, n (saved with a mid-epoch checkpoint)
        self.seconds_done = 0.0  # this epoch's training time before a resume
        self.select_key = "val_acc" if cfg.select == "acc" else "val_mean_class_acc"

    @property
    def eval_model(self) -> torch.nn.Module:
        """The weights that are validated, checkpointed and exported: the EMA's when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def wrap_ddp(self) -> None:
        if self.dist.enabled:
            self.ddp_model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.use_cuda else None)

    # -- checkpoints ---------------------------------------------------------------------------------
    def load_state(self, state: dict[str, Any]) -> None:
        """Continue exactly where ``state`` (a last.pt) stopped."""
        ts = state.get("train_state") or {}
        manifest_ids = (self.manifest_sha, self.ws.file_sha256(self.data.manifest.path))  # runs made before content ids
        if state["arch"] != self.cfg.arch or ts.get("manifest_sha256") not in manifest_ids:
            raise FerError(f"{self.last_path}: was trained with {state['arch']} on another manifest; it cannot be "
                           "resumed with these inputs (use --overwrite to start again)")
        if "scheduler_steps_per_epoch" not in ts:
            raise FerError(f"{self.last_path}: was written by an older fercli whose schedule cannot be resumed "
                           "exactly; use --overwrite to start again")
        self.model.load_state_dict(ts.get("model", state["state_dict"]))
        if self.ema is not None:
            self.ema.load_state_dict(ts["ema"])
        self.optimizer.load_state_dict(ts["optimizer"])
        self.scheduler.load_state_dict(ts["scheduler"])
        if ts.get("scaler"):
            self.scaler.load_state_dict(ts["scaler"])
        torch.set_rng_state(ts["torch_rng"])
        self.epoch, self.step, self.global_step = ts["epoch"], ts["step"], ts["global_step"]
        self.history, self.best_row = list(ts["history"]), ts.get("best_row")
        self.sums = list(ts.get("epoch_sums", self.sums))
        self.seconds_done = float(ts.get("epoch_seconds", 0.0))
        self.data.notes.append(f"resumed from {self.last_path} at epoch {self.epoch + 1}, step {self.step}")

    def make_ckpt(self, metrics: dict[str, Any], train_state: dict[str, Any] | None) -> dict[str, Any]:
        data, best = self.data, self.best_row or {}
        inputs = {k: self.ws.input_ref(a) for k, a in data.inputs.items()}
        summary = {"arch": self.cfg.arch, "val_acc": round(float(best.get("val_acc", 0.0)), 4),
                   "best_epoch": best.get("epoch", 0), "epochs_run": len(self.history)}
        ck = make_checkpoint(self.eval_model, self.cfg.arch, self.margs, self.classes, self.cfg.input_size,
                             IMAGENET_MEAN, IMAGENET_STD, config={**config_dict(self.cfg), "targets": data.targets},
                             metrics=metrics, provenance=make_provenance(self.kind, inputs, summary, self.command))
        if train_state is not None:
            ck["train_state"] = train_state
        return ck

    def save_last(self, epoch: int, step: int, epoch_sums: list[float], epoch_seconds: float) -> None:
        if not self.dist.is_main:
            return
        save_checkpoint(self.last_path, self.make_ckpt({"last": self.history[-1] if self.history else {}}, {
            "epoch": epoch, "step": step, "global_step": self.global_step, "epoch_sums": list(epoch_sums),
            "epoch_seconds": epoch_seconds, "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scheduler_steps_per_epoch": self.steps_per_epoch,
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "torch_rng": torch.get_rng_state(), "history": self.history, "best_row": self.best_row,
            "manifest_sha256": self.manifest_sha,
            "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            **({"ema": {k: v.detach().cpu().clone() for k, v in self.ema.state_dict().items()}} if self.ema else {}),
        }))

    def save_best(self) -> None:
        save_checkpoint(self.best_path, self.make_ckpt({"best": self.best_row}, None))

    # -- the steps ------------------------------------------------------------------------------------
    def train_one_epoch(self, epoch: int, progress: TrainProgress) -> bool:
        """Train ``epoch`` (from the saved step when resuming); True if --max-steps stopped the run."""
        cfg, train, device = self.cfg, self.data.train, self.device
        order = epoch_order(len(train), epoch, cfg.seed, train.labels, cfg.balance == "sampler", self.dist.rank,
                            self.dist.world)
        idx_batches = batches(order, cfg.batch_size, drop_last=True)
        first = self.step if epoch == self.epoch else 0
        progress.epoch_start(epoch, cfg.epochs, len(idx_batches), first)
        self.ddp_model.train()
        if epoch != self.epoch or first == 0:
            self.sums, self.seconds_done = [0.0, 0.0, 0.0], 0.0
        t0 = time.perf_counter() - self.seconds_done
        seeds = [_batch_seed(cfg.seed, epoch, s) for s in range(first, len(idx_batches))]
        stream = load_batches(train, idx_batches[first:], cfg.workers, self.transform, seeds)
        for step, (x, idx) in enumerate(stream, start=first):
            x = normalize(x, self.pre, device, self.channels_last)
            y = train.labels[idx].to(device)
            labels: torch.Tensor = y
            t = train.targets[idx].to(device) if train.targets is not None else None
            if cfg.mix != "none":
                # every per-sample target mixes as the images did (fercli.augment.mix_batch)
                m = mix_batch(x, cfg.mix, cfg.mix_alpha, _batch_seed(cfg.seed + 1, epoch, step)).to(device)
                labels = m @ torch.nn.functional.one_hot(y, len(self.classes)).float()
                t = m @ t if t is not None else None
            with torch.autocast("cuda", dtype=torch.float16, enabled=self.amp):
                logits = self.ddp_model(x)
            loss, parts = self.criterion(logits, labels, t)
            loss_value = float(loss.detach())
            self._check_finite(loss_value, epoch, step, idx)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            if self.ema is not None:
                self.ema.update_parameters(self.model)
            self.global_step += 1
            n = len(idx)
            correct = float((logits.detach().argmax(1) == y).sum())
            self.sums[0] += loss_value * n
            self.sums[1] += correct
            self.sums[2] += n
            progress.step(n * self.dist.world, {"loss": loss_value, "acc": correct / n, **parts})
            if cfg.max_steps is not None and self.global_step >= cfg.max_steps:
                self.save_last(epoch, step + 1, self.sums, time.perf_counter() - t0)
                return True
            if cfg.checkpoint_every and self.global_step % cfg.checkpoint_every == 0:
                self.save_last(epoch, step + 1, self.sums, time.perf_counter() - t0)
        self.seconds_done = time.perf_counter() - t0
        return False

    def _check_finite(self, loss_value: float, epoch: int, step: int, idx: list[int]) -> None:
        finite = math.isfinite(loss_value)
        if self.dist.enabled:
            # Every rank must stop together: a rank that raised alone would leave the others
            # waiting in DDP's gradient all-reduce for ever.
            finite = distributed.all_reduce_sum([float(finite)], self.device)[0] == self.dist.world
        if not finite:
            what = loss_value if not math.isfinite(loss_value) else "non-finite on another process"
            where = ", ".join(self.data.train.paths[i] for i in idx[:3])
            good = self.last_path if self.last_path.exists() else "none yet"
            raise FerError(f"loss became {what} at epoch {epoch + 1}, step {step} (images {where}, ...); "
                           f"stopped; last good checkpoint: {good}; lower --lr or check those images")

    def validate(self, epoch: int) -> dict[str, Any]:
        """The epoch's row: training figures, and on the main process the holdout's (per-class recall too)."""
        seconds = self.seconds_done
        loss_sum, correct, count = distributed.all_reduce_sum(self.sums, self.device)
        row: dict[str, Any] = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"],
                               "train_loss": loss_sum / max(count, 1), "train_acc": correct / max(count, 1)}
        if self.dist.is_main:
            cfg = self.cfg
            val = evaluate_split(self.eval_model, self.data.valid, self.pre, self.device, max(cfg.batch_size, 64),
                                 cfg.workers, self.val_criterion, self.channels_last, num_classes=len(self.classes))
            row.update(val_loss=val["loss"], val_acc=val["acc"], val_mean_class_acc=val["mean_class_acc"],
                       images_per_s=count / seconds if seconds > 0 else 0.0, seconds=seconds)
            row.update({f"recall_{c}": r for c, r in zip(self.classes, val["recall"])})
        return row

    def end_epoch(self, epoch: int, progress: TrainProgress) -> None:
        row = self.validate(epoch)
        if self.dist.is_main:
            self.history.append(row)
            improved = self.best_row is None or row[self.select_key] > self.best_row[self.select_key]
            if improved:
                self.best_row = row
            progress.epoch_end(row)
            _write_metrics(self.out_dir, self.history)
            if improved:
                self.save_best()
            self.save_last(epoch + 1, 0, [0.0, 0.0, 0.0], 0.0)
        distributed.barrier()

    def calibrate(self) -> dict[str, float]:
        """Fit a temperature on the holdout with the best weights and store it in best.pt."""
        from fercli.calibration import expected_calibration_error, fit_temperature, nll

        ckpt = load_checkpoint(self.best_path)
        model, _ = model_from_checkpoint(ckpt)
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        val = evaluate_split(model, self.data.valid, self.pre, self.device, max(self.cfg.batch_size, 64),
                             self.cfg.workers, channels_last=self.channels_last, return_logits=True)
        logits, y = val["logits"].double(), self.data.valid.labels.numpy()
        temperature = fit_temperature(logits, y)
        before = torch.softmax(logits, 1).numpy()
        after = torch.softmax(logits / temperature, 1).numpy()
        info = {"temperature": temperature, "split": "holdout", "images": len(y),
                "ece_before": expected_calibration_error(before, y), "ece_after": expected_calibration_error(after, y),
                "nll_before": nll(before, y), "nll_after": nll(after, y)}
        ckpt["temperature"] = temperature
        ckpt["metrics"] = {**ckpt.get("metrics", {}), "calibration": info}
        save_checkpoint(self.best_path, ckpt)
        return info


def run_train(cfg: TrainConfig, ws: Workspace, kind: str = "student", track: Track = no_track,
        progress: TrainProgress | None = None, command: str | None = None,
        on_inputs: Callable[[dict[str, Artifact]], None] | None = None) -> TrainResult:
    """Train a model as ``cfg`` says and write its run directory; see the module docstring."""
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
    last_path = out_dir / "last.pt"
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
        cfg, resume_notes = _resumed_config(cfg, state.get("config") or {})
    elif cfg.overwrite and dist_info.is_main:
        # Start clean: a new run that stops early must not sit beside the old run's best.pt and metrics.
        for name in ("best.pt", "last.pt", "metrics.csv", "curves.png"):
            (out_dir / name).unlink(missing_ok=True)

    data = prepare_data(cfg, ws, track, teacher_stage=kind == "teacher",
                        on_inputs=on_inputs if dist_info.is_main else None)
    run = _Run(cfg, ws, data, kind, device, dist_info, out_dir, command)
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
    return TrainResult(out_dir, run.best_path, last_path, run.history, run.best_row, stopped_at, data.notes, data.inputs,
                     data.targets, dist_info.rank)
