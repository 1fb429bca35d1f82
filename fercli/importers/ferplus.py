"""FERPlus: ``FER2013Train|Valid|Test/label.csv`` + 48x48 PNGs, ten crowd votes per image.

``label.csv`` rows (no header): ``file,"(x, y, w, h)",neutral,...,contempt,unknown,NF``. The single
label follows the FERPlus reference code's ``majority`` mode: votes of 1 are dropped as outliers and
the winner needs more than half of the remaining votes; rows won by unknown or not-a-face (or by
contempt with ``--classes 7``) stay in the manifest unlabelled. All ten vote counts are kept as
``votes_*`` columns, and ``dist_*`` holds each row's vote shares over the class list (the crowd's
label distribution; NaN when no annotator chose a class in the list).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from fercli.classes import CLASSES_8, FERPLUS_VOTES, vocabulary
from fercli.errors import FerError
from fercli.importers.base import ImportConfig, Imported, check_duplicates, drop_missing, safe_rel, with_label_names
from fercli.progress import Track, no_track
from fercli.schema import UNLABELLED, VOTE_PREFIX, dist_columns

SPLIT_DIRS = {"FER2013Train": "train", "FER2013Valid": "valid", "FER2013Test": "test"}


def detect(src: Path) -> bool:
    return any((src / d / "label.csv").is_file() for d in SPLIT_DIRS)


def majority_labels(votes: np.ndarray) -> np.ndarray:
    """Winning category per row by the FERPlus ``majority`` rule, -1 when there is none.

    ``votes`` is (N, 10) in :data:`FERPLUS_VOTES` order. Returned indices are into that order, so
    8 (unknown) and 9 (not a face) can win.
    """
    v = np.where(votes <= 1, 0, votes).astype(np.int64)
    total = v.sum(axis=1)
    best = v.argmax(axis=1)
    top = v.max(axis=1)
    return np.where((top > 0) & (top * 2 > total), best, -1)


def _read_label_csv(path: Path, split_dir: str) -> tuple[list[str], list[list[float]], list[list[int]], list[int]]:
    names, boxes, votes, lines = [], [], [], []
    with open(path, newline="") as fh:
        for line_no, row in enumerate(csv.reader(fh), start=1):
            if not row or all(not c.strip() for c in row):
                continue
            where = f"{path}:{line_no}"
            if len(row) != 12:
                raise FerError(f"{where}: expected 12 fields (file, box, 10 vote counts), got {len(row)}; is this a FERPlus label.csv?")
            name = safe_rel(row[0], where)
            try:
                box = [float(x) for x in row[1].strip().strip("()").split(",")]
            except ValueError:
                box = []
            if len(box) != 4:
                raise FerError(f"{where}: face box {row[1]!r} is not of the form \"(x, y, w, h)\"")
            try:
                counts = [int(x) for x in row[2:]]
            except ValueError:
                raise FerError(f"{where}: vote counts must be integers, got {row[2:]}") from None
            if min(counts) < 0:
                raise FerError(f"{where}: negative vote count in {counts}")
            names.append(f"{split_dir}/{name}")
            boxes.append(box)
            votes.append(counts)
            lines.append(line_no)
    return names, boxes, votes, lines


def import_ferplus(cfg: ImportConfig, track: Track = no_track) -> Imported:
    src = cfg.src
    classes = vocabulary(cfg.classes or 8)
    present = [d for d in SPLIT_DIRS if (src / d / "label.csv").is_file()]
    if not present:
        raise FerError(
            f"{src}: no FER2013Train/label.csv, FER2013Valid/label.csv or FER2013Test/label.csv; "
            "point at the folder made by FERPlus's generate_training_data.py (see data/README.md)"
        )
    frames = []
    for d in track(present, "reading FERPlus label files"):
        label_file = src / d / "label.csv"
        names, boxes, votes, lines = _read_label_csv(label_file, d)
        if not names:
            raise FerError(f"{label_file}: empty label file; regenerate it with FERPlus's generate_training_data.py")
        check_duplicates(names, lines, label_file)
        vote_arr = np.asarray(votes, dtype=np.int64)
        winner = majority_labels(vote_arr)
        # Map the winning FERPlus category to the class list by name; unknown / NF / absent -> unlabelled.
        to_class = np.array([classes.index(c) if c in classes else UNLABELLED for c in FERPLUS_VOTES])
        label = np.where(winner >= 0, to_class[np.maximum(winner, 0)], UNLABELLED)
        df = pd.DataFrame({"path": names, "split": SPLIT_DIRS[d], "label": label})
        df["dataset"] = "ferplus"
        for j, col in enumerate(("box_x", "box_y", "box_w", "box_h")):
            df[col] = np.asarray(boxes, dtype=np.float32)[:, j]
        for j, cat in enumerate(FERPLUS_VOTES):
            df[f"{VOTE_PREFIX}{cat}"] = vote_arr[:, j].astype(np.int16)
        class_votes = vote_arr[:, [FERPLUS_VOTES.index(c) for c in classes]].astype(np.float64)
        totals = class_votes.sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            dist = np.where(totals > 0, class_votes / totals, np.nan)
        for j, col in enumerate(dist_columns(classes)):
            df[col] = dist[:, j].astype(np.float32)
        imp = Imported(with_label_names(df, classes), classes, src, "ferplus", [label_file])
        imp = drop_missing(imp, lines, label_file, cfg.allow_missing)
        frames.append(imp)
    out = Imported(
        pd.concat([f.df for f in frames], ignore_index=True), classes, src, "ferplus",
        [p for f in frames for p in f.source_files],
    )
    for f in frames:
        for k, v in f.dropped.items():
            out.dropped[k] = out.dropped.get(k, 0) + v
    if classes != CLASSES_8:
        out.notes.append("rows won by contempt are unlabelled (--classes 7)")
    return out
