"""Probabilities from logits: the stored temperature and test-time augmentation, and how calibrated they are.

Every consumer of a model's outputs (`fer eval`, `fer predict`, `fer gen-labels`, exports, the
Python API) turns logits into probabilities here: ``softmax(logits / T)`` with the model's
temperature ``T`` (:data:`DEFAULT_TEMPERATURE` when a checkpoint or export has none), averaged over
the test-time views (:func:`tta_views`: the faces, and with flip TTA their mirror images). The
checks of the two stored keys (``temperature``, ``tta``) and the calibration measures (ECE, NLL,
the fitted temperature) live beside them; fitting and writing a checkpoint's temperature is the
`fer calibrate` stage (:mod:`fercli.calibration`).

This module imports nothing else from fercli but errors and choices, so checkpoints, exports and inference can
all build on it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from fercli.choices import TTA_MODES  # test-time augmentation: none, or the mean with the mirrored face
from fercli.errors import FerError

V = TypeVar("V")

ECE_BINS = 15  # the usual choice (Guo et al. 2017)
DEFAULT_TEMPERATURE = 1.0  # a checkpoint or export without a ``temperature`` key: plain softmax
DEFAULT_TTA = "none"


def check_temperature(value: object, where: str) -> float:
    """``value`` as a float if it is a usable temperature (finite, > 0), else a FerError naming ``where``."""
    # Strings and booleans are refused although float() takes them: a checkpoint stores a number.
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise FerError(f"{where}: temperature {value!r} is not a number; refit it with `fer calibrate`")
    t = float(value)
    if not math.isfinite(t) or t <= 0:
        raise FerError(f"{where}: temperature {value!r} must be a finite number > 0; refit it with `fer calibrate`")
    return t


def check_tta(value: object, where: str) -> str:
    """``value`` if it is a known test-time augmentation (:data:`TTA_MODES`), else a FerError naming ``where``."""
    if not isinstance(value, str) or value not in TTA_MODES:
        raise FerError(f"{where}: tta must be one of {', '.join(TTA_MODES)}, got {value!r}")
    return value


def model_temperature(meta: Mapping[str, Any], where: str) -> float:
    """The checkpoint's or export metadata's ``temperature`` (1.0 when absent), checked."""
    value = meta.get("temperature")
    return DEFAULT_TEMPERATURE if value is None else check_temperature(value, where)


def model_tta(meta: Mapping[str, Any], where: str) -> str:
    """The checkpoint's or export metadata's recommended ``tta`` ("none" when absent), checked."""
    value = meta.get("tta")
    return DEFAULT_TTA if value is None else check_tta(value, where)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """``softmax(logits / temperature)`` over axis 1, in float64."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def tta_views(forward: Callable[[torch.Tensor], V], x: torch.Tensor, flip: bool = False) -> list[V]:
    """``forward`` of each test-time view of the batch ``x`` (N, 3, S, S): ``x``, and with ``flip`` its mirror."""
    views = [forward(x)]
    if flip:
        views.append(forward(x.flip(-1)))
    return views


def mean_softmax(views: Sequence[np.ndarray], temperature: float = DEFAULT_TEMPERATURE) -> np.ndarray:
    """The mean over ``views`` (logits, each (N, C)) of ``softmax(logits / temperature)``, in float64."""
    return sum(softmax(v, temperature) for v in views) / len(views)


def tta_probs(forward: Callable[[torch.Tensor], np.ndarray], x: torch.Tensor, temperature: float = DEFAULT_TEMPERATURE,
              flip: bool = False) -> np.ndarray:
    """Probabilities (N, C) of the batch ``x``: ``softmax(forward(x) / T)``, averaged with the mirrored
    batch's when ``flip`` (flip TTA; the teacher's label distributions with ``--flip``)."""
    return mean_softmax(tta_views(forward, x, flip), temperature)


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true class."""
    p = np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0)
    return float(-np.log(p).mean())


def calibration_bins(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> list[dict[str, float | None]]:
    """Per confidence bin (equal width on [0, 1]): count, mean confidence, accuracy (None for an
    empty bin, so the list is valid JSON)."""
    conf = probs.max(1)
    correct = (probs.argmax(1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # bin i holds (edges[i], edges[i+1]]; confidence is never below 1/C > 0
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)
    out = []
    for i in range(bins):
        m = which == i
        n = int(m.sum())
        out.append({"lo": float(edges[i]), "hi": float(edges[i + 1]), "count": n,
                    "confidence": float(conf[m].mean()) if n else None,
                    "accuracy": float(correct[m].mean()) if n else None})
    return out


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE: the count-weighted mean |accuracy - confidence| over equal-width confidence bins."""
    total = len(labels)
    if total == 0:
        return float("nan")
    return float(sum(b["count"] / total * abs(b["accuracy"] - b["confidence"])  # type: ignore[operator]
                     for b in calibration_bins(probs, labels, bins) if b["count"]))


def fit_temperature(logits: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor,
                    views: list[np.ndarray | torch.Tensor] | None = None) -> float:
    """The temperature ``T > 0`` minimising the NLL of ``softmax(logits / T)`` on these labels.

    With ``views`` (e.g. the logits of the mirrored images), the probabilities are the mean of
    ``softmax(v / T)`` over ``logits`` and every view: what flip TTA computes at inference.
    Optimised over ``log T`` (so ``T`` stays positive) with L-BFGS; deterministic for given inputs.
    """
    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    if z.ndim != 2 or len(z) != len(y) or len(y) == 0:
        raise FerError(f"cannot fit a temperature on logits of shape {tuple(z.shape)} and {len(y)} labels")
    zs = [z, *(torch.as_tensor(np.asarray(v), dtype=torch.float64) for v in views or ())]
    if any(v.shape != z.shape for v in zs):
        raise FerError("cannot fit a temperature: the views' logits differ in shape")
    if not all(torch.isfinite(v).all() for v in zs):
        raise FerError("cannot fit a temperature: the logits contain NaN or inf")
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        if len(zs) == 1:
            loss = F.cross_entropy(z / log_t.exp(), y)
        else:
            p = torch.stack([F.softmax(v / log_t.exp(), dim=1) for v in zs]).mean(0)
            loss = F.nll_loss(torch.log(p.clamp_min(1e-300)), y)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().exp())
    return check_temperature(t, "fitted temperature")


def calibration_summary(probs: np.ndarray, labels: np.ndarray, temperature: float) -> dict[str, float]:
    """``{"temperature", "ece", "nll"}`` of probabilities made at ``temperature`` (what reports show)."""
    return {"temperature": float(temperature), "ece": expected_calibration_error(probs, labels), "nll": nll(probs, labels)}


__all__ = [
    "DEFAULT_TEMPERATURE", "DEFAULT_TTA", "ECE_BINS", "TTA_MODES", "calibration_bins", "calibration_summary",
    "check_temperature", "check_tta", "expected_calibration_error", "fit_temperature", "mean_softmax",
    "model_temperature", "model_tta", "nll", "softmax", "tta_probs", "tta_views",
]
