"""Dataset importers: each turns a dataset as researchers have it on disk into one manifest.

Formats: ``rafdb``, ``affectnet``, ``ferplus``, ``fer2013``, ``folder``. :func:`detect_format`
recognises a dataset root by its layout (``fer align`` uses it on dataset roots), and
:func:`run_import` writes the manifest atomically and makes it the workspace's current dataset.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fercli.errors import FerError
from fercli.importers import affectnet, fer2013, ferplus, folder, rafdb
from fercli.importers.base import ImportConfig, Imported
from fercli.progress import Track, no_track
from fercli.stage_configs import parse_split_renames  # light, for ImportConfig's checks; re-exported here
from fercli.schema import IMPORTED_MANIFEST, Manifest, make_provenance, write_manifest
from fercli.workspace import Workspace

log = logging.getLogger(__name__)

Importer = Callable[..., Imported]

# Detection order matters: a RAF-DB or FERPlus root is also a folder of images.
IMPORTERS: dict[str, tuple[Callable[[Path], bool], Importer]] = {
    "rafdb": (rafdb.detect, rafdb.import_rafdb),
    "ferplus": (ferplus.detect, ferplus.import_ferplus),
    "affectnet": (affectnet.detect, affectnet.import_affectnet),
    "fer2013": (fer2013.detect, fer2013.import_fer2013),
    "folder": (folder.detect, folder.import_folder),
}
FORMATS = tuple(IMPORTERS)

__all__ = ["FORMATS", "ImportConfig", "ImportResult", "Imported", "detect_format", "load_dataset", "run_import"]


def detect_format(src: str | Path) -> str | None:
    """The importer whose layout ``src`` has (the first match in :data:`IMPORTERS`), or None."""
    src = Path(src)
    if not src.exists():
        return None
    for name, (detect, _) in IMPORTERS.items():
        if detect(src):
            return name
    return None


def load_dataset(cfg: ImportConfig, track: Track = no_track) -> Imported:
    """Run the importer for ``cfg.format`` (``auto`` detects it) without writing anything."""
    if not cfg.src.exists():
        raise FerError(f"{cfg.src}: no such file or directory")
    fmt = cfg.format
    if fmt == "auto":
        fmt = detect_format(cfg.src) or ""
    if fmt not in IMPORTERS:
        raise FerError(f"unknown dataset format {cfg.format!r}; choose one of {', '.join(FORMATS)}, or auto "
                       "(detect the layout)" if cfg.format != "auto" else
                       f"{cfg.src}: auto found no known dataset layout; name the format: {', '.join(FORMATS)}")
    if cfg.classes not in (None, 7, 8):
        raise FerError(f"--classes must be 7 or 8, got {cfg.classes}")
    renames = parse_split_renames(cfg.rename_splits)
    imp = IMPORTERS[fmt][1](cfg, track)
    if imp.df.empty:
        raise FerError(f"{cfg.src}: no images left after import (empty dataset)")
    if renames:
        present = set(imp.df["split"])
        for old, new in renames.items():
            if old not in present:
                raise FerError(f"--rename-split {old}={new}: {cfg.src} has no {old!r} split (it has {', '.join(sorted(present))})")
        imp.df["split"] = imp.df["split"].replace(renames)
        imp.notes.append("splits renamed: " + ", ".join(f"{o} -> {n}" for o, n in renames.items()))
    return imp


@dataclass
class ImportResult:
    manifest: Manifest
    imported: Imported
    out: Path

    def summary(self) -> dict[str, Any]:
        df = self.manifest.df
        return {
            "format": self.imported.dataset,
            "out": str(self.out),
            "root": str(self.manifest.root),
            "classes": list(self.manifest.classes),
            "rows": int(len(df)),
            "labelled": int((df["label"] >= 0).sum()),
            "splits": {s: int(n) for s, n in df["split"].value_counts().sort_index().items()},
            "dropped": self.imported.dropped,
            "notes": self.imported.notes,
        }


def run_import(cfg: ImportConfig, ws: Workspace, track: Track = no_track, command: str | None = None) -> ImportResult:
    """Import a dataset, write its manifest atomically and make it the workspace's current dataset."""
    out = Path(cfg.out) if cfg.out is not None else ws.root / IMPORTED_MANIFEST
    if cfg.format in ("fer2013", "auto") and cfg.images_dir is None:
        cfg.images_dir = out.parent / "fer2013_images"
    imp = load_dataset(cfg, track)
    df = imp.df
    summary = {"rows": int(len(df)), "labelled": int((df["label"] >= 0).sum()), "classes": len(imp.classes)}
    inputs = {"source": {"path": str(p), "sha256": ws.sha256(p)} for p in imp.source_files[:1]}
    if len(imp.source_files) > 1:
        inputs = {f"source{i}": {"path": str(p), "sha256": ws.sha256(p)} for i, p in enumerate(imp.source_files)}
    prov = make_provenance("dataset", inputs=inputs, summary=summary, command=command)
    manifest = write_manifest(df, imp.classes, imp.root, out, provenance=prov, extra_meta={"dataset": imp.dataset})
    ws.record("dataset", out)
    for reason, n in imp.dropped.items():
        log.info("dropped %d rows: %s", n, reason)
    return ImportResult(manifest, imp, out)
