"""What `fer align` reads: SRC (a folder, a dataset root or a manifest) as a table of source images.

Folders and dataset roots are read through :mod:`fercli.importers` (the same importers as
``fer data import``), so a photo folder is split and labelled the same way either way.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from fercli.errors import FerError
from fercli.fileio import sha256_file
from fercli.importers.base import ImportConfig
from fercli.schema import BOX_COLUMNS, COL_PATH, LANDMARK_COLUMNS, MANIFEST_NAME, read_manifest
from fercli.workspace import Workspace


@dataclass
class Source:
    """What to align: one row per source image, paths relative to ``root``."""

    df: pd.DataFrame
    classes: tuple[str, ...]
    root: Path
    kind: str  # "manifest" or an importer format (folder, rafdb, ...)
    path: Path  # what the user named: a folder, dataset root or manifest file
    dataset: str | None = None
    notes: list[str] = field(default_factory=list)

    def fingerprint(self, workspace: Workspace | None = None) -> str:
        """The manifest file's sha256, or for a folder or dataset root a hash of its image paths."""
        if self.kind == "manifest":
            return workspace.sha256(self.path) if workspace is not None else sha256_file(self.path)
        h = hashlib.sha256()
        for p in self.df[COL_PATH]:
            h.update(p.encode())
            h.update(b"\n")
        return h.hexdigest()


def path_inside(child: Path, parent: Path) -> bool:
    """Whether ``child`` is ``parent`` or lies under it (links resolved)."""
    try:
        child.resolve().relative_to(parent.resolve())
        return True
    except ValueError:
        return False


def load_source(src: str | os.PathLike[str], dst: Path | None = None,
                split_fractions: tuple[float, ...] = (0.8, 0.1, 0.1), no_split: bool = False) -> Source:
    """Turn SRC (folder, folder holding a manifest.parquet, dataset root or manifest parquet) into a
    :class:`Source`. A folder of class folders without split folders is split as ``split_fractions``
    says (train, valid, test), unless ``no_split``."""
    from fercli.importers import detect_format, load_dataset

    src = Path(src)
    if not src.exists():
        raise FerError(f"{src}: no such file or directory")
    if src.is_dir() and (src / MANIFEST_NAME).is_file():
        # A folder that carries its own manifest (e.g. `fer demo`'s sample, with landmarks) is read
        # through it, so labels, splits and landmarks the folder layout cannot hold are kept.
        src = src / MANIFEST_NAME
    if src.is_file():
        return _manifest_source(src)
    if dst is not None and path_inside(dst, src):
        raise FerError(f"DST {dst} is inside SRC {src}; its crops would be read as source images: choose a DST outside {src}")
    fmt = detect_format(src)
    if fmt == "fer2013":
        raise FerError(f"{src}: holds fer2013.csv; run `fer data import fer2013 {src}` first, then `fer align` on the manifest it writes")
    imp = load_dataset(ImportConfig(format=fmt or "folder", src=src, split_fractions=tuple(split_fractions),
                                    no_split=no_split))
    return Source(imp.df.reset_index(drop=True), imp.classes, imp.root, imp.dataset, src, imp.dataset, list(imp.notes))


def _manifest_source(src: Path) -> Source:
    if src.suffix.lower() != ".parquet":
        raise FerError(
            f"{src}: SRC must be a folder of images, a dataset root or a manifest (.parquet); "
            "import other formats first with `fer data import FORMAT SRC` and align the manifest it writes"
        )
    m = read_manifest(src)
    df = m.df
    if "status" in df.columns or "align" in m.meta:
        # An aligned manifest: only rows with a crop are images, and its boxes and landmarks
        # refer to the photos the crops came from, not to the crops.
        df = df[df["status"] == "ok"] if "status" in df.columns else df
        df = df.drop(columns=[c for c in (*BOX_COLUMNS, *LANDMARK_COLUMNS) if c in df.columns])
    df = df.reset_index(drop=True)
    if df.empty:
        raise FerError(f"{src}: no rows with images to align (every row has a status other than ok)")
    if df[COL_PATH].duplicated().any():
        first = df[COL_PATH][df[COL_PATH].duplicated()].iloc[0]
        raise FerError(f"{src}: image {first!r} has several rows; fer align needs one row per source image")
    return Source(df, m.classes, m.root, "manifest", src, m.meta.get("dataset"))


def resolve_source(src: str | os.PathLike[str] | None, dst: Path, workspace: Workspace,
                   split_fractions: tuple[float, ...] = (0.8, 0.1, 0.1), no_split: bool = False) -> Source:
    """SRC as given, else the workspace's current dataset; never DST's own manifest."""
    own = (dst / MANIFEST_NAME).resolve()
    if src is None:
        art = workspace.resolve("dataset", None)
        if art.path.resolve() == own:
            # The current dataset is this DST's output: realign from what it was made from.
            given = (art.meta.get("align") or {}).get("source")
            if not given:
                raise FerError(f"{art.path}: the workspace's dataset is fer align's own output with no recorded source; pass SRC")
            src = given
        else:
            src = art.path
    if Path(src).resolve() == own:
        raise FerError(f"SRC {src} is DST's own manifest; pass the folder or manifest it was made from")
    return load_source(src, dst, split_fractions, no_split)
