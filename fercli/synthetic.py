"""A synthetic, licence-free FER sample for `fer demo`: drawn faces in cluttered photos.

Each picture is a cluttered background with one cartoon face whose expression follows its class
(mouth curve and opening, brow slant and height, eye opening), placed at a random position, scale and
rotation. The five landmarks (eye centres, nose tip, mouth corners) are known exactly, so
`fer align --detector landmarks` has real work to do: undo the rotation, scale and position. This is
not a benchmark of anything: it only shows the pipeline end to end without a download.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from fercli.classes import CLASSES_7
from fercli.errors import FerError
from fercli.fileio import atomic_path
from fercli.schema import LANDMARK_COLUMNS, MANIFEST_NAME, make_provenance, write_manifest

CANVAS = 128  # the face is drawn on a canonical 128x128 canvas, then warped into the picture
LANDMARKS = np.array([[46, 56], [82, 56], [64, 78], [49, 97], [79, 97]], dtype=np.float64)

# Per class: eye opening (half-height), brow offsets (inner, outer; negative = up), mouth shape.
EXPRESSIONS: dict[str, dict[str, object]] = {
    "neutral": {"eye": 5, "brow": (0, 0), "mouth": "line"},
    "happiness": {"eye": 5, "brow": (0, 0), "mouth": "smile"},
    "surprise": {"eye": 9, "brow": (-9, -9), "mouth": "o"},
    "sadness": {"eye": 4, "brow": (-7, 2), "mouth": "frown"},
    "anger": {"eye": 3, "brow": (7, -3), "mouth": "tight"},
    "disgust": {"eye": 3, "brow": (4, 4), "mouth": "sneer"},
    "fear": {"eye": 9, "brow": (-7, -2), "mouth": "wide"},
}


def draw_face(expression: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A BGR face on the canonical canvas and its alpha mask (uint8, 255 inside the head)."""
    spec = EXPRESSIONS[expression]
    img = np.zeros((CANVAS, CANVAS, 3), np.uint8)
    mask = np.zeros((CANVAS, CANVAS), np.uint8)
    skin = tuple(int(v) for v in rng.integers([60, 90, 130], [150, 190, 245]))
    dark = (int(rng.integers(10, 60)),) * 3
    cv2.ellipse(img, (64, 70), (46, 57), 0, 0, 360, skin, -1, cv2.LINE_AA)
    cv2.ellipse(mask, (64, 70), (46, 57), 0, 0, 360, 255, -1, cv2.LINE_AA)
    hair = tuple(int(v) for v in rng.integers(0, 120, 3))
    cv2.ellipse(img, (64, 34), (44, 22), 0, 180, 360, hair, -1, cv2.LINE_AA)
    j = lambda: int(rng.integers(-1, 2))  # noqa: E731 - a pixel of jitter per feature
    eye_h = int(spec["eye"])  # type: ignore[arg-type]
    for (x, y), side in zip(LANDMARKS[:2].astype(int), (-1, 1)):
        cv2.ellipse(img, (x + j(), y + j()), (9, eye_h), 0, 0, 360, (245, 245, 245), -1, cv2.LINE_AA)
        cv2.circle(img, (x + j(), y), max(2, min(4, eye_h - 1)), dark, -1, cv2.LINE_AA)
        inner, outer = spec["brow"]  # type: ignore[misc]
        xi, xo = x - side * 9, x + side * 11
        cv2.line(img, (xi, 43 + inner + j()), (xo, 43 + outer + j()), dark, 3, cv2.LINE_AA)
    cv2.line(img, (64, 62), (61, 78), tuple(int(v * 0.7) for v in skin), 2, cv2.LINE_AA)
    (lx, ly), (rx, ry) = LANDMARKS[3].astype(int), LANDMARKS[4].astype(int)
    lip = (int(rng.integers(20, 70)), int(rng.integers(20, 70)), int(rng.integers(120, 200)))
    shape = spec["mouth"]
    if shape == "line":
        cv2.line(img, (lx, ly), (rx, ry), lip, 3, cv2.LINE_AA)
    elif shape in ("smile", "frown"):
        dy = 10 if shape == "smile" else -9
        pts = np.array([[x, ly + dy * (1 - ((x - 64) / 15) ** 2)] for x in range(lx, rx + 1)], np.int32)
        cv2.polylines(img, [pts], False, lip, 3, cv2.LINE_AA)
    elif shape == "o":
        cv2.ellipse(img, (64, ly + 2), (8, 12), 0, 0, 360, (30, 20, 60), -1, cv2.LINE_AA)
    elif shape == "wide":
        cv2.ellipse(img, (64, ly + 1), (15, 7), 0, 0, 360, (30, 20, 60), -1, cv2.LINE_AA)
        cv2.line(img, (51, ly - 1), (77, ly - 1), (240, 240, 240), 2, cv2.LINE_AA)
    elif shape == "tight":
        cv2.line(img, (lx + 3, ly + 3), (rx - 3, ry + 3), lip, 4, cv2.LINE_AA)
        cv2.line(img, (lx, ly + 6), (lx + 3, ly + 3), lip, 2, cv2.LINE_AA)
        cv2.line(img, (rx, ry + 6), (rx - 3, ry + 3), lip, 2, cv2.LINE_AA)
    elif shape == "sneer":
        pts = np.array([[lx, ly + 3], [56, ly], [64, ly + 2], [72, ly - 4], [rx, ry - 7]], np.int32)
        cv2.polylines(img, [pts], False, lip, 3, cv2.LINE_AA)
        cv2.line(img, (56, 70), (60, 74), tuple(int(v * 0.6) for v in skin), 2, cv2.LINE_AA)
    return img, mask


