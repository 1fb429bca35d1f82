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

import torch
import torch.nn.functional as F

from fercli.choices import KL_REDUCTIONS, LOSSES, LossConfig  # noqa: F401  (declared light, for the configs)

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


def soft_onehot(labels: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """Class indices (N,) or already soft rows (N, C) -> float rows, with label smoothing ``smoothing``."""
    t = labels.float() if labels.is_floating_point() else F.one_hot(labels, num_classes).float()
    return t * (1 - smoothing) + smoothing / num_classes if smoothing else t


def combo_loss(logits: torch.Tensor, labels: torch.Tensor, alpha: float = 0.5, beta: float = 0.5,
               eps: float = 1.0, smoothing: float = 0.0) -> torch.Tensor:
    """Eq. 6: ``alpha * weighted_ce - (1 - alpha) * dice`` on the single labels.

    ``labels`` are class indices, or soft one-hot rows (MixUp/CutMix mixes them).
    """
    probs = F.softmax(logits.float(), dim=1)
    onehot = soft_onehot(labels, probs.shape[1], smoothing)
    return alpha * weighted_ce(probs, onehot, beta) - (1 - alpha) * dice(probs, onehot, eps)


class LFERLoss(torch.nn.Module):
    """``kl_weight * KL(target || softmax) + (combo | ce)(labels)``; returns the total and its parts.

    With ``prior`` (class frequencies) and ``cfg.tau > 0`` both parts see the logit-adjusted logits
    ``logits + tau * log(prior)`` (Menon et al. 2021): the network's own logits then stop favouring
    frequent classes, and inference uses them unadjusted. Options are validated by the stage config
    (:func:`fercli.training.validate_train_config`); this class trusts them.
    """

    def __init__(self, cfg: LossConfig, prior: torch.Tensor | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        adjust = None
        if prior is not None and cfg.tau:
            adjust = cfg.tau * torch.log(prior.float().clamp_min(1e-12) / prior.float().sum())
        self.register_buffer("adjust", adjust, persistent=False)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor,
                target: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """``labels``: class indices (N,) or soft one-hot rows (N, C); ``target``: distributions (N, C)."""
        cfg = self.cfg
        if self.adjust is not None:
            logits = logits.float() + self.adjust.to(logits.device)
        if cfg.loss == "combo":
            single = combo_loss(logits, labels, cfg.alpha, cfg.beta, cfg.dice_eps, cfg.label_smoothing)
        else:
            single = F.cross_entropy(logits.float(), labels.float() if labels.is_floating_point() else labels,
                                     label_smoothing=cfg.label_smoothing)
        parts = {cfg.loss: float(single.detach())}
        total = single
        if target is not None and cfg.kl_weight:
            kl = kl_divergence(logits, target, cfg.kl_reduction)
            parts["kl"] = float(kl.detach())
            total = total + cfg.kl_weight * kl
        return total, parts
