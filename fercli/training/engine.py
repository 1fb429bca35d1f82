"""The training engine: one run's state and its steps (train an epoch, validate, checkpoint, calibrate).

:class:`Run` holds the model (and its EMA), optimiser, schedule and history; :func:`fercli.training.run.run_train`
drives it epoch by epoch, like torchvision's ``references/classification/train.py``.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from fercli import distributed
from fercli.augment import build_augment, mix_batch
from fercli.checkpoint import load_checkpoint, make_checkpoint, model_from_checkpoint, save_checkpoint
from fercli.config_file import config_dict
from fercli.data import Split, batches, load_batches, normalize
from fercli.errors import FerError
from fercli.losses import LFERLoss, LossConfig
from fercli.models import build_model, model_args
from fercli.schema import BEST_CHECKPOINT, LAST_CHECKPOINT, TRAIN_STATE_KEY, make_provenance
from fercli.training.config import TrainConfig
from fercli.training.history import write_history
from fercli.training.optim import build_scheduler, ema_with_warmup, sample_order, steps_per_epoch
from fercli.training.prepare import Prepared
from fercli.transforms import IMAGENET_MEAN, IMAGENET_STD, Preprocess
from fercli.workspace import Workspace

log = logging.getLogger(__name__)


class TrainProgress(Protocol):
    """How the engine reports; the CLI draws it with rich, the default logs epoch lines."""

    def epoch_start(self, epoch: int, epochs: int, steps: int, done: int) -> None: ...
    def step(self, images: int, stats: dict[str, float]) -> None: ...
    def epoch_end(self, row: dict[str, Any]) -> None: ...


class LogProgress:
    """The default :class:`TrainProgress`: one log line per epoch."""

    def epoch_start(self, epoch: int, epochs: int, steps: int, done: int) -> None:
        pass

    def step(self, images: int, stats: dict[str, float]) -> None:
        pass

    def epoch_end(self, row: dict[str, Any]) -> None:
        log.info("epoch %d: %s", row["epoch"], {k: v for k, v in row.items() if k != "epoch"})


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


def _batch_seed(seed: int, epoch: int, step: int) -> int:
    return ((seed * 1_000_003 + epoch) * 1_000_003 + step) % (2**63 - 1)


class Run:
    """One training run's state: model (and its EMA), optimiser, schedule, history; and its steps.

    The loop in :func:`~fercli.training.run.run_train` reads like torchvision's reference script:
    :meth:`train_one_epoch`, :meth:`end_epoch` (:meth:`validate`, :meth:`save_best` / :meth:`save_last`),
    and :meth:`calibrate` at the end.
    """

    def __init__(self, cfg: TrainConfig, ws: Workspace, data: Prepared, kind: str, device: torch.device,
                 dist_info: distributed.DistInfo, out_dir: Path, command: str | None) -> None:
        self.cfg, self.ws, self.data, self.kind, self.device = cfg, ws, data, kind, device
        self.dist, self.out_dir, self.command = dist_info, out_dir, command
        self.last_path, self.best_path = out_dir / LAST_CHECKPOINT, out_dir / BEST_CHECKPOINT
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
            self.ema = torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=ema_with_warmup(cfg.ema),
                                                           use_buffers=True)
        self.optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay, nesterov=cfg.nesterov and cfg.momentum > 0)
        train = data.train
        self.steps_per_epoch = steps_per_epoch(len(train), cfg, train.labels, dist_info.rank, dist_info.world)
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
        ts = state.get(TRAIN_STATE_KEY) or {}
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
            ck[TRAIN_STATE_KEY] = train_state
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
        order = sample_order(cfg, len(train), epoch, train.labels, self.dist.rank, self.dist.world)
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
            write_history(self.out_dir, self.history)
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
