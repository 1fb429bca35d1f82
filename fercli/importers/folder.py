"""ImageFolder-style datasets: class subfolders, optionally under ``train/``, ``valid/``, ``test/``.

Class folders are matched to the canonical classes by name (``happy``, ``Happiness`` ...). A tree
with no class folders at all is imported unlabelled (photos to align or predict on); a tree where
some folders are classes and others are not is refused, naming the odd folder. Images are found
recursively (jpg, jpeg, png, bmp, webp, any case); hidden files and folders are skipped.

Class folders without ``train/``, ``valid/``, ``test/`` folders (a plain photo collection) are split
into train, valid and test (80/10/10 by default, ``split_fractions``), stratified by class and
seeded (:func:`assign_splits`): every stage then agrees on which images it may train on, and
`fer eval` scores images no stage trained on. The split depends only on each image's path and the
seed, so importing or aligning the same folder again gives the same split, and adding photos moves
few others. ``no_split`` keeps every image in ``train``.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import pandas as pd

from fercli.classes import canonical_name, vocabulary
from fercli.errors import FerError
from fercli.importers.base import ImportConfig, Imported, is_image, require_rows, with_label_names
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


def has_split_folders(src: Path) -> bool:
    return src.is_dir() and any(d.name.lower() in SPLIT_NAMES for d in _subdirs(src))


def split_counts(n: int, fractions: tuple[float, ...]) -> tuple[int, int, int]:
    """(train, valid, test) image counts for a class of ``n`` images; classes of 3 or more images get
    at least one valid and one test image where those fractions are not 0."""
    _, fv, ft = fractions
    n_valid, n_test = math.floor(n * fv + 0.5), math.floor(n * ft + 0.5)
    if n >= 3:
        n_valid, n_test = max(n_valid, 1 if fv > 0 else 0), max(n_test, 1 if ft > 0 else 0)
    while n_valid + n_test >= n and n_valid + n_test > 0:  # leave train at least one image
        if n_valid >= n_test and n_valid > 0:
            n_valid -= 1
        else:
            n_test -= 1
    return n - n_valid - n_test, n_valid, n_test


def assign_splits(paths: list[str], labels: list[int], fractions: tuple[float, ...], seed: int = 0) -> list[str]:
    """A stratified, seeded train/valid/test split: within each class, images are ordered by a hash of
    (seed, path) and the first ones go to test, the next to valid, the rest to train. Unlabelled
    images stay in train."""
    out = ["train"] * len(paths)
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        if label != UNLABELLED:
            by_class.setdefault(int(label), []).append(i)
    for members in by_class.values():
        order = sorted(members, key=lambda i: hashlib.sha256(f"{seed}:{paths[i]}".encode()).hexdigest())
        _, n_valid, n_test = split_counts(len(order), fractions)
        for i in order[:n_test]:
            out[i] = "test"
        for i in order[n_test:n_test + n_valid]:
            out[i] = "valid"
    return out


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
    if present and not has_split_folders(cfg.src):
        labelled = int((df["label"] != UNLABELLED).sum())
        if cfg.no_split:
            notes.append(f"no train/valid/test folders: all {labelled:,} labelled images are in train (--no-split); "
                         "training then needs --val-fraction, and nothing is held out for fer eval")
        else:
            df["split"] = assign_splits(df["path"].tolist(), df["label"].tolist(), tuple(cfg.split_fractions),
                                        cfg.split_seed)
            n = df[df["label"] != UNLABELLED]["split"].value_counts()
            fr = "/".join(f"{round(f * 100):g}" for f in cfg.split_fractions)
            notes.append(f"no train/valid/test folders: split {labelled:,} labelled images {fr} into train "
                         f"{int(n.get('train', 0)):,}, valid {int(n.get('valid', 0)):,}, test {int(n.get('test', 0)):,}, "
                         f"stratified by class (seed {cfg.split_seed}; the same split every run; change it with "
                         "--split-fractions TRAIN,VALID,TEST, or keep all in train with --no-split)")
    return Imported(with_label_names(df, classes), classes, cfg.src, "folder", [], dropped, notes)
