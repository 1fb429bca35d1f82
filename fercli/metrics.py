"""Classification scores from labels and probabilities (NumPy only): accuracy, mean per-class accuracy,
per-class precision/recall/F1, the confusion matrix, and agreement with crowd votes.

Shared by `fer eval` (:mod:`fercli.evaluation`), the robustness suite and `fer gen-labels`; kept
apart from evaluation so those can use it without importing the eval stage (no import cycle).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def compute_metrics(y: np.ndarray, probs: np.ndarray, classes: list[str] | tuple[str, ...],
                    votes: np.ndarray | None = None) -> dict[str, Any]:
    """Accuracy, mean per-class accuracy, per-class precision/recall/F1, confusion matrix, and
    (with crowd ``votes``) mean KL(votes || prediction) and agreement with the vote majority."""
    n = len(classes)
    pred = probs.argmax(1)
    cm = np.zeros((n, n), dtype=np.int64)
    np.add.at(cm, (y, pred), 1)
    per_class = {}
    recalls = []
    for i, c in enumerate(classes):
        tp, support, predicted = cm[i, i], cm[i].sum(), cm[:, i].sum()
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else float("nan")
        f1 = 2 * precision * recall / (precision + recall) if support and (precision + recall) > 0 else 0.0
        per_class[c] = {"precision": float(precision), "recall": float(recall), "f1": float(f1), "support": int(support)}
        if support:
            recalls.append(recall)
    out: dict[str, Any] = {
        "images": int(len(y)),
        "accuracy": float((pred == y).mean()),
        "mean_class_accuracy": float(np.mean(recalls)),
        "macro_f1": float(np.mean([v["f1"] for v in per_class.values() if v["support"]])),
        "per_class": per_class,
        "confusion": cm.tolist(),
    }
    agreement = vote_agreement(votes, probs) if votes is not None else None
    if agreement is not None:
        out["votes"] = agreement
    return out


def vote_agreement(votes: np.ndarray, probs: np.ndarray) -> dict[str, Any] | None:
    """Mean KL(votes || probs) and top-1 agreement with the vote majority over rows that have votes
    (None when none has); shared by `fer eval` and `fer gen-labels`."""
    ok = ~np.isnan(votes).any(1)
    if not ok.any():
        return None
    v, p = votes[ok], probs[ok]
    eps = 1e-12
    kl = np.where(v > 0, v * (np.log(v + eps) - np.log(p + eps)), 0.0).sum(1)
    return {"images": int(ok.sum()), "mean_kl_votes_pred": float(kl.mean()),
            "vote_majority_agreement": float((p.argmax(1) == v.argmax(1)).mean())}
