"""ImageFolder-style datasets: class subfolders, optionally under ``train/``, ``valid/``, ``test/``.

Class folders are matched to the canonical classes by name (``happy``, ``Happiness`` ...). A tree
with no class folders at all is imported unlabelled (photos to align or predict on); a tree where
some folders are classes and others are not is refused, naming the odd folder. Without split
folders every image is in ``train``. Images are found recursively (jpg, jpeg, png, bmp, webp, any
case); hidden files and folders are skipped.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from fercli.classes import canonical_name, vocabulary
from fercli.errors import FerError
from fercli.importers._common import ImportConfig, Imported, is_image, require_rows, with_label_names
from fercli.progress import Track, no_track
from fercli.schema import UNLABELLED

SPLIT_NAMES = {"train": "train", "training": "train", "valid": "valid", "val": "valid", "validation": "valid", "test": "test"}


def _images_under(folder: Path, root: Path) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            if not f.startswith(".") and is_image(f):
                found.append(Path(dirpath, f).relative_to(root).as_posix())
    return found


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def detect(src: Path) -> bool:
    return src.is_dir()


def scan_folder(src: Path) -> list[tuple[str, str, str | None]]:
    """(relative path, split, canonical class name or None) for every image under ``src``."""
    if not src.is_dir():
        raise FerError(f"{src}: not a directory")
    top = _subdirs(src)
    split_dirs = [d for d in top if d.name.lower() in SPLIT_NAMES]
    if split_dirs:
        others = [d.name for d in top if d not in split_dirs] + [f for f in os.listdir(src) if is_image(f)]
        if others:
            raise FerError(f"{src}: mixes split folders ({', '.join(d.name for d in split_dirs)}) with {others[0]!r}; "
                           "put every image under train/, valid/ or test/")
        levels = [(d, SPLIT_NAMES[d.name.lower()]) for d in split_dirs]
    else:
        levels = [(src, "train")]
    rows: list[tuple[str, str, str | None]] = []
    for level, split in levels:
        subdirs = _subdirs(level)
        named = {d: canonical_name(d.name) for d in subdirs}
        if any(named.values()):
            odd = [d.name for d, n in named.items() if n is None]
            if odd:
                raise FerError(f"{level / odd[0]}: folder name is not an expression class; rename it to one of "
                               "neutral, happiness, surprise, sadness, anger, disgust, fear, contempt (or remove it)")
            for f in os.listdir(level):
                if is_image(f):
                    rows.append(((level / f).relative_to(src).as_posix(), split, None))
            for d, name in named.items():
                rows.extend((p, split, name) for p in _images_under(d, src))
        else:
            rows.extend((p, split, None) for p in _images_under(level, src))
    return rows


def import_folder(cfg: ImportConfig, track: Track = no_track) -> Imported:
    rows = scan_folder(cfg.src)
    require_rows(rows, str(cfg.src))
    present = {name for _, _, name in rows if name}
    classes = vocabulary(cfg.classes or (8 if "contempt" in present else 7))
    index = {c: i for i, c in enumerate(classes)}
    dropped = {}
    kept = []
    for path, split, name in rows:
        if name is not None and name not in index:
            dropped[f"class {name} (--classes {len(classes)})"] = dropped.get(f"class {name} (--classes {len(classes)})", 0) + 1
            continue
        kept.append((path, split, index[name] if name else UNLABELLED))
    require_rows(kept, str(cfg.src))
    df = pd.DataFrame(kept, columns=["path", "split", "label"])
    df["dataset"] = "folder"
    notes = [] if present else ["no class folders: images are unlabelled"]
    return Imported(with_label_names(df, classes), classes, cfg.src, "folder", [], dropped, notes)
