"""AffectNet: ``training.csv`` / ``validation.csv`` with boxes, 68 landmarks and expression codes.

Columns: subDirectory_filePath, face_x, face_y, face_width, face_height, facial_landmarks
("x;y;..." for 68 points), expression, valence, arousal. Codes 0-7 are Neutral, Happy, Sad,
Surprise, Fear, Disgust, Anger, Contempt (mapped by name); 8-10 (None, Uncertain, No-Face) are
dropped, and so is Contempt with ``--classes 7`` (AffectNet-7). The official validation set is
the test split. The 68 points are reduced to the five used for alignment: eye centres (mean of
points 36-41 and 42-47, 0-based), nose tip (30), mouth corners (48, 54).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fercli.classes import AFFECTNET_CODES, code_map, vocabulary
from fercli.errors import FerError
from fercli.importers.base import ImportConfig, Imported, check_duplicates, drop_missing, safe_rel, with_label_names
from fercli.progress import Track, no_track
from fercli.schema import BOX_COLUMNS, LANDMARK_COLUMNS

CSV_FILES = {"training.csv": "train", "validation.csv": "test"}
LIST_DIR = "Manually_Annotated_file_lists"
IMAGE_DIR = "Manually_Annotated_Images"
COLUMNS = ("subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "facial_landmarks", "expression")


def _csv_dir(src: Path) -> Path | None:
    for d in (src, src / LIST_DIR):
        if any((d / f).is_file() for f in CSV_FILES):
            return d
    return None


def detect(src: Path) -> bool:
    return _csv_dir(src) is not None


def five_points(points68: np.ndarray) -> np.ndarray:
    """(N, 68, 2) -> (N, 5, 2): left eye, right eye (image left/right), nose tip, mouth corners."""
    return np.stack(
        [points68[:, 36:42].mean(axis=1), points68[:, 42:48].mean(axis=1), points68[:, 30], points68[:, 48], points68[:, 54]],
        axis=1,
    )


def _parse_landmarks(values, path: Path, lines: list[int]) -> np.ndarray:
    out = np.empty((len(lines), 68, 2), dtype=np.float32)
    for i, s in enumerate(values):
        try:
            nums = np.array(str(s).split(";"), dtype=np.float32)
        except ValueError:
            nums = np.empty(0)
        if nums.size != 136:
            raise FerError(f"{path}:{lines[i]}: facial_landmarks must hold 68 'x;y' pairs (136 numbers), got {nums.size}")
        out[i] = nums.reshape(68, 2)
    return out


def import_affectnet(cfg: ImportConfig, track: Track = no_track) -> Imported:
    src = cfg.src
    csv_dir = _csv_dir(src)
    if csv_dir is None:
        raise FerError(f"{src}: no training.csv or validation.csv (here or in {LIST_DIR}/); see data/README.md")
    classes = vocabulary(cfg.classes or 8)
    to_index = code_map(AFFECTNET_CODES, classes)
    root = src / IMAGE_DIR if (src / IMAGE_DIR).is_dir() else src
    imports, dropped = [], {}
    for fname, split in CSV_FILES.items():
        path = csv_dir / fname
        if not path.is_file():
            continue
        try:
            # Blank lines are kept (and dropped below) so that every row knows its line in the file.
            raw = pd.read_csv(path, dtype=str, keep_default_na=False, skip_blank_lines=False)
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise FerError(f"{path}: malformed CSV ({' '.join(str(exc).split())})") from exc
        except pd.errors.EmptyDataError:
            raise FerError(f"{path}: empty file; expected a header and one row per image") from None
        missing = [c for c in COLUMNS if c not in raw.columns]
        if missing:
            raise FerError(f"{path}: missing column(s) {', '.join(missing)}; is this an AffectNet {fname}?")
        line_no = np.arange(len(raw)) + 2  # line 1 is the header
        blank = (raw.fillna("") == "").all(axis=1).to_numpy()
        raw, lines = raw[~blank].reset_index(drop=True), line_no[~blank].tolist()
        if raw.empty:
            raise FerError(f"{path}: no rows (empty dataset)")
        codes = pd.to_numeric(raw["expression"], errors="coerce")
        bad = codes.isna() | ~codes.isin(list(to_index))
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise FerError(f"{path}:{lines[i]}: unknown expression code {raw['expression'].iloc[i]!r} (AffectNet uses 0-10)")
        names = [safe_rel(p, f"{path}:{ln}") for p, ln in zip(raw["subDirectory_filePath"], lines)]
        check_duplicates(names, lines, path)
        label = codes.astype(int).map(to_index)
        keep = label.notna().to_numpy()
        for code in sorted(set(codes[~keep].astype(int))):
            key = f"expression {code} ({AFFECTNET_CODES[code] or 'not an expression'})"
            dropped[key] = dropped.get(key, 0) + int((codes[~keep] == code).sum())
        raw, names = raw[keep].reset_index(drop=True), [n for n, k in zip(names, keep) if k]
        lines = [ln for ln, k in zip(lines, keep) if k]
        df = pd.DataFrame({"path": names, "split": split, "label": label[keep].astype(int).to_numpy()})
        df["dataset"] = "affectnet"
        box_src = ("face_x", "face_y", "face_width", "face_height")
        for col, s in zip(BOX_COLUMNS, box_src):
            values = pd.to_numeric(raw[s], errors="coerce")
            if values.isna().any():
                i = int(np.flatnonzero(values.isna().to_numpy())[0])
                raise FerError(f"{path}:{lines[i]}: {s} {raw[s].iloc[i]!r} is not a number")
            df[col] = values.astype(np.float32).to_numpy()
        pts = five_points(_parse_landmarks(track(raw["facial_landmarks"], f"parsing {fname} landmarks", len(raw)), path, lines))
        for j, col in enumerate(LANDMARK_COLUMNS):
            df[col] = pts.reshape(len(df), 10)[:, j]
        for col in ("valence", "arousal"):
            if col in raw.columns:
                df[col] = pd.to_numeric(raw[col], errors="coerce").astype(np.float32).to_numpy()
        imp = Imported(with_label_names(df, classes), classes, root, "affectnet", [path])
        imports.append(drop_missing(imp, lines, path, cfg.allow_missing))
    out = Imported(pd.concat([i.df for i in imports], ignore_index=True), classes, root, "affectnet",
                   [p for i in imports for p in i.source_files], dropped)
    for i in imports:
        for k, v in i.dropped.items():
            out.dropped[k] = out.dropped.get(k, 0) + v
    return out
