"""`fer gen-labels`: the teacher's softmax over the training images, as label distributions.

The paper's label distribution for an image is the teacher's softmax output (eq. 4), with no extra
information. ``--temperature`` (T > 1 softens) and horizontal-flip averaging are options; the
defaults (T = 1, no flip) are the paper's. ``--ensemble`` adds teachers: the distribution is then the
mean of every teacher's softmax, each teacher run at its own input size and preprocessing (an ensemble
of teachers, one of issue 13's levers). Only labelled rows of the requested splits are labelled,
and the test split is refused unless forced: distributions are a training signal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from fercli.checkpoint import model_from_checkpoint
from fercli.classes import check_same_classes
from fercli.data import batches, cache_dir_for, load_batches, make_split, normalize
from fercli.device import resolve_device
from fercli.errors import FerError
from fercli.metrics import vote_agreement
from fercli.probability import tta_probs
from fercli.progress import Track, no_track
from fercli.schema import COL_LABEL, COL_PATH, COL_SPLIT, SPLITS, dist_columns, make_provenance, read_manifest, write_labels
from fercli.stage_configs import GenLabelsConfig  # light, for the command; re-exported here
from fercli.transforms import preset_from_meta
from fercli.workspace import Artifact, Workspace


@dataclass
class GenLabelsResult:
    out: Path
    df: pd.DataFrame
    inputs: dict[str, Artifact]
    summary: dict[str, Any]


def quality(probs: np.ndarray, labels: np.ndarray, votes: np.ndarray | None = None) -> dict[str, float]:
    """How the distributions relate to the single labels (and to crowd votes when available)."""
    eps = 1e-12
    out = {
        "agreement": float((probs.argmax(1) == labels).mean()),
        "mean_max_prob": float(probs.max(1).mean()),
        "mean_entropy": float(-(probs * np.log(probs + eps)).sum(1).mean()),
    }
    agreement = vote_agreement(votes, probs) if votes is not None else None
    if agreement is not None:
        out["kl_votes"] = agreement["mean_kl_votes_pred"]
        out["vote_majority_agreement"] = agreement["vote_majority_agreement"]
    return out


@torch.no_grad()
def run_gen_labels(cfg: GenLabelsConfig, ws: Workspace, track: Track = no_track, command: str | None = None,
                    on_inputs: Callable[[dict[str, Artifact]], None] | None = None) -> GenLabelsResult:
    """Run the teacher over the chosen splits and write the distributions (validated) atomically."""
    if cfg.temperature <= 0:
        raise FerError(f"--temperature must be positive, got {cfg.temperature}")
    bad = [s for s in cfg.splits if s not in SPLITS]
    if bad:
        raise FerError(f"--splits: unknown split {bad[0]!r}; choose from {', '.join(SPLITS)}")
    if "test" in cfg.splits and not cfg.force:
        raise FerError("refusing to label the test split: distributions are a training signal and test images must stay "
                       "unseen; pass --force if you really mean it")
    inputs = ws.resolve_inputs({"dataset": cfg.manifest, "teacher": cfg.teacher})
    for i, path in enumerate(cfg.ensemble, start=2):  # resolved as teachers are (a run folder means its best.pt)
        art = ws.resolve("teacher", path)
        ws.check_fresh(art, inputs)
        check_same_classes(art.classes, inputs["dataset"].classes, ws.rel(art.path), ws.rel(inputs["dataset"].path),
                           fix="use teachers trained on this dataset's classes")
        inputs[f"teacher_{i}"] = art
    teachers = [a for k, a in inputs.items() if k.startswith("teacher")]
    digests = [ws.sha256(t.path) for t in teachers]
    twice = next((t for i, t in enumerate(teachers) if digests[i] in digests[:i]), None)
    if twice is not None:
        raise FerError(f"{twice.path}: this teacher is given twice; each --ensemble member must be a different "
                       "checkpoint")
    if on_inputs is not None:
        on_inputs(inputs)
    m = read_manifest(inputs["dataset"].path)
    rows = m.labelled(cfg.splits)
    if rows.empty:
        raise FerError(f"{m.path}: no labelled images in split(s) {', '.join(cfg.splits)}")
    device = resolve_device(cfg.device)
    cache = cache_dir_for(ws.root) if cfg.cache else None
    members, per_teacher = [], []
    for art, digest in zip(teachers, digests):
        p, about = _teacher_probs(art.path, cfg, m, rows, device, cache, ws.sha256(m.path), track)
        per_teacher.append(p)
        # the file and its folder (a run's best.pt is named by its run), never this machine's absolute path
        members.append({"file": f"{art.path.parent.name}/{art.path.name}", "sha256": digest, **about,
                        "agreement": round(float((p.argmax(1) == rows[COL_LABEL].to_numpy()).mean()), 4)})
    probs = np.mean(per_teacher, axis=0)
    probs /= probs.sum(1, keepdims=True)  # exact normalisation after float rounding

    out = Path(cfg.out) if cfg.out is not None else ws.default_path("labels")
    df = pd.DataFrame({COL_PATH: rows[COL_PATH].to_numpy(), COL_SPLIT: rows[COL_SPLIT].to_numpy(),
                       COL_LABEL: rows[COL_LABEL].to_numpy()})
    for j, col in enumerate(dist_columns(m.classes)):
        df[col] = probs[:, j].astype(np.float32)
    votes = rows[m.dist_columns].to_numpy(dtype=np.float64) if m.has_dist else None
    q = quality(probs, rows[COL_LABEL].to_numpy(), votes)
    summary = {"rows": int(len(df)), "agreement": round(q["agreement"], 4)}
    prov = make_provenance("labels", {k: ws.input_ref(a) for k, a in inputs.items()}, summary, command)
    # input_size, teacher_sha256 and teacher_arch name --teacher (the first member of an ensemble)
    meta = {"temperature": cfg.temperature, "flip": cfg.flip, "input_size": members[0]["input_size"],
            "splits": list(cfg.splits), "teacher_sha256": members[0]["sha256"], "teacher_arch": members[0]["arch"],
            "quality": q}
    if len(members) > 1:
        meta["ensemble"] = members
    write_labels(df, m.classes, out, prov, meta)
    ws.record("labels", out)
    summary = {**summary, **q, "out": str(out), "temperature": cfg.temperature, "flip": cfg.flip,
               "splits": list(cfg.splits)}
    if len(members) > 1:
        summary["ensemble"] = members
    return GenLabelsResult(out, df, inputs, summary)


def _teacher_probs(path: Path, cfg: GenLabelsConfig, m: Any, rows: pd.DataFrame, device: torch.device,
                   cache: Path | None, manifest_sha: str, track: Track) -> tuple[np.ndarray, dict[str, Any]]:
    """One teacher's (flip-averaged) softmax at ``cfg.temperature`` over ``rows``, at the teacher's own input
    size, and what the labels' metadata records of it (arch, input size)."""
    model, ckpt = model_from_checkpoint(path)
    pre = preset_from_meta(ckpt)
    model.to(device)
    split = make_split(m.root, rows[COL_PATH].tolist(), rows[COL_LABEL].to_numpy(), None, pre.input_size, cache,
                       manifest_sha, cfg.workers, track)
    index_batches = batches(list(range(len(split))), cfg.batch_size)
    probs = np.empty((len(split), len(m.classes)), dtype=np.float64)
    for x, idx in track(load_batches(split, index_batches, cfg.workers), f"teacher distributions ({path.name})",
                        len(index_batches)):
        probs[idx] = tta_probs(lambda v: model(v).double().cpu().numpy(), normalize(x, pre, device), cfg.temperature,
                               cfg.flip)
    if not np.isfinite(probs).all():
        raise FerError(f"{path}: the teacher produced NaN or infinite outputs; retrain it (`fer pretrain-teacher`)")
    return probs, {"arch": ckpt["arch"], "input_size": pre.input_size}
