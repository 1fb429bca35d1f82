"""The options of `fer train` and `fer pretrain-teacher`: recipes, the config dataclasses, their validation,
and the settings `--resume` takes from the run itself.

Light (no torch): the commands build and validate these before importing the engine."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fercli.choices import (AUGMENT_PRESETS, AUTO_AUGMENT, DEFAULT_INPUT_SIZE, KL_REDUCTIONS, LOSSES, MIX_MODES,
                            MODEL_NAMES, LossConfig, check_input_size)
from fercli.errors import FerError

# Recipe presets; applied below workspace config, config files and flags. "paper" and the dataset
# presets are the paper's; "ferplus-cpu" is the strong recipe for small faces (FERPlus-like 48x48
# crops) trained from scratch on a CPU (docs/MODEL_CARD.md says how the bundled model was made).
RECIPES: dict[str, dict[str, Any]] = {
    "paper": {},
    "rafdb": {"batch_size": 32, "lr_step": 30},  # beta: the default, the paper's best on RAF-DB
    "affectnet": {"batch_size": 64, "lr_step": 10, "balance": "sampler", "beta": 0.6},
    "ferplus-cpu": {"input_size": 64, "batch_size": 64, "epochs": 60, "lr": 0.1, "sched": "cosine",
                    "warmup_epochs": 2, "weight_decay": 5e-4, "nesterov": True, "augment": "strong",
                    "label_smoothing": 0.0, "ema": 0.999, "targets": "auto", "select": "acc",
                    "calibrate": True, "loss": "ce"},
}

SCHEDULES = ("step", "cosine")
BALANCE_MODES = ("none", "sampler", "sqrt", "logit-adjust")
# --balance modes that change which images an epoch draws: the exponent of fercli.data.epoch_order
# (1: every class equally often; 0.5: classes in proportion to the square root of their counts)
SAMPLING_POWER = {"sampler": 1.0, "sqrt": 0.5}
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
    balance: str = "none"  # none, sampler (class-balanced draws), sqrt (square-root sampling), logit-adjust (Menon et al. 2021)
    tau: float = 1.0  # logit adjustment strength (balance=logit-adjust)
    augment: str = "paper"  # paper, light, strong (fercli.augment)
    auto_augment: str = "none"  # none, trivialwide, randaugment
    mix: str = "none"  # none, mixup, cutmix, both
    mix_alpha: float = 0.2  # MixUp's Beta(alpha, alpha)
    flip: float = 0.5
    shift: float = 0.0  # random translation, a fraction of the input size (paper preset; 0: the paper's flip only)
    # the loss's options default to the loss's own defaults (fercli.losses.LossConfig, declared in fercli.choices)
    loss: str = LossConfig.loss  # combo (eq. 6) or ce
    alpha: float = LossConfig.alpha
    beta: float = LossConfig.beta
    dice_eps: float = LossConfig.dice_eps
    kl_weight: float = LossConfig.kl_weight
    kl_reduction: str = LossConfig.kl_reduction
    label_smoothing: float = LossConfig.label_smoothing
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
    def choice(flag: str, value: Any, options: tuple[str, ...] | list[str]) -> None:
        if value not in options:
            raise FerError(f"{flag} {value!r} is not one of {', '.join(options)}")

    if cfg.recipe is not None:
        choice("--recipe", cfg.recipe, tuple(RECIPES))
    choice("--arch", cfg.arch, MODEL_NAMES)
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


# Settings that define a run: `--resume` takes them from the run itself, whatever is typed now.
RUN_SETTINGS = ("arch", "pretrained", "input_size", "recipe", "batch_size", "lr", "momentum", "nesterov",
                "weight_decay", "sched", "lr_step", "lr_gamma", "warmup_epochs", "balance", "tau", "augment",
                "auto_augment", "mix", "mix_alpha", "flip", "shift", "loss", "alpha", "beta", "dice_eps", "kl_weight",
                "kl_reduction", "label_smoothing", "targets", "target_mix", "ema", "select", "calibrate",
                "val_fraction", "limit", "seed", "deterministic", "channels_last", "amp")


def resumed_config(cfg: TrainConfig, saved: dict[str, Any]) -> tuple[TrainConfig, list[str]]:
    """``cfg`` with the resumed run's own settings (epochs, device, workers and the like stay as given)."""
    changes, notes = {}, []
    for name in RUN_SETTINGS:
        if name in saved and saved[name] != getattr(cfg, name):
            changes[name] = saved[name]
            notes.append(f"{name}={saved[name]!r}")
    if changes:
        notes = [f"--resume keeps the run's own settings: {', '.join(notes)}"]
    return dataclasses.replace(cfg, **changes), notes
