"""The optimiser's schedule and the weights' moving average."""

from __future__ import annotations

from collections.abc import Callable

import torch

from fercli.data import batches, epoch_order
from fercli.training.config import SAMPLING_POWER, TrainConfig


def sample_order(cfg: TrainConfig, n: int, epoch: int, labels: torch.Tensor, rank: int, world: int) -> list[int]:
    """This rank's image order for ``epoch``: a permutation, or the draws ``--balance`` asks for."""
    power = SAMPLING_POWER.get(cfg.balance)
    return epoch_order(n, epoch, cfg.seed, labels, power is not None, rank, world, power=power or 1.0)


def steps_per_epoch(n: int, cfg: TrainConfig, labels: torch.Tensor, rank: int, world: int) -> int:
    return len(batches(sample_order(cfg, n, 0, labels, rank, world), cfg.batch_size, drop_last=True))


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


def ema_with_warmup(decay: float) -> Callable[..., None]:
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
