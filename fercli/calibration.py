"""`fer calibrate`: temperature scaling (Guo et al. 2017) fitted on a labelled split, and related tools.

A classifier's softmax is often over-confident. One scalar temperature ``T`` fitted on held-out
logits (``softmax(z / T)``) fixes most of that without changing any prediction (the argmax is the
same for every ``T > 0``). The fitted value is stored in the checkpoint (``temperature``) and applied
by every consumer: `fer eval`, `fer predict`, exports (whose ``logits`` output stays raw; the
temperature travels in their metadata). A checkpoint may also name its recommended test-time
augmentation (``tta``: none or flip), the default of `fer eval` and `fer predict`. How stored
temperatures and TTA turn logits into probabilities, and the measures (ECE, NLL,
:func:`fit_temperature`), are :mod:`fercli.probability`'s, re-exported here.

`fer calibrate` (:func:`run_calibrate`) fits ``T`` on a labelled split of a manifest and rewrites the
checkpoint with it; :func:`temperature_for` does the same for a model in memory (the training
engine's holdout). Both fit on the raw logits of the un-mirrored faces, whatever the model's ``tta``.
Also here: the reliability diagram and post-hoc logit adjustment (:func:`adjustment_curve`,
:func:`fold_logit_adjustment`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from fercli.data import batches, load_batches, normalize
from fercli.errors import FerError
from fercli.fileio import atomic_path
from fercli.probability import (
    DEFAULT_TEMPERATURE,
    DEFAULT_TTA,
    ECE_BINS,
    TTA_MODES,
    calibration_bins,
    calibration_summary,
    check_temperature,
    check_tta,
    expected_calibration_error,
    fit_temperature,
    mean_softmax,
    model_temperature,
    model_tta,
    nll,
    softmax,
)
from fercli.progress import Track, no_track
from fercli.stage_configs import CalibrateConfig  # light, for the command; re-exported here

if TYPE_CHECKING:
    from fercli.data import Split
    from fercli.transforms import Preprocess
    from fercli.workspace import Artifact, Workspace


def plot_reliability(probs: np.ndarray, labels: np.ndarray, title: str, dest: str | os.PathLike[str],
                     before: np.ndarray | None = None, bins: int = ECE_BINS) -> None:
    """A reliability diagram written atomically to ``dest`` (PNG).

    Top: accuracy against confidence per equal-width bin (bars at the bins' accuracy, the gap to the
    bins' mean confidence shaded), the diagonal of perfect calibration, and with ``before`` (the
    same images' probabilities at T = 1) the uncalibrated curve. Bottom: the image count per bin.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = calibration_bins(probs, labels, bins)
    width = 1.0 / bins
    mids = np.array([(b["lo"] + b["hi"]) / 2 for b in rows])
    counts = np.array([b["count"] for b in rows])
    acc = np.array([b["accuracy"] if b["count"] else 0.0 for b in rows])
    conf = np.array([b["confidence"] if b["count"] else np.nan for b in rows])
    fig, (ax, axc) = plt.subplots(2, 1, figsize=(5.2, 6.2), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.bar(mids, acc, width=width, edgecolor="black", color="tab:blue", alpha=0.8,
           label=f"accuracy (ECE {expected_calibration_error(probs, labels, bins):.4f})")
    has = counts > 0
    ax.bar(mids[has], (conf - acc)[has], bottom=acc[has], width=width, color="tab:red", alpha=0.25, hatch="//",
           edgecolor="tab:red", label="gap to mean confidence")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    if before is not None:
        old = calibration_bins(before, labels, bins)
        pts = [(b["confidence"], b["accuracy"]) for b in old if b["count"]]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, "o-", color="tab:orange", ms=3, lw=1,
                    label=f"at T = 1 (ECE {expected_calibration_error(before, labels, bins):.4f})")
    ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy", title=title)
    ax.legend(loc="upper left", fontsize=8)
    axc.bar(mids, counts, width=width, edgecolor="black", color="tab:gray")
    for m, n in zip(mids, counts):
        if n:
            axc.text(m, n, str(int(n)), ha="center", va="bottom", fontsize=6)
    axc.set(xlabel="confidence (max probability)", ylabel="images")
    fig.tight_layout()
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


# ---- fitting on a split (fer calibrate, and the training engine's holdout) ------------------
def adjustment_curve(logits: np.ndarray, labels: np.ndarray, prior: np.ndarray,
                     taus: list[float] | tuple[float, ...], views: Sequence[np.ndarray] = ()) -> list[dict[str, Any]]:
    """Post-hoc logit adjustment (Menon et al. 2021): predictions of ``logits - tau * log(prior)`` per ``tau``.

    ``views``: the logits of more views of the same images (the mirrored ones, for flip TTA); the
    prediction is then the argmax of the mean softmax of every view's adjusted logits, exactly what a
    model with the shift folded into its bias computes under that TTA.

    Returns, per ``tau``: accuracy, mean per-class accuracy, every class's recall and the lowest.
    A larger ``tau`` trades accuracy on frequent classes for recall on rare ones; choose the
    operating point on a holdout, never on the report split.
    """
    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels)
    every = [logits, *(np.asarray(v, dtype=np.float64) for v in views)]
    if any(v.shape != logits.shape for v in every):
        raise FerError(f"adjustment_curve: every view must have the logits' shape {logits.shape}, got "
                       f"{[v.shape for v in every[1:]]}")
    log_prior = np.log(np.clip(np.asarray(prior, dtype=np.float64), 1e-12, None) / np.sum(prior))
    present = [c for c in range(logits.shape[1]) if (labels == c).any()]
    out = []
    for tau in taus:
        pred = (mean_softmax([v - tau * log_prior for v in every]) if views else logits - tau * log_prior).argmax(1)
        recall = [float((pred[labels == c] == c).mean()) if c in present else None for c in range(logits.shape[1])]
        valid = [r for r in recall if r is not None]
        out.append({"tau": float(tau), "accuracy": float((pred == labels).mean()),
                    "mean_class_accuracy": float(np.mean(valid)), "min_recall": float(min(valid)), "recall": recall})
    return out


