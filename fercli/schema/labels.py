"""Label distributions (`fer gen-labels`): one row per labelled image: path (as in the manifest),
split, single label, ``dist_<class>``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fercli.errors import FerError
from fercli.schema.columns import COL_LABEL, COL_PATH, COL_SPLIT, DIST_TOLERANCE, _to_arrow, dist_columns
from fercli.schema.common import SCHEMA_VERSION, _where, np, pd, pq
from fercli.schema.parquet import _write_table_if_changed, read_parquet_meta

LABELS_KIND = "labels"


def validate_labels(df: pd.DataFrame, classes: tuple[str, ...] | list[str], src: str) -> None:
    """Raise unless ``df`` is a valid label-distribution table for ``classes``."""
    cols = dist_columns(classes)
    missing = [c for c in [COL_PATH, COL_SPLIT, COL_LABEL, *cols] if c not in df.columns]
    if missing:
        raise FerError(f"{src}: missing column(s) {', '.join(missing)}; regenerate it with `fer gen-labels`")
    if len(df) == 0:
        raise FerError(f"{src}: no rows")
    d = df[cols].to_numpy(dtype=np.float64)
    bad = np.isnan(d).any(axis=1) | (np.abs(d.sum(axis=1) - 1.0) > DIST_TOLERANCE) | (d < 0).any(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise FerError(f"{_where(src, i)}: distribution {np.round(d[i], 4).tolist()} is not a probability "
                       "distribution (NaN, negative, or does not sum to 1)")
    dup = df.duplicated(subset=[COL_PATH], keep="first").to_numpy()
    if dup.any():
        raise FerError(f"{_where(src, int(np.flatnonzero(dup)[0]))}: duplicate path {df[COL_PATH].iloc[int(np.flatnonzero(dup)[0])]!r}")


def write_labels(df: pd.DataFrame, classes: tuple[str, ...] | list[str], dest: str | os.PathLike[str],
                 provenance: dict[str, Any], extra_meta: dict[str, Any] | None = None) -> None:
    """Validate and write a label-distribution parquet atomically (left untouched if the content is the same)."""
    dest = Path(dest)
    df = df[[COL_PATH, COL_SPLIT, COL_LABEL, *dist_columns(classes)]].reset_index(drop=True)
    validate_labels(df, classes, str(dest))
    meta = {"schema_version": SCHEMA_VERSION, "kind": LABELS_KIND, "classes": list(classes),
            "provenance": provenance, **(extra_meta or {})}
    _write_table_if_changed(_to_arrow(df), meta, dest)


def read_labels(path: str | os.PathLike[str]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read and validate a label-distribution parquet: (table, metadata)."""
    path = Path(path)
    meta = read_parquet_meta(path)
    if meta.get("kind") != LABELS_KIND:
        raise FerError(f"{path}: is a {meta.get('kind')!r} artifact, not label distributions from `fer gen-labels`")
    df = pq.read_table(path).to_pandas()
    validate_labels(df, tuple(meta.get("classes") or ()), str(path))
    return df, meta
