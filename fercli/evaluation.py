"""`fer eval`: trustworthy scores for a checkpoint or an exported model on one split of a manifest.

Writes ``report.json`` (every figure, the model's and manifest's sha256, split, image count, classes,
how it was made), ``predictions.csv`` (one row per image: label, prediction, probabilities, so every
figure can be recomputed by hand), ``confusion.csv`` (counts, rows = true class) and
``confusion.png`` (normalised per row, class names on both axes) and ``reliability.png`` (accuracy
against confidence per bin, :func:`fercli.calibration.plot_reliability`); the names, columns and the
report's header are :mod:`fercli.schema.reports`'.

Probabilities are the model's calibrated ones (``softmax(logits / T)``, T stored with the model);
the report gives their ECE (15 bins) and NLL, and when T != 1 also those at T = 1 (``calibration.before``).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fercli.calibration import TTA_MODES, calibration_bins, calibration_summary, plot_reliability
from fercli.data import batches, cache_dir_for, load_batches, make_split, normalize
from fercli.device import resolve_device
from fercli.errors import FerError
from fercli.fileio import atomic_path, atomic_write_json, atomic_write_text
from fercli.inference import Classifier, class_mapping, resolve_model
from fercli.metrics import compute_metrics, vote_agreement  # noqa: F401  (compute_metrics: also fercli.evaluation's API)
from fercli.progress import Track, no_track
from fercli.stage_configs import EvalConfig  # light, for the command; re-exported here
from fercli.schema import (
    COL_LABEL, COL_PATH, COL_SPLIT, CONFUSION_CSV, CONFUSION_INDEX, CONFUSION_PNG, EVAL_FILES,
    PREDICTION_COLUMNS, PREDICTIONS_CSV, RELIABILITY_PNG, REPORT_JSON, ROBUSTNESS_JSON, ROBUSTNESS_PNG, SPLITS,
    dist_columns, make_provenance, manifest_ref, model_ref, prob_columns, read_manifest, report_header,
)
from fercli.workspace import Artifact, Workspace


def plot_confusion(cm: np.ndarray, classes: list[str] | tuple[str, ...], title: str, dest: Path) -> None:
    """Confusion matrix normalised per row (true class), class names on both axes, values printed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(classes), 0.8 + 0.8 * len(classes)))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=8,
                    color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


@dataclass
class EvalResult:
    out_dir: Path
    report: dict[str, Any]
    inputs: dict[str, Artifact]


def _csv_text(df: pd.DataFrame) -> str:
    buf = io.StringIO()
    df.to_csv(buf, index=False, float_format="%.6g")
    return buf.getvalue()


