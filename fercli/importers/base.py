"""Helpers shared by the dataset importers: results, path safety, duplicates, missing images."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd

from fercli.choices import IMAGE_EXTS, VIDEO_EXTS  # noqa: F401  (what fer predict treats as a video)
from fercli.errors import FerError
from fercli.stage_configs import ImportConfig  # noqa: F401  (light, for the command; re-exported here)
from fercli.schema import COL_LABEL, COL_LABEL_NAME, COL_PATH, COL_SPLIT, UNLABELLED


def is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTS


@dataclass
class Imported:
    """What an importer returns: manifest rows, class list, image root, and what it dropped."""

    df: pd.DataFrame
    classes: tuple[str, ...]
    root: Path
    dataset: str
    source_files: list[Path] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def safe_rel(path: str, where: str) -> str:
    """Normalise a dataset-relative path to POSIX form; refuse absolute paths and ``..``."""
    p = path.strip().replace("\\", "/")
    pp = PurePosixPath(p)
    if not p or pp.is_absolute() or ".." in pp.parts or (len(p) > 1 and p[1] == ":"):
        raise FerError(f"{where}: image path {path!r} escapes the dataset root; paths must be relative and stay inside it")
    return str(pp)


def check_duplicates(keys: list[str], lines: list[int], file: Path) -> None:
    """Refuse a label file that lists the same image twice (names both lines)."""
    seen: dict[str, int] = {}
    for key, line in zip(keys, lines):
        if key in seen:
            raise FerError(f"{file}:{line}: duplicate entry for {key!r} (first at line {seen[key]}); remove one")
        seen[key] = line


from fercli.fileio import DirIndex  # noqa: E402  (kept here for importers; lives in fileio, which is light)


def drop_missing(imp: Imported, lines: list[int] | None, label_file: Path | None, allow_missing: bool) -> Imported:
    """Check every listed image exists; fail on the first absent one unless ``allow_missing``."""
    index = DirIndex(imp.root)
    present = np.array([index.exists(p) for p in imp.df[COL_PATH]], dtype=bool)
    if present.all():
        return imp
    i = int(np.flatnonzero(~present)[0])
    if not allow_missing:
        where = f"{label_file}:{lines[i]}" if label_file is not None and lines is not None else str(imp.root)
        raise FerError(
            f"{where}: image {imp.df[COL_PATH].iloc[i]!r} is listed but absent under {imp.root} "
            f"({int((~present).sum())} missing in all); fix the path or pass --allow-missing to drop such rows"
        )
    imp.dropped["missing image"] = int((~present).sum())
    imp.df = imp.df[present].reset_index(drop=True)
    return imp


def with_label_names(df: pd.DataFrame, classes: tuple[str, ...]) -> pd.DataFrame:
    """Add ``label_name`` from ``label`` and put the required columns first."""
    labels = df[COL_LABEL].to_numpy()
    df[COL_LABEL] = labels.astype(np.int16)
    df[COL_LABEL_NAME] = pd.Series([classes[l] if l != UNLABELLED else None for l in labels], index=df.index, dtype=object)
    first = [COL_PATH, COL_SPLIT, COL_LABEL, COL_LABEL_NAME]
    return df[first + [c for c in df.columns if c not in first]]


def require_rows(rows: list[Any], what: str) -> None:
    if not rows:
        raise FerError(f"{what}: no images found (empty dataset); check the path and the layout in data/README.md")
