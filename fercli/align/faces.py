"""A detected face, which faces to keep, and the crop of each: one implementation for `fer align`,
`fer predict`, `fer serve` and the API, so every command keeps and crops the same faces and says the
same thing when it keeps none."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fercli.align.config import FACE_CHOICES, HAAR
from fercli.align.transform import align_face, box_crop
from fercli.errors import FerError


@dataclass
class Face:
    """One detected face in the coordinates of the image given to the detector."""

    box: np.ndarray  # x1, y1, x2, y2 (float, clipped to the image)
    score: float | None  # None: the detector gives no score (haar)
    landmarks: np.ndarray | None  # 5x2: left eye, right eye, nose, left mouth, right mouth; None: box only (haar)

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])

    @property
    def area(self) -> float:
        return self.width * self.height

    def scaled(self, factor: float) -> Face:
        return Face(self.box * factor, self.score, None if self.landmarks is None else self.landmarks * factor)


def select_faces(faces: list[Face], scale: float, mode: str, min_face_size: float = 0.0) -> list[int]:
    """Indices of the faces to keep, in output order (``--faces`` and ``--min-face-size``).

    ``faces`` are a detector's output (best first) in the coordinates of an image that is ``scale``
    times the original photo; ``min_face_size`` is the shorter side of the box in original pixels.
    ``largest`` keeps the biggest box (ties: higher score), ``best`` the highest score, ``all`` every
    face, best first.
    """
    if mode not in FACE_CHOICES:
        raise FerError(f"--faces must be one of {', '.join(FACE_CHOICES)}, got {mode!r}")
    keep = [i for i, f in enumerate(faces) if min(f.width, f.height) / scale >= min_face_size]
    if not keep:
        return []
    if mode == "best":
        return keep[:1]
    if mode == "largest":
        return [max(keep, key=lambda i: (faces[i].area, faces[i].score or 0.0))]  # haar: no score
    return keep


def no_face_reason(detector: str, min_score: float, found: int, min_face_size: float) -> str:
    """Why :func:`select_faces` kept no face: the detector found none (``found`` 0), or all ``found``
    were smaller than ``min_face_size``."""
    if found:
        return f"{found} face(s) found, all smaller than --min-face-size {min_face_size:g} px"
    return "no face found by haar" if detector == HAAR else f"no face with score > {min_score:g}"


def crop_face(image: np.ndarray, face: Face, size: int, margin: float) -> np.ndarray:
    """The ``size`` x ``size`` crop of ``face`` (in ``image``'s coordinates): aligned onto the ArcFace
    template by its landmarks, or, from a box-only detector (haar), a square crop around its box."""
    if face.landmarks is None:
        x1, y1, x2, y2 = face.box
        return box_crop(image, np.array([x1, y1, x2 - x1, y2 - y1]), size, margin)
    return align_face(image, face.landmarks, size, margin)