def run_eval(cfg: EvalConfig, ws: Workspace, track: Track = no_track, command: str | None = None,
             on_inputs: Callable[[dict[str, Artifact]], None] | None = None) -> EvalResult:
    """Score a model on one split and write the report files (see the module docstring)."""
    if cfg.split not in SPLITS:
        raise FerError(f"--split must be one of {', '.join(SPLITS)}, got {cfg.split!r}")
    if cfg.tta is not None and cfg.tta not in TTA_MODES:
        raise FerError(f"--tta must be none or flip, got {cfg.tta!r}")
    if cfg.robustness or cfg.corruptions:
        from fercli.robustness import check_options

        check_options(cfg.robustness, cfg.corruptions, cfg.robustness_seed)
    # A model may be scored on any dataset (cross-dataset evaluation), so the two are resolved
    # separately rather than checked against each other's provenance; classes are checked below.
    inputs = {"model": resolve_model(ws, cfg.model), "dataset": ws.resolve("dataset", cfg.manifest)}
    if on_inputs is not None:
        on_inputs(inputs)
    device = resolve_device(cfg.device)
    clf = Classifier.load(inputs["model"].path, device, cfg.threads, runtime=cfg.runtime)
    m = read_manifest(inputs["dataset"].path)
    rows = m.labelled([cfg.split])
    if rows.empty:
        present = sorted(set(m.df[COL_SPLIT]))
        raise FerError(f"{m.path}: no labelled images in split {cfg.split!r} (it has: {', '.join(present)}); "
                       f"pass --split {present[-1] if present else 'valid'}")
    mapping = class_mapping(clf.classes, m.classes, cfg.map, str(clf.path), str(m.path))
    classes = list(m.classes)
    keep_cols = list(range(len(clf.classes)))
    dropped = 0
    if mapping is not None:
        keep_cols, scored = mapping
        classes = [m.classes[i] for i in scored]
        in_scope = rows[COL_LABEL].isin(scored)
        dropped = int((~in_scope).sum())
        rows = rows[in_scope]
        if rows.empty:
            raise FerError(f"{m.path}: no images of the shared classes in split {cfg.split!r}")

    cache = cache_dir_for(ws.root) if cfg.cache else None
    split = make_split(m.root, rows[COL_PATH].tolist(), rows[COL_LABEL].to_numpy(), None, clf.preprocess.input_size,
                       cache, ws.sha256(m.path), cfg.workers, track)
    tta = cfg.tta if cfg.tta is not None else clf.tta
    probs = np.empty((len(split), len(clf.classes)), dtype=np.float64)
    # the same images at T = 1 ("before calibration"), from the same forward passes
    raw = np.empty_like(probs) if clf.temperature != 1.0 else None
    index_batches = batches(list(range(len(split))), cfg.batch_size)
    for x, idx in track(load_batches(split, index_batches, cfg.workers), f"evaluating on {cfg.split}", len(index_batches)):
        views = clf.view_logits(normalize(x, clf.preprocess, device), tta_flip=tta == "flip")
        probs[idx] = clf.probs_from_logits(views)
        if raw is not None:
            raw[idx] = clf.probs_from_logits(views, temperature=1.0)
    probs = probs[:, keep_cols]
    probs /= probs.sum(1, keepdims=True)  # renormalise when --map dropped output classes
    if raw is not None:
        raw = raw[:, keep_cols]
        raw /= raw.sum(1, keepdims=True)
    label_names = rows[COL_LABEL].map(lambda i: m.classes[i]).to_numpy()
    y = np.array([classes.index(n) for n in label_names])
    votes = None
    if m.has_dist:
        votes = rows[dist_columns(classes)].to_numpy(dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            votes = votes / votes.sum(1, keepdims=True)
    metrics = compute_metrics(y, probs, classes, votes)
    calibration = calibration_summary(probs, y, clf.temperature)
    calibration_detail: dict[str, Any] = {"bins": calibration_bins(probs, y)}
    if raw is not None:
        calibration_detail["before"] = calibration_summary(raw, y, 1.0)

    out_dir = Path(cfg.out) if cfg.out is not None else ws.default_path("eval").parent
    preds = pd.DataFrame(dict(zip(PREDICTION_COLUMNS, (rows[COL_PATH].to_numpy(), label_names,
                                                        [classes[i] for i in probs.argmax(1)]))))
    for j, col in enumerate(prob_columns(classes)):
        preds[col] = probs[:, j]
    cm = np.asarray(metrics["confusion"])
    confusion = pd.DataFrame(cm, index=pd.Index(classes, name=CONFUSION_INDEX), columns=classes).reset_index()
    atomic_write_text(out_dir / PREDICTIONS_CSV, _csv_text(preds))
    atomic_write_text(out_dir / CONFUSION_CSV, _csv_text(confusion))
    title = f"{clf.arch} on {m.meta.get('dataset') or 'dataset'} {cfg.split} (acc {metrics['accuracy']:.3f})"
    plot_confusion(cm, classes, title, out_dir / CONFUSION_PNG)
    plot_reliability(probs, y, f"{clf.arch} on {cfg.split}: T = {clf.temperature:.3g}, tta {tta}",
                     out_dir / RELIABILITY_PNG, before=raw)

    model_sha, manifest_sha = ws.sha256(clf.path), ws.sha256(m.path)
    report = {
        **report_header("eval"),
        "model": model_ref(str(clf.path), model_sha, clf.kind, clf.arch, clf.classes, clf.preprocess.input_size),
        "manifest": manifest_ref(str(m.path), manifest_sha, cfg.split),
        "classes": classes, "tta": tta, "tta_source": "option" if cfg.tta is not None else "model",
        "mapped": mapping is not None, "excluded_by_map": dropped,
        **metrics,
        "temperature": calibration["temperature"], "ece": calibration["ece"], "nll": calibration["nll"],
        "calibration": {"ece_bins": len(calibration_detail["bins"]), **calibration_detail},
        "files": {k: str(out_dir / f) for k, f in EVAL_FILES.items()},
        "provenance": make_provenance("eval", {"student" if clf.kind == "checkpoint" else "export": ws.input_ref(inputs["model"]),
                                               "dataset": ws.input_ref(inputs["dataset"])},
                                      {"split": cfg.split, "accuracy": round(metrics["accuracy"], 4)}, command),
    }
    if cfg.robustness:  # the corruption suite: same rows, classes, model, temperature and TTA as above
        from fercli import robustness as rb

        rel = rows[COL_PATH].tolist()
        figures = rb.score_suite(lambda x: clf.probs(normalize(x, clf.preprocess, device), tta_flip=tta == "flip"),
                                 clf.preprocess.input_size, [m.root / p for p in rel], rel, y, classes,
                                 manifest_sha=manifest_sha, cache_dir=cache, keep_cols=keep_cols,
                                 corruptions=cfg.corruptions, seed=cfg.robustness_seed, batch_size=cfg.batch_size,
                                 workers=cfg.workers, track=track)
        report["robustness"] = rb.write_outputs(
            rb.report(figures, model=report["model"], manifest=report["manifest"], tta=tta,
                      temperature=clf.temperature, eval_accuracy=metrics["accuracy"]),
            out_dir, f"{clf.arch} on {m.meta.get('dataset') or 'dataset'} {cfg.split}")
        report["files"].update(robustness_json=str(out_dir / ROBUSTNESS_JSON),
                               robustness_png=str(out_dir / ROBUSTNESS_PNG))
    atomic_write_json(out_dir / REPORT_JSON, report)
    ws.record("eval", out_dir / REPORT_JSON)
    return EvalResult(out_dir, report, inputs)