def clutter(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A busy BGR background: a gradient, random shapes and lines, and noise."""
    h, w = shape
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0, 1, w)[None, :, None]
    img = np.broadcast_to(a * (1 - t) + b * t, (h, w, 3)).astype(np.uint8).copy()
    for _ in range(int(rng.integers(10, 20))):
        color = tuple(int(v) for v in rng.integers(0, 256, 3))
        kind = rng.integers(0, 3)
        p = tuple(int(v) for v in rng.integers(0, [w, h]))
        if kind == 0:
            q = tuple(int(v) for v in rng.integers(0, [w, h]))
            cv2.rectangle(img, p, q, color, int(rng.choice([-1, 2])))
        elif kind == 1:
            cv2.circle(img, p, int(rng.integers(5, w // 4)), color, int(rng.choice([-1, 2])), cv2.LINE_AA)
        else:
            q = tuple(int(v) for v in rng.integers(0, [w, h]))
            cv2.line(img, p, q, color, int(rng.integers(1, 4)), cv2.LINE_AA)
    noise = rng.normal(0, 8, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def make_picture(expression: str, rng: np.random.Generator, size: int = 192) -> tuple[np.ndarray, np.ndarray]:
    """One cluttered picture with one face; returns (BGR image, 5x2 landmarks in its pixels)."""
    face, mask = draw_face(expression, rng)
    scale = rng.uniform(0.55, 0.95) * size / CANVAS
    angle = rng.uniform(-25, 25)
    half = CANVAS * scale / 2
    cx, cy = rng.uniform(half, size - half), rng.uniform(half, size - half)
    m = cv2.getRotationMatrix2D((CANVAS / 2, CANVAS / 2), angle, scale)
    m[:, 2] += (cx - CANVAS / 2, cy - CANVAS / 2)
    warped = cv2.warpAffine(face, m, (size, size), flags=cv2.INTER_LINEAR)
    alpha = cv2.warpAffine(mask, m, (size, size), flags=cv2.INTER_LINEAR)[:, :, None] / 255.0
    img = clutter((size, size), rng)
    img = (img * (1 - alpha) + warped * alpha).astype(np.uint8)
    lms = np.hstack([LANDMARKS, np.ones((5, 1))]) @ m.T
    return img, lms


def make_sample(root: str | Path, per_split: dict[str, int], seed: int = 0, size: int = 192,
                classes: tuple[str, ...] = CLASSES_7) -> Path:
    """Write ``root/<split>/<class>/<n>.png`` and ``root/manifest.parquet`` (labels, splits, landmarks).

    ``per_split`` maps split -> pictures per class. Deterministic for a given seed; files already
    written are kept, so an interrupted generation resumes.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    rows = []
    for split, n in per_split.items():
        for k, name in enumerate(classes):
            for i in range(n):
                img, lms = make_picture(name, rng, size)
                rel = f"{split}/{name}/{i:04d}.png"
                dest = root / rel
                if not dest.is_file():
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with atomic_path(dest) as tmp:
                        if not cv2.imwrite(str(tmp), img):
                            raise FerError(f"{dest}: could not write the image; check the folder is writable")
                rows.append({"path": rel, "split": split, "label": k, "dataset": "synthetic",
                             **dict(zip(LANDMARK_COLUMNS, lms.reshape(-1).astype(np.float32)))})
    df = pd.DataFrame(rows)
    df["label_name"] = [classes[i] for i in df["label"]]
    prov = make_provenance("dataset", summary={"rows": len(df), "synthetic": True, "seed": seed})
    write_manifest(df, classes, root, root / MANIFEST_NAME, provenance=prov, extra_meta={"dataset": "synthetic"})
    return root / MANIFEST_NAME
