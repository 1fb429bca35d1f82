"""What `fer align` writes: crop names under DST, manifest rows, and the manifest table.

Every source image gets at least one row: ``status`` (:data:`fercli.imagestatus.STATUSES`) says
what happened (``ok`` rows have a crop) and ``reason`` why.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import pandas as pd

from fercli.errors import FerError
from fercli.imagestatus import STATUSES  # one vocabulary with fer predict
from fercli.importers.base import IMAGE_EXTS
from fercli.schema import BOX_COLUMNS, COL_LABEL, COL_LABEL_NAME, COL_PATH, COL_SPLIT, LANDMARK_COLUMNS

ALIGN_COLUMNS = ("src_path", "face_index", "score", "status", "reason")
NO_FACE_INDEX = -1  # face_index of rows without a crop
# A class that keeps less than this share of its images is reported: a detector that misses one
# expression (Haar on disgust, say) otherwise removes a class from the dataset without a word.
CLASS_LOSS_WARN = 0.5


def crop_name(src_rel: str, face_index: int, multi: bool) -> str:
    """Crop path (relative to DST) for face ``face_index`` of ``src_rel``: the source path itself,
    or ``<stem>_face<i><ext>`` for the second and later faces with ``--faces all``."""
    p = PurePosixPath(src_rel)
    if p.suffix.lower() not in IMAGE_EXTS:
        p = p.with_name(p.name + ".png")
    if multi and face_index > 0:
        p = p.with_name(f"{p.stem}_face{face_index}{p.suffix}")
    return str(p)


def check_name_clashes(paths: list[str], multi: bool) -> None:
    """Refuse sources whose crops would land on the same name under DST (FerError naming both)."""
    names = set(paths)
    for p in paths:
        q = crop_name(p, 0, multi)
        if q != p and q in names:
            raise FerError(f"source images {p!r} and {q!r} would both be written to {q!r}; rename one of them")
    if multi:
        for p in paths:
            pp = PurePosixPath(p)
            m = re.fullmatch(r"(.*)_face\d+", pp.stem)
            if m and str(pp.with_name(m.group(1) + pp.suffix)) in names:
                raise FerError(
                    f"source image {p!r} has the name --faces all gives to extra faces of "
                    f"{str(pp.with_name(m.group(1) + pp.suffix))!r}; rename it or use --faces largest"
                )


def face_row(path: str, face_index: int, score: float | None, box: np.ndarray | None, lms: np.ndarray | None,
             status: str, reason: str | None) -> dict[str, Any]:
    """One manifest row (as journaled); ``box`` is x1, y1, x2, y2, stored as box_x, box_y, box_w, box_h."""
    row: dict[str, Any] = {"path": path, "face_index": face_index, "score": score, "status": status, "reason": reason}
    if box is not None:
        x1, y1, x2, y2 = (float(v) for v in box)
        row.update(box_x=x1, box_y=y1, box_w=x2 - x1, box_h=y2 - y1)
    if lms is not None:
        row.update(zip(LANDMARK_COLUMNS, (float(v) for v in np.asarray(lms).reshape(-1))))
    return row


def problem_row(path: str, status: str, reason: str) -> dict[str, Any]:
    """The one row of an image that has no crop."""
    return face_row(path, NO_FACE_INDEX, None, None, None, status, reason)


def build_table(source_df: pd.DataFrame, entries: dict[str, dict[str, Any]],
                detector: str) -> tuple[pd.DataFrame, dict[str, int]]:
    """The manifest of the journaled ``entries`` ({src path: entry}), in source order, with the
    source's other columns carried over; and the number of rows per status."""
    carried = [c for c in source_df.columns
               if c != COL_PATH and c not in BOX_COLUMNS and c not in LANDMARK_COLUMNS and c not in ALIGN_COLUMNS]
    rows, index = [], []
    for i, p in enumerate(source_df[COL_PATH]):
        e = entries.get(p)
        if e is None:
            continue
        for r in e["rows"]:
            rows.append(r)
            index.append(i)
    if not rows:
        return pd.DataFrame(), {}
    faces = pd.DataFrame(rows)
    base = source_df[carried].iloc[index].reset_index(drop=True)
    out = pd.DataFrame({COL_PATH: faces[COL_PATH]})
    for c in carried:
        out[c] = base[c]
    out["src_path"] = source_df[COL_PATH].iloc[index].to_numpy()
    out["face_index"] = faces["face_index"].astype(np.int16)
    for c in ("score", *BOX_COLUMNS, *LANDMARK_COLUMNS):
        out[c] = pd.to_numeric(faces[c], errors="coerce").astype(np.float32) if c in faces else np.float32(np.nan)
    out["status"] = faces["status"].astype(object)
    out["reason"] = faces["reason"].astype(object) if "reason" in faces else None
    if detector == "none":
        out = out.drop(columns=[*BOX_COLUMNS, *LANDMARK_COLUMNS, "score"])
    elif not out[list(BOX_COLUMNS)].notna().any().any():
        out = out.drop(columns=list(BOX_COLUMNS))
    counts = {s: int(n) for s, n in out["status"].value_counts().items()}
    counts = {s: counts[s] for s in STATUSES if s in counts} | {s: n for s, n in counts.items() if s not in STATUSES}
    first = [COL_PATH, COL_SPLIT, COL_LABEL, COL_LABEL_NAME]
    return out[first + [c for c in out.columns if c not in first]], counts


def class_losses(df: pd.DataFrame, classes: tuple[str, ...], detector: str) -> list[str]:
    """One warning per labelled class that kept less than ``CLASS_LOSS_WARN`` of its source images."""
    if df.empty or COL_LABEL not in df or "status" not in df:
        return []
    per_image = df[df[COL_LABEL] >= 0].groupby("src_path").agg(label=(COL_LABEL, "first"),
                                                              ok=("status", lambda s: bool((s == "ok").any())))
    out = []
    for label, g in per_image.groupby("label"):
        kept, total = int(g["ok"].sum()), len(g)
        if kept < CLASS_LOSS_WARN * total:
            name = classes[int(label)] if 0 <= int(label) < len(classes) else str(label)
            out.append(f"warning: class {name!r} kept a face in {kept:,} of {total:,} images"
                       f"{' (the class is gone from the dataset)' if kept == 0 else ''}; detector {detector!r} "
                       "misses these faces: try --detector retinaface, or --detector none for pre-cropped faces")
    return out
