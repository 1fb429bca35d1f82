"""RAF-DB basic: ``EmoLabel/list_patition_label.txt`` with lines ``train_00001.jpg 5``.

Codes 1-7 are Surprise, Fear, Disgust, Happiness, Sadness, Anger, Neutral (mapped by name). Images
are the aligned 100x100 crops ``Image/aligned/<stem>_aligned.jpg`` or the originals
``Image/original/<name>`` (``--images aligned|original``; ``auto`` prefers aligned). With original
images, the manual five-point landmarks (``Annotation/manual/<stem>_manu_attri.txt``: five ``x y``
lines, then attributes) and boxes (``Annotation/boundingbox/<stem>_boundingbox.txt``: ``x1 y1 x2 y2``)
are attached when present; they are in original-image pixels, so they are not attached to crops.
RAF-DB has no validation split: ``fer train --val-fraction`` carves one from train.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fercli.classes import RAFDB_CODES, code_map, vocabulary
from fercli.errors import FerError
from fercli.importers.base import ImportConfig, Imported, check_duplicates, drop_missing, safe_rel, with_label_names
from fercli.progress import Track, no_track
from fercli.schema import BOX_COLUMNS, LANDMARK_COLUMNS, UNLABELLED

LABEL_FILE = "EmoLabel/list_patition_label.txt"


def detect(src: Path) -> bool:
    return (src / LABEL_FILE).is_file()


def _read_floats(path: Path, lines: int, per_line: int) -> list[float] | None:
    """First ``lines`` lines of ``per_line`` numbers each, or None if the file is absent."""
    if not path.is_file():
        return None
    rows = path.read_text().split("\n")
    values: list[float] = []
    for i in range(lines):
        parts = rows[i].split() if i < len(rows) else []
        try:
            nums = [float(x) for x in parts[:per_line]]
        except ValueError:
            nums = []
        if len(nums) != per_line:
            raise FerError(f"{path}:{i + 1}: expected {per_line} numbers, got {rows[i] if i < len(rows) else 'end of file'!r}")
        values.extend(nums)
    return values


def import_rafdb(cfg: ImportConfig, track: Track = no_track) -> Imported:
    src = cfg.src
    label_file = src / LABEL_FILE
    if not label_file.is_file():
        raise FerError(f"{src}: no {LABEL_FILE}; point at the RAF-DB 'basic' folder (see data/README.md)")
    classes = vocabulary(cfg.classes or 7)
    to_index = code_map(RAFDB_CODES, classes)
    variant = cfg.images
    if variant == "auto":
        variant = "aligned" if (src / "Image" / "aligned").is_dir() else "original"
    if variant not in ("aligned", "original"):
        raise FerError(f"--images must be aligned, original or auto, got {cfg.images!r}")

    names, splits, labels, lines = [], [], [], []
    for line_no, raw in enumerate(label_file.read_text().splitlines(), start=1):
        if not raw.strip():
            continue
        where = f"{label_file}:{line_no}"
        parts = raw.split()
        if len(parts) != 2:
            raise FerError(f"{where}: expected '<image> <code>', got {raw.strip()!r}")
        name = safe_rel(parts[0], where)
        try:
            code = int(parts[1])
        except ValueError:
            raise FerError(f"{where}: label code {parts[1]!r} is not an integer (expected 1-7)") from None
        if code not in to_index:
            raise FerError(f"{where}: unknown label code {code} (RAF-DB basic uses 1-7)")
        split = "train" if name.startswith("train") else "test" if name.startswith("test") else None
        if split is None:
            raise FerError(f"{where}: cannot tell the split of {name!r} (names start with train_ or test_)")
        names.append(name)
        splits.append(split)
        labels.append(UNLABELLED if to_index[code] is None else to_index[code])
        lines.append(line_no)
    if not names:
        raise FerError(f"{label_file}: empty label file (no images listed)")
    check_duplicates(names, lines, label_file)

    stems = [Path(n).stem for n in names]
    if variant == "aligned":
        paths = [f"Image/aligned/{s}_aligned.jpg" for s in stems]
    else:
        paths = [f"Image/original/{n}" for n in names]
    df = pd.DataFrame({"path": paths, "split": splits, "label": labels})
    df["dataset"] = "rafdb"
    notes = [f"images: {variant}"]
    if variant == "original" and (src / "Annotation" / "manual").is_dir():
        lm = np.full((len(df), 10), np.nan, dtype=np.float32)
        box = np.full((len(df), 4), np.nan, dtype=np.float32)
        for i, s in enumerate(track(stems, "reading RAF-DB annotations")):
            pts = _read_floats(src / "Annotation" / "manual" / f"{s}_manu_attri.txt", 5, 2)
            if pts is not None:
                lm[i] = pts
            bb = _read_floats(src / "Annotation" / "boundingbox" / f"{s}_boundingbox.txt", 1, 4)
            if bb is not None:
                box[i] = [bb[0], bb[1], bb[2] - bb[0], bb[3] - bb[1]]
        for j, col in enumerate(LANDMARK_COLUMNS):
            df[col] = lm[:, j]
        for j, col in enumerate(BOX_COLUMNS):
            df[col] = box[:, j]
        notes.append(f"manual landmarks for {int((~np.isnan(lm[:, 0])).sum()):,} images")
    imp = Imported(with_label_names(df, classes), classes, src, "rafdb", [label_file], notes=notes)
    return drop_missing(imp, lines, label_file, cfg.allow_missing)
