"""``fer data info``: what a manifest holds, per split and class, and what is wrong with it.

:func:`read_info` reads the columns it counts straight from the parquet file with pyarrow (no
pandas: `fer data info` starts in a fraction of a second); :func:`manifest_info` gives the same
report for a :class:`~fercli.schema.Manifest` already in memory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from fercli.errors import FerError
from fercli.progress import Track, no_track
from fercli.schema import (
    COL_LABEL,
    COL_PATH,
    COL_SPLIT,
    DIST_PREFIX,
    REQUIRED_COLUMNS,
    SPLITS,
    VOTE_PREFIX,
    Manifest,
    _resolve_root,
    dist_columns,
    read_parquet_meta,
)


def manifest_info(m: Manifest, check_files: bool = True, track: Track = no_track) -> dict[str, Any]:
    """Counts per split and class, imbalance, unlabelled and missing rows, optional columns."""
    df = m.df
    wanted = _wanted(list(df.columns), m.classes)
    cols = {c: df[c].to_numpy() for c in wanted}
    return _info(cols, list(df.columns), m.classes, m.root, m.meta, m.path, check_files, track)


def read_info(path: str | os.PathLike[str], check_files: bool = True, track: Track = no_track) -> dict[str, Any]:
    """:func:`manifest_info` of a manifest file, reading only the columns it counts (pyarrow, no pandas)."""
    import pyarrow.parquet as pq

    path = Path(path)
    meta = read_parquet_meta(path)
    if meta.get("kind") != "manifest":
        raise FerError(f"{path}: is a {meta.get('kind')!r} artifact, not a manifest")
    classes = tuple(meta.get("classes") or ())
    names = pq.read_schema(path).names
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise FerError(f"{path}: missing required column(s) {', '.join(missing)}; expected {', '.join(REQUIRED_COLUMNS)}")
    table = pq.ParquetFile(path).read(columns=_wanted(names, classes))  # not read_table: it imports pandas
    # to_pylist: pyarrow's to_numpy imports pandas, which would double the command's start-up time
    cols = {c: np.asarray(table.column(c).to_pylist(), dtype=np.float64 if c.startswith(DIST_PREFIX) else None)
            for c in table.column_names}
    cols[COL_LABEL] = cols[COL_LABEL].astype(np.int64)
    labels = cols[COL_LABEL]
    bad = np.flatnonzero((labels < -1) | (labels >= len(classes)))
    if len(bad):
        raise FerError(f"{path} (row {int(bad[0])}): label {int(labels[bad[0]])} is outside the class list "
                       f"(0..{len(classes) - 1}, or -1 for unlabelled)")
    return _info(cols, names, classes, _resolve_root(path, meta), meta, path, check_files, track)


def _wanted(names: list[str], classes: tuple[str, ...] | list[str]) -> list[str]:
    counted = {COL_PATH, COL_SPLIT, COL_LABEL, "status", *dist_columns(classes)}
    return [c for c in names if c in counted]


def _info(cols: dict[str, np.ndarray], names: list[str], classes: tuple[str, ...] | list[str], root: Path,
          meta: dict[str, Any], path: Path | None, check_files: bool, track: Track) -> dict[str, Any]:
    split, label = cols[COL_SPLIT], cols[COL_LABEL].astype(np.int64)
    splits = [s for s in SPLITS if (split == s).any()]
    counts: dict[str, dict[str, int]] = {}
    per_split = {}
    for s in splits:
        lab = label[split == s]
        counts[s] = {c: int((lab == i).sum()) for i, c in enumerate(classes)}
        labelled = [n for n in counts[s].values() if n > 0]
        per_split[s] = {
            "rows": int(len(lab)),
            "labelled": int((lab >= 0).sum()),
            "unlabelled": int((lab < 0).sum()),
            # largest / smallest non-empty class; None when fewer than two classes are present
            "imbalance": round(max(labelled) / min(labelled), 2) if len(labelled) > 1 else None,
            "empty_classes": [c for c, n in counts[s].items() if n == 0],
        }
    missing = None
    missing_examples: list[str] = []
    # After `fer align`, rows whose status is not "ok" record images that gave no crop: no file by design.
    status = cols.get("status")
    paths = cols[COL_PATH] if status is None else cols[COL_PATH][status == "ok"]
    if check_files:
        from fercli.fileio import DirIndex

        index = DirIndex(root)
        absent = np.array([not index.exists(p) for p in track(paths, "checking image files", len(paths))], dtype=bool)
        missing = int(absent.sum())
        missing_examples = [str(p) for p in paths[absent][:3]]
    dist = dist_columns(classes)
    has_dist = all(c in names for c in dist)
    status_counts = None
    if status is not None:
        values, n = np.unique(np.asarray([str(v) for v in status]), return_counts=True)
        status_counts = {str(k): int(v) for k, v in sorted(zip(values, n), key=lambda kv: -kv[1])}
    return {
        "manifest": str(path) if path else None,
        "root": str(root),
        "root_exists": root.is_dir(),
        "dataset": meta.get("dataset"),
        "schema_version": meta.get("schema_version"),
        "classes": list(classes),
        "rows": int(len(label)),
        "counts": counts,
        "splits": per_split,
        "unlabelled": int((label < 0).sum()),
        "missing_files": missing,
        "missing_examples": missing_examples,
        "distributions": has_dist,
        "distribution_rows": int(np.all([~np.isnan(cols[c].astype(np.float64)) for c in dist], axis=0).sum())
        if has_dist else 0,
        "vote_columns": [c.removeprefix(VOTE_PREFIX) for c in names if c.startswith(VOTE_PREFIX)],
        "optional_columns": {"box": "box_x" in names, "landmarks": "lm0_x" in names,
                             "valence_arousal": "valence" in names, "alignment": "score" in names},
        "status": status_counts,
        "created": (meta.get("provenance") or {}).get("created"),
    }