def fold_logit_adjustment(model: torch.nn.Module, shift: np.ndarray | torch.Tensor) -> str:
    """Add ``shift`` (one value per class) to the bias of ``model``'s final classifier layer, in place.

    The last ``nn.Linear`` / ``nn.Conv2d`` with one output per class and a bias is the layer that
    makes the logits, so every consumer (eval, predict, exports) sees the adjusted logits without
    knowing about it. Returns the parameter's name.
    """
    shift_t = torch.as_tensor(np.asarray(shift), dtype=torch.float32)
    last = None
    for name, module in model.named_modules():
        out = getattr(module, "out_features", None) or getattr(module, "out_channels", None)
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)) and out == len(shift_t) and module.bias is not None:
            last = (name, module)
    if last is None:
        raise FerError(f"no classifier layer with {len(shift_t)} outputs and a bias to fold the adjustment into")
    name, module = last
    with torch.no_grad():
        module.bias.add_(shift_t.to(module.bias.device, module.bias.dtype))
    return f"{name}.bias"


@torch.no_grad()
def split_logits(model: Callable[[torch.Tensor], torch.Tensor], split: Split, pre: Preprocess, device: torch.device | str,
                 batch_size: int = 128, workers: int = 0, track: Track = no_track) -> np.ndarray:
    """Raw logits ``(N, C)`` (float64) of ``model`` on every image of ``split``, in split order.

    ``model`` is a module in eval mode (or any batch -> logits callable) already on ``device``;
    images are normalised with ``pre`` exactly as `fer eval` does. No test-time augmentation.
    """
    device = torch.device(device)
    out: np.ndarray | None = None
    index_batches = batches(list(range(len(split))), batch_size)
    for x, idx in track(load_batches(split, index_batches, workers), "computing logits", len(index_batches)):
        z = model(normalize(x, pre, device)).float().cpu().numpy()
        if out is None:
            out = np.empty((len(split), z.shape[1]), dtype=np.float64)
        out[idx] = z
    if out is None:
        raise FerError("cannot fit a temperature on an empty split")
    return out


def temperature_for(model: Callable[[torch.Tensor], torch.Tensor], split: Split, pre: Preprocess,
                    device: torch.device | str, batch_size: int = 128, workers: int = 0,
                    track: Track = no_track) -> tuple[float, dict[str, float], dict[str, float]]:
    """Fit the temperature of ``model`` on a labelled ``split``: ``(T, before, after)``.

    ``before`` and ``after`` are :func:`calibration_summary` at T = 1 and at the fitted T, on the
    same images (so "after" is optimistic: report it on another split with `fer eval`).
    """
    logits = split_logits(model, split, pre, device, batch_size, workers, track)
    labels = split.labels.numpy()
    t = fit_temperature(logits, labels)
    return (t, calibration_summary(softmax(logits), labels, 1.0),
            calibration_summary(softmax(logits, t), labels, t))


@dataclass
class CalibrateResult:
    source: Path  # the checkpoint read
    path: Path  # the checkpoint written (== source when in place)
    temperature: float  # fitted
    previous: float  # the temperature the checkpoint had before
    before: dict[str, float]  # calibration_summary at T = 1
    after: dict[str, float]  # calibration_summary at the fitted T
    images: int
    split: str
    inputs: dict[str, Artifact]

    def summary(self) -> dict[str, Any]:
        return {"source": str(self.source), "out": str(self.path), "in_place": self.source.resolve() == self.path.resolve(),
                "split": self.split, "images": self.images, "temperature": self.temperature,
                "previous_temperature": self.previous, "before": self.before, "after": self.after, "ece_bins": ECE_BINS}


