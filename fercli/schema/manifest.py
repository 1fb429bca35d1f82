"""Manifests: one parquet row per image (or face), image paths relative to a root in the metadata."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from fercli.classes import CLASSES_7, CLASSES_8
from fercli.errors import FerError
from fercli.schema.columns import (
    COL_LABEL, COL_LABEL_NAME, COL_PATH, COL_SPLIT, DIST_PREFIX, DIST_TOLERANCE, REQUIRED_COLUMNS, SPLITS,
    UNLABELLED, VOTE_PREFIX, _column_type, _to_arrow, dist_columns,
)
from fercli.schema.common import SCHEMA_VERSION, _where, make_provenance, np, pd, pq
from fercli.schema.parquet import _write_table_if_changed, read_parquet_meta

MANIFEST_KIND = "manifest"


@dataclass
class Manifest:
    """A validated manifest: the table, its class list, the image root and the rest of the metadata."""

    df: pd.DataFrame
    classes: tuple[str, ...]
    root: Path
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None  # the file it was read from, if any

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def image_path(self, rel: str) -> Path:
        return self.root / rel

    def image_paths(self) -> list[Path]:
        return [self.root / p for p in self.df[COL_PATH]]

    @property
    def dist_columns(self) -> list[str]:
        return dist_columns(self.classes)

    @property
    def has_dist(self) -> bool:
        return all(c in self.df.columns for c in self.dist_columns)

    @property
    def vote_columns(self) -> list[str]:
        return [c for c in self.df.columns if c.startswith(VOTE_PREFIX)]

    def split(self, name: str) -> pd.DataFrame:
        return self.df[self.df[COL_SPLIT] == name]

    def labelled(self, splits: tuple[str, ...] | list[str] | None = None) -> pd.DataFrame:
        """Rows that can be trained or scored on: a label, an image (``status`` ok after `fer align`),
        and, if given, one of ``splits``."""
        keep = self.df[COL_LABEL] >= 0
        if "status" in self.df.columns:
            keep &= self.df["status"] == "ok"
        if splits is not None:
            keep &= self.df[COL_SPLIT].isin(list(splits))
        return self.df[keep]



def validate_manifest(df: pd.DataFrame, classes: tuple[str, ...] | list[str], src: str) -> None:
    """Raise :class:`FerError` saying exactly what is wrong with a manifest table.

    ``src`` names the file (or the importer's output) in messages; rows are numbered from 0.
    """
    classes = tuple(classes)
    if not classes or len(set(classes)) != len(classes):
        raise FerError(f"{src}: class list must be non-empty and unique, got {list(classes)}")
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise FerError(f"{src}: missing required column(s) {', '.join(missing)}; expected {', '.join(REQUIRED_COLUMNS)}")
    unknown = [c for c in df.columns if _column_type(c) is None]
    if unknown:
        raise FerError(f"{src}: unknown column(s) {', '.join(unknown)}; see fercli.schema for the allowed columns")
    if len(df) == 0:
        raise FerError(f"{src}: the manifest is empty (no images)")

    paths = df[COL_PATH]
    if paths.isna().any():
        raise FerError(f"{_where(src, int(np.flatnonzero(paths.isna().to_numpy())[0]))}: empty image path")
    for i, p in enumerate(paths):
        pp = PurePosixPath(p)
        if p == "" or pp.is_absolute() or ".." in pp.parts or "\\" in p or (len(p) > 1 and p[1] == ":"):
            raise FerError(
                f"{_where(src, i)}: image path {p!r} must be relative to the dataset root and stay inside it"
            )
    key = [COL_PATH] + (["face_index"] if "face_index" in df.columns else [])
    dup = df.duplicated(subset=key, keep="first").to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        first = int(np.flatnonzero((paths == paths.iloc[i]).to_numpy())[0])
        raise FerError(f"{_where(src, i)}: duplicate row for {paths.iloc[i]!r} (first at row {first})")

    bad_split = ~df[COL_SPLIT].isin(SPLITS).to_numpy()
    if bad_split.any():
        i = int(np.flatnonzero(bad_split)[0])
        raise FerError(f"{_where(src, i)}: split {df[COL_SPLIT].iloc[i]!r} is not one of {', '.join(SPLITS)}")

    labels = df[COL_LABEL].to_numpy()
    bad_label = (labels < UNLABELLED) | (labels >= len(classes))
    if bad_label.any():
        i = int(np.flatnonzero(bad_label)[0])
        raise FerError(f"{_where(src, i)}: label {labels[i]} outside 0..{len(classes) - 1} (or -1 for none)")
    names = df[COL_LABEL_NAME]
    expected = pd.Series([classes[l] if l >= 0 else None for l in labels], index=df.index, dtype=object)
    mismatch = ~((names.astype(object) == expected) | (names.isna() & expected.isna())).to_numpy()
    if mismatch.any():
        i = int(np.flatnonzero(mismatch)[0])
        raise FerError(
            f"{_where(src, i)}: label_name {names.iloc[i]!r} does not match label {labels[i]} "
            f"({expected.iloc[i]!r} in the class list {list(classes)})"
        )

    dcols = [c for c in df.columns if c.startswith(DIST_PREFIX)]
    if dcols:
        expected_cols = dist_columns(classes)
        if sorted(dcols) != sorted(expected_cols):
            raise FerError(
                f"{src}: distribution columns {dcols} do not match the class list; expected {expected_cols}"
            )
        d = df[expected_cols].to_numpy(dtype=np.float64)
        present = ~np.isnan(d).all(axis=1)
        partial = np.isnan(d).any(axis=1) & present
        if partial.any():
            raise FerError(f"{_where(src, int(np.flatnonzero(partial)[0]))}: distribution has NaN entries")
        sums = d[present].sum(axis=1)
        bad = (np.abs(sums - 1.0) > DIST_TOLERANCE) | (d[present] < 0).any(axis=1)
        if bad.any():
            i = int(np.flatnonzero(present)[np.flatnonzero(bad)[0]])
            raise FerError(f"{_where(src, i)}: distribution sums to {d[i].sum():.4f} (must be non-negative and sum to 1)")



def write_manifest(
    df: pd.DataFrame,
    classes: tuple[str, ...] | list[str],
    root: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    provenance: dict[str, Any] | None = None,
    extra_meta: dict[str, Any] | None = None,
) -> Manifest:
    """Validate and write a manifest atomically; returns it as read back.

    The image root is stored relative to the manifest's directory (so a workspace can be moved
    together with its data) and also as an absolute path (so the manifest alone can be moved).
    If ``dest`` already holds the same content (:func:`content_sha256`) it is left untouched.
    """
    dest = Path(dest)
    classes = tuple(classes)
    df = df.reset_index(drop=True)
    validate_manifest(df, classes, str(dest))
    root_abs = Path(root).resolve()
    meta = {
        "schema_version": SCHEMA_VERSION,
        "kind": MANIFEST_KIND,
        "classes": list(classes),
        "root": os.path.relpath(root_abs, dest.resolve().parent),
        "root_abs": str(root_abs),
        "provenance": provenance or make_provenance("manifest"),
        **(extra_meta or {}),
    }
    if not _write_table_if_changed(_to_arrow(df), meta, dest):
        meta = read_parquet_meta(dest)  # identical content: the file (and its provenance) is kept as it was
    return Manifest(df=df, classes=classes, root=root_abs, meta=meta, path=dest)


def _resolve_root(path: Path, meta: dict[str, Any]) -> Path:
    rel = (path.resolve().parent / meta.get("root", ".")).resolve()
    if rel.is_dir():
        return rel
    absolute = Path(meta.get("root_abs", rel))
    return absolute if absolute.is_dir() else rel


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Read and validate a manifest parquet file."""
    path = Path(path)
    meta = read_parquet_meta(path)
    if meta.get("kind") != MANIFEST_KIND:
        raise FerError(f"{path}: is a {meta.get('kind')!r} artifact, not a manifest")
    classes = tuple(meta.get("classes") or ())
    df = pq.read_table(path).to_pandas()
    validate_manifest(df, classes, str(path))
    return Manifest(df=df, classes=classes, root=_resolve_root(path, meta), meta=meta, path=path)


def known_class_list(classes: list[str] | tuple[str, ...]) -> bool:
    """True for the canonical 7- or 8-class lists (other lists are allowed but unusual)."""
    return tuple(classes) in (CLASSES_7, CLASSES_8)

