"""FER2013 (Kaggle ``fer2013.csv``): ``emotion,pixels,Usage`` with 48x48 pixels as text.

Codes 0-6 are Angry, Disgust, Fear, Happy, Sad, Surprise, Neutral (mapped by name). Every row is
validated before any image is written; images are then written as PNG files named
``fer<row:07d>.png`` (the names FERPlus uses for the same rows) into ``--images-dir`` (default:
``fer2013_images`` beside the manifest), atomically, skipping files already written, so an
interrupted import resumes. Usage Training / PublicTest / PrivateTest become train / valid / test.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from fercli.classes import FER2013_CODES, code_map, vocabulary
from fercli.errors import FerError
from fercli.fileio import atomic_path
from fercli.importers.base import ImportConfig, Imported, with_label_names
from fercli.progress import Track, no_track
from fercli.schema import UNLABELLED

CSV_NAME = "fer2013.csv"
USAGE = {"Training": "train", "PublicTest": "valid", "PrivateTest": "test"}
SIDE = 48


def csv_path(src: Path) -> Path | None:
    if src.is_file() and src.suffix.lower() == ".csv":
        return src
    return src / CSV_NAME if (src / CSV_NAME).is_file() else None


def detect(src: Path) -> bool:
    return csv_path(src) is not None and (src.is_dir() or src.name == CSV_NAME)


def import_fer2013(cfg: ImportConfig, track: Track = no_track, images_dir: Path | None = None) -> Imported:
    path = csv_path(cfg.src)
    if path is None:
        raise FerError(f"{cfg.src}: no {CSV_NAME}; pass the Kaggle fer2013.csv or the folder holding it (see data/README.md)")
    images_dir = Path(images_dir or cfg.images_dir or path.parent / "fer2013_images")
    classes = vocabulary(cfg.classes or 7)
    to_index = code_map(FER2013_CODES, classes)
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise FerError(f"{path}: empty file; expected the header emotion,pixels,Usage and one row per image") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise FerError(f"{path}: malformed CSV ({' '.join(str(exc).split())})") from exc
    missing = [c for c in ("emotion", "pixels", "Usage") if c not in raw.columns]
    if missing:
        raise FerError(f"{path}: missing column(s) {', '.join(missing)}; expected the header emotion,pixels,Usage")
    if raw.empty:
        raise FerError(f"{path}: no rows (empty dataset)")

    pixels = np.empty((len(raw), SIDE, SIDE), dtype=np.uint8)
    labels = np.empty(len(raw), dtype=np.int64)
    for i, (emo, pix, usage) in enumerate(track(zip(raw["emotion"], raw["pixels"], raw["Usage"]), "validating fer2013.csv", len(raw))):
        where = f"{path}:{i + 2}"
        try:
            code = int(emo)
        except ValueError:
            code = -1
        if code not in to_index:
            raise FerError(f"{where}: unknown emotion code {emo!r} (FER2013 uses 0-6)")
        if usage not in USAGE:
            raise FerError(f"{where}: Usage {usage!r} is not one of {', '.join(USAGE)}")
        try:
            values = np.array(pix.split(), dtype=np.int64)
        except ValueError:
            raise FerError(f"{where}: pixels must be space-separated integers") from None
        if values.size != SIDE * SIDE or values.min() < 0 or values.max() > 255:
            raise FerError(f"{where}: pixels must be {SIDE * SIDE} values in 0-255, got {values.size}")
        pixels[i] = values.reshape(SIDE, SIDE)
        labels[i] = UNLABELLED if to_index[code] is None else to_index[code]

    names = [f"fer{i:07d}.png" for i in range(len(raw))]
    images_dir.mkdir(parents=True, exist_ok=True)
    written = 0
    for name, img in track(list(zip(names, pixels)), "writing PNG images"):
        dest = images_dir / name
        if dest.is_file():
            continue  # written atomically by an earlier run
        with atomic_path(dest) as tmp:
            if not cv2.imwrite(str(tmp), img):
                raise FerError(f"{dest}: could not write the image; check the folder is writable")
        written += 1
    df = pd.DataFrame({"path": names, "split": raw["Usage"].map(USAGE).to_numpy(), "label": labels})
    df["dataset"] = "fer2013"
    notes = [f"wrote {written:,} PNG images to {images_dir} ({len(names) - written:,} already there)"]
    return Imported(with_label_names(df, classes), classes, images_dir, "fer2013", [path], notes=notes)
