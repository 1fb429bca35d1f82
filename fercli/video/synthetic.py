"""Synthetic clips made of real face photos moving over a background, with their ground truth.

For tests and benchmarks: faces (patches cut from photos) follow straight paths, may be hidden for a
while, and every frame's true box of every visible face is known, so tracking can be scored.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Actor:
    """One face: its patch (BGR), its top-left corner at the first and last frame, and when it is hidden."""

    patch: np.ndarray
    start: tuple[float, float]
    end: tuple[float, float]
    hidden: tuple[int, int] | None = None  # frames [a, b) where the face is not shown

    def corner(self, i: int, n: int) -> tuple[int, int]:
        a = i / max(1, n - 1)
        return (round(self.start[0] + a * (self.end[0] - self.start[0])),
                round(self.start[1] + a * (self.end[1] - self.start[1])))

    def visible(self, i: int) -> bool:
        return self.hidden is None or not self.hidden[0] <= i < self.hidden[1]


def face_patches(photos: Sequence[str | Path], side: int, detector, margin: float = 0.35,
                 per_photo: int = 1) -> list[np.ndarray]:
    """Square ``side`` px patches around the faces ``detector`` finds (the largest ``per_photo`` per photo),
    with ``margin`` of the box added all round so the detector finds them again in the clip."""
    import cv2

    out = []
    for p in photos:
        image = cv2.imread(str(p))
        if image is None:
            raise FileNotFoundError(p)
        faces = sorted(detector.detect_faces([image], min_score=0.8)[0], key=lambda f: -f.area)[:per_photo]
        for f in faces:
            x1, y1, x2, y2 = f.box
            s = max(x2 - x1, y2 - y1) * (1 + 2 * margin)
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            m = np.array([[side / s, 0, side / 2 - side / s * cx], [0, side / s, side / 2 - side / s * cy]])
            out.append(cv2.warpAffine(image, m, (side, side), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE))
    return out


def render(actors: Sequence[Actor], n: int, size: tuple[int, int], background: int = 90) -> Iterator[tuple[np.ndarray, list]]:
    """Frames (BGR) and, per frame, the (actor index, x1, y1, x2, y2) of each visible face; later actors
    are drawn over earlier ones."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.clip(background + 30 * np.sin(xx / 37.0) * np.cos(yy / 53.0), 0, 255).astype(np.uint8)
    base = np.dstack([base, (base * 0.9).astype(np.uint8), (base * 0.8).astype(np.uint8)])
    for i in range(n):
        frame = base.copy()
        truth = []
        for k, a in enumerate(actors):
            if not a.visible(i):
                continue
            x, y = a.corner(i, n)
            ph, pw = a.patch.shape[:2]
            x1, y1, x2, y2 = max(0, x), max(0, y), min(w, x + pw), min(h, y + ph)
            if x2 <= x1 or y2 <= y1:
                continue
            frame[y1:y2, x1:x2] = a.patch[y1 - y:y2 - y, x1 - x:x2 - x]
            truth.append((k, x1, y1, x2, y2))
        yield frame, truth


def write_clip(path: str | Path, actors: Sequence[Actor], n: int, size: tuple[int, int], fps: float,
               fourcc: str = "mp4v") -> list[list]:
    """Write the clip with OpenCV; returns each frame's ground truth (see :func:`render`)."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    if not writer.isOpened():
        raise RuntimeError(f"cannot write {path} with fourcc {fourcc}")
    truths = []
    try:
        for frame, truth in render(actors, n, size):
            writer.write(frame)
            truths.append(truth)
    finally:
        writer.release()
    return truths