def run_calibrate(cfg: CalibrateConfig, ws: Workspace, track: Track = no_track, command: str | None = None,
              on_inputs: Callable[[dict[str, Artifact]], None] | None = None) -> CalibrateResult:
    """Fit a checkpoint's temperature on one labelled split and write the checkpoint with it.

    The split's images go through the same cache, decoding and normalisation as `fer eval`; the
    model's raw logits (no test-time augmentation) are fitted with :func:`fit_temperature`. The
    checkpoint is rewritten atomically (in place unless ``cfg.out``) with ``temperature`` set and a
    ``calibration`` record (split, manifest sha256, ECE/NLL before and after); weights, classes and
    provenance are unchanged, so predictions (the argmax) are too. The bundled model is refused
    unless ``cfg.out`` names another file.
    """
    # Local imports: checkpoint and inference sit above this module (see the package's import test).
    from fercli.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
    from fercli.data import cache_dir_for, make_split
    from fercli.device import resolve_device
    from fercli.inference import EXPORT_SUFFIXES, resolve_model
    from fercli.schema import COL_LABEL, COL_PATH, COL_SPLIT, SPLITS, now_iso, read_manifest
    from fercli.transforms import preset_from_meta

    if cfg.split not in SPLITS:
        raise FerError(f"--split must be one of {', '.join(SPLITS)}, got {cfg.split!r}")
    if cfg.batch_size < 1:
        raise FerError(f"--batch-size must be >= 1, got {cfg.batch_size}")
    if cfg.workers < 0:
        raise FerError(f"--workers must be >= 0, got {cfg.workers}")
    if cfg.out is not None and Path(cfg.out).suffix.lower() not in (".pt", ".pth"):
        raise FerError(f"{cfg.out}: --out must name a checkpoint (*.pt or *.pth)")
    if cfg.model is not None and Path(cfg.model).suffix.lower() in EXPORT_SUFFIXES:
        raise FerError(f"{cfg.model}: fer calibrate takes a fercli checkpoint, not an export; calibrate the "
                       "checkpoint, then export it again (the temperature travels with the export)")
    device = resolve_device(cfg.device)
    model_art = resolve_model(ws, cfg.model)
    if model_art.bundled and cfg.out is None:
        raise FerError(f"{model_art.path}: is the bundled model, which is not rewritten in place; "
                       "pass --out FILE.pt to write a calibrated copy")
    inputs = {"model": model_art, "dataset": ws.resolve("dataset", cfg.manifest)}
    if on_inputs is not None:
        on_inputs(inputs)
    ckpt = load_checkpoint(model_art.path)
    model, _ = model_from_checkpoint(ckpt)
    m = read_manifest(inputs["dataset"].path)
    if tuple(ckpt["classes"]) != tuple(m.classes):
        raise FerError(f"class lists differ: {model_art.path} has {', '.join(ckpt['classes'])}, {m.path} has "
                       f"{', '.join(m.classes)}; calibrate on a manifest with the model's class list")
    rows = m.labelled([cfg.split])
    if rows.empty:
        present = sorted(set(m.df[COL_SPLIT]))
        raise FerError(f"{m.path}: no labelled images in split {cfg.split!r} (it has: {', '.join(present)}); "
                       f"pass --split {present[-1] if present else 'valid'}")
    pre = preset_from_meta(ckpt)
    cache = cache_dir_for(ws.root) if cfg.cache else None
    manifest_sha = ws.sha256(m.path)
    split = make_split(m.root, rows[COL_PATH].tolist(), rows[COL_LABEL].to_numpy(), None, pre.input_size, cache,
                       manifest_sha, cfg.workers, track)
    t, before, after = temperature_for(model.to(device).eval(), split, pre, device, cfg.batch_size, cfg.workers, track)
    previous = float(ckpt.get("temperature", DEFAULT_TEMPERATURE))
    out = Path(cfg.out) if cfg.out is not None else Path(model_art.path)
    ckpt["temperature"] = t
    ckpt["calibration"] = {
        "method": "temperature scaling (NLL, L-BFGS on log T), raw logits without test-time augmentation",
        "created": now_iso(), "command": command, "temperature": t, "previous_temperature": previous,
        "split": cfg.split, "images": len(split), "ece_bins": ECE_BINS, "before": before, "after": after,
        "manifest": {"path": ws.rel(m.path), "sha256": manifest_sha},
        "source": {"path": ws.rel(model_art.path), "sha256": ws.sha256(model_art.path)},
    }
    save_checkpoint(out, ckpt)
    return CalibrateResult(Path(model_art.path), out, t, previous, before, after, len(split), cfg.split, inputs)


__all__ = [
    "DEFAULT_TEMPERATURE", "DEFAULT_TTA", "ECE_BINS", "TTA_MODES", "CalibrateConfig", "CalibrateResult", "run_calibrate",
    "calibration_bins", "calibration_summary", "check_temperature", "check_tta", "expected_calibration_error",
    "fit_temperature", "model_temperature", "model_tta", "nll", "plot_reliability", "softmax", "split_logits",
    "temperature_for",
]
