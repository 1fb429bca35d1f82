"""The LFER-LDL losses: KL to a target distribution (eq. 5) plus the combo loss (eq. 6).

Both follow the paper's formulas literally; where the paper is ambiguous the choice is documented
here and kept switchable:

* eq. 5 divides the summed KL by ``N x C`` (samples x classes): ``kl_reduction="paper"``.
  ``"batchmean"`` (sum over classes, mean over samples: the mathematically standard KL per sample,
  C times larger) is available.
* eq. 6's weighted cross-entropy generalises binary CE to C classes one-vs-rest and averages the C
  binary CEs ("其输出是多个二进制交叉熵的平均值"), so it is averaged over samples *and* classes.
* Dice is computed over the whole batch: ``(2 sum t p + eps) / (sum t + sum p + eps)``, eps = 1.
* The total is ``kl_weight * KL + combo`` (the paper does not say how L1 and L2 are combined).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

_LOG_EPS = 1e-7  # keeps ln(p) and ln(1 - p) finite when a softmax saturates


def kl_divergence(logits: torch.Tensor, target: torch.Tensor, reduction: str = "paper") -> torch.Tensor:
    """KL(P || Q) with P = ``target`` distributions (N, C) and Q = softmax(``logits``).

    ``reduction="paper"`` is eq. 5: the sum over samples and classes divided by N x C;
    ``"batchmean"`` divides by N only. Terms with P = 0 contribute 0.
    """
    log_q = F.log_softmax(logits.float(), dim=1)
    target = target.float()
    terms = torch.where(target > 0, target * (torch.log(target.clamp_min(1e-12)) - log_q), torch.zeros_like(log_q))
    if reduction == "paper":
        return terms.sum() / terms.numel()
    if reduction == "batchmean":
        return terms.sum() / terms.shape[0]
    raise ValueError(f"unknown KL reduction {reduction!r} (paper or batchmean)")


def weighted_ce(probs: torch.Tensor, onehot: torch.Tensor, beta: float) -> torch.Tensor:
    """Eq. 6's weighted cross-entropy: mean over samples and classes of
    ``-(beta * t ln p + (1 - beta) * (1 - t) ln(1 - p))``.

    ``beta < 0.5`` weighs the ``(1 - t) ln(1 - p)`` term more, penalising false positives more
    than false negatives.
    """
    p = probs.clamp(_LOG_EPS, 1 - _LOG_EPS)
    terms = beta * onehot * torch.log(p) + (1 - beta) * (1 - onehot) * torch.log(1 - p)
    return -terms.mean()


def dice(probs: torch.Tensor, onehot: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Soft Dice over the batch: ``(2 sum t p + eps) / (sum t + sum p + eps)``."""
    return (2 * (onehot * probs).sum() + eps) / (onehot.sum() + probs.sum() + eps)


def combo_loss(logits: torch.Tensor, labels: torch.Tensor, alpha: float = 0.5, beta: float = 0.5,
               eps: float = 1.0) -> torch.Tensor:
    """Eq. 6: ``alpha * weighted_ce - (1 - alpha) * dice`` on the single labels (class indices)."""
    probs = F.softmax(logits.float(), dim=1)
    onehot = F.one_hot(labels, probs.shape[1]).to(probs.dtype)
    return alpha * weighted_ce(probs, onehot, beta) - (1 - alpha) * dice(probs, onehot, eps)


@dataclass(frozen=True)
class LossConfig:
    """What the training loss is made of (see the module docstring)."""

    loss: str = "combo"  # combo (eq. 6) or ce (plain cross-entropy) on the single labels
    alpha: float = 0.5
    beta: float = 0.2  # the paper's best on RAF-DB (0.6 on AffectNet-7)
    dice_eps: float = 1.0
    kl_weight: float = 1.0  # weight of eq. 5; only used when target distributions are given
    kl_reduction: str = "paper"


class LFERLoss(torch.nn.Module):
    """``kl_weight * KL(target || softmax) + (combo | ce)(labels)``; returns the total and its parts."""

    def __init__(self, cfg: LossConfig) -> None:
        super().__init__()
        if cfg.loss not in ("combo", "ce"):
            raise ValueError(f"unknown loss {cfg.loss!r} (combo or ce)")
        if not 0.0 <= cfg.alpha <= 1.0 or not 0.0 <= cfg.beta <= 1.0:
            raise ValueError("alpha and beta must lie in [0, 1]")
        self.cfg = cfg

    def forward(self, logits: torch.Tensor, labels: torch.Tensor,
                target: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.cfg
        if cfg.loss == "combo":
            single = combo_loss(logits, labels, cfg.alpha, cfg.beta, cfg.dice_eps)
        else:
            single = F.cross_entropy(logits.float(), labels)
        parts = {cfg.loss: float(single.detach())}
        total = single
        if target is not None and cfg.kl_weight:
            kl = kl_divergence(logits, target, cfg.kl_reduction)
            parts["kl"] = float(kl.detach())
            total = total + cfg.kl_weight * kl
        return total, parts
