"""A run's data: the manifest and labels resolved, train/valid rows and targets picked, (cached) splits built."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from fercli.data import Split, cache_dir_for, make_split, stratified_holdout
from fercli.errors import FerError
from fercli.progress import Track, no_track
from fercli.schema import COL_LABEL, COL_PATH, COL_SPLIT, Manifest, dist_columns, read_labels, read_manifest
from fercli.training.config import TrainConfig
from fercli.transforms import check_input_size
from fercli.workspace import Artifact, Workspace


@dataclass
class Prepared:
    """Everything a run trains and validates on."""

    manifest: Manifest
    train: Split
    valid: Split
    classes: tuple[str, ...]
    targets: str
    inputs: dict[str, Artifact]
    notes: list[str] = field(default_factory=list)


def prepare_data(cfg: TrainConfig, ws: Workspace, track: Track = no_track, teacher_stage: bool = False,
                 on_inputs: Callable[[dict[str, Artifact]], None] | None = None) -> Prepared:
    """Resolve the manifest (and labels), pick train/valid rows and targets, build (cached) splits.

    ``on_inputs`` is told the resolved artifacts as soon as they are known (the CLI prints them).
    """
    want_labels = not teacher_stage and cfg.targets in ("auto", "teacher", "mix")
    explicit = {"dataset": cfg.manifest}
    notes: list[str] = []
    if want_labels:
        has_labels = cfg.labels is not None or ws.current_path("labels") is not None
        if has_labels:
            explicit["labels"] = cfg.labels
        elif cfg.targets in ("teacher", "mix"):
            raise FerError(f"--targets {cfg.targets} needs label distributions: run `fer gen-labels` first, or pass --labels")
    inputs = ws.resolve_inputs(explicit)
    if on_inputs is not None:
        on_inputs(inputs)
    m = read_manifest(inputs["dataset"].path)
    targets = cfg.targets
    if targets == "auto":
        targets = "teacher" if "labels" in inputs else "none"
        if not teacher_stage and targets == "none":
            notes.append("no label distributions in the workspace: training on single labels only (the ablation baseline); "
                         "run `fer gen-labels` for LFER-LDL")

    df = m.labelled()
    train = df[df[COL_SPLIT] == "train"]
    valid = df[df[COL_SPLIT] == "valid"]
    if train.empty:
        raise FerError(f"{m.path}: no labelled training images")
    if valid.empty:
        if cfg.val_fraction is None:
            raise FerError(f"{m.path}: no labelled 'valid' split to select the best epoch on (the test split is never "
                           "used for that); pass --val-fraction 0.1 to hold out a stratified 10% of train")
        hold = stratified_holdout(train[COL_LABEL].to_numpy(), cfg.val_fraction, cfg.seed)
        train, valid = train[~hold], train[hold]
        notes.append(f"validation: {len(valid):,} images held out of train (--val-fraction {cfg.val_fraction}, seed {cfg.seed})")
    if cfg.limit is not None and cfg.limit < len(train):
        keep = stratified_holdout(train[COL_LABEL].to_numpy(), cfg.limit / len(train), cfg.seed + 1)
        train = train[keep]
        notes.append(f"training on a stratified subset of {len(train):,} images (--limit {cfg.limit})")

    train_targets = None
    if targets in ("teacher", "mix"):
        lab_df, lab_meta = read_labels(inputs["labels"].path)
        cols = dist_columns(m.classes)
        table = lab_df.set_index(COL_PATH)
        missing = ~train[COL_PATH].isin(table.index)
        if missing.any():
            raise FerError(f"{inputs['labels'].path}: no distribution for {int(missing.sum()):,} training images of "
                           f"{m.path} (e.g. {train[COL_PATH][missing].iloc[0]!r}); rerun `fer gen-labels`")
        train_targets = table.loc[train[COL_PATH], cols].to_numpy(dtype=np.float32)
    if targets in ("votes", "mix"):
        if not m.has_dist:
            raise FerError(f"{m.path}: --targets {targets} needs distribution columns (dist_*), e.g. FERPlus crowd votes "
                           "imported with `fer data import ferplus`")
        votes = train[m.dist_columns].to_numpy(dtype=np.float32)
        if np.isnan(votes).any():
            raise FerError(f"{m.path}: some training rows have no vote distribution")
        train_targets = votes if train_targets is None else cfg.target_mix * votes + (1 - cfg.target_mix) * train_targets
        if targets == "mix":
            notes.append(f"targets: {cfg.target_mix:g} x crowd votes + {1 - cfg.target_mix:g} x teacher distributions")

    size = check_input_size(cfg.input_size, "--input-size")
    cache = cache_dir_for(ws.root) if cfg.cache else None
    sha = ws.sha256(m.path)
    tr = make_split(m.root, train[COL_PATH].tolist(), train[COL_LABEL].to_numpy(), train_targets, size, cache, sha,
                    cfg.workers, track)
    va = make_split(m.root, valid[COL_PATH].tolist(), valid[COL_LABEL].to_numpy(), None, size, cache, sha,
                    cfg.workers, track)
    return Prepared(m, tr, va, m.classes, targets, inputs, notes)
