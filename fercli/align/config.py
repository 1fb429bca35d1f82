"""Options of ``fer align`` and the detection defaults every face-cropping command shares.

`fer align` (:class:`AlignConfig`), `fer predict` (:class:`fercli.predict.PredictConfig`) and the
Python API (:class:`fercli.api.RecognizerConfig`) take the same detection options with the same
meaning; their defaults and their range checks are declared here once. Light (no OpenCV, numpy or
torch): commands build and validate the config before they import the stage.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fercli.errors import FerError

MODES = ("auto", "retinaface-resnet50", "retinaface-mobilenet", "haar", "landmarks", "none")
FACE_CHOICES = ("largest", "best", "all")
HAAR = "haar"  # OpenCV's Haar cascade (fercli.align.detectors.HaarDetector)

# Detection defaults shared by AlignConfig, PredictConfig and RecognizerConfig.
DEFAULT_DETECTOR = "auto"  # the best detector available offline (fercli.align.detectors.auto_detector)
DEFAULT_MIN_SCORE = 0.8
DEFAULT_MIN_FACE_SIZE = 0.0  # shorter side of the face box, in source pixels
DEFAULT_SIZE = 224  # side of the aligned crop
DEFAULT_MARGIN = 0.0
DEFAULT_DETECT_SIZE = 640  # longest side of the detector's input


def check_face_filters(min_score: float, min_face_size: float) -> None:
    """Refuse a ``--min-score`` outside [0, 1) or a negative ``--min-face-size`` (FerError)."""
    if not 0.0 <= min_score < 1.0:
        raise FerError(f"--min-score must be in [0, 1), got {min_score}")
    if min_face_size < 0:
        raise FerError(f"--min-face-size must be >= 0, got {min_face_size}")


def check_geometry(size: int, margin: float) -> None:
    if not isinstance(size, numbers.Integral) or size < 16 or size > 4096:
        raise FerError(f"--size must be an integer in 16..4096, got {size!r}")
    if not 0.0 <= margin < 1.0:
        raise FerError(f"--margin must be in [0, 1), got {margin!r}")


def check_detect_size(detect_size: int) -> None:
    """Refuse a ``--detect-size`` outside 64..4096 (FerError)."""
    if not 64 <= int(detect_size) <= 4096:
        raise FerError(f"--detect-size must be in 64..4096, got {detect_size}")


@dataclass
class AlignConfig:
    """Options of ``fer align`` (``[align]`` in fer.toml)."""

    # auto: the best detector available offline, as `fer predict` chooses (fercli.align.detectors.auto_detector)
    detector: Literal["auto", "retinaface-resnet50", "retinaface-mobilenet", "haar", "landmarks", "none"] = DEFAULT_DETECTOR
    detector_weights: Path | None = None  # default: torch's hub cache (ResNet-50: downloaded there)
    faces: Literal["largest", "best", "all"] = "largest"
    min_score: float = DEFAULT_MIN_SCORE
    min_face_size: float = DEFAULT_MIN_FACE_SIZE  # shorter side of the face box, in source pixels
    size: int = DEFAULT_SIZE
    margin: float = DEFAULT_MARGIN
    detect_size: int = DEFAULT_DETECT_SIZE  # longest side of the detector's input
    device: str = "auto"
    batch_size: int | None = None  # images per forward pass; default 16 on a GPU, 4 on CPU
    workers: int | None = None  # default: 0 for small jobs, else min(4, CPUs)
    overwrite: bool = False
    checkpoint_seconds: float = 60.0
    # SRC a folder of class folders without train/valid/test folders: split once, stratified and seeded
    # (fercli.importers.folder.assign_splits), or keep every image in train with no_split
    split_fractions: tuple[float, ...] = (0.8, 0.1, 0.1)
    no_split: bool = False

    def check(self) -> None:
        """Refuse bad values before any work (FerError naming the option)."""
        if self.detector not in MODES:
            raise FerError(f"--detector must be one of {', '.join(MODES)}, got {self.detector!r}")
        if self.faces not in FACE_CHOICES:
            raise FerError(f"--faces must be one of {', '.join(FACE_CHOICES)}, got {self.faces!r}")
        check_geometry(self.size, self.margin)
        check_face_filters(self.min_score, self.min_face_size)
        if self.batch_size is not None and self.batch_size < 1:
            raise FerError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.workers is not None and self.workers < 0:
            raise FerError(f"--workers must be >= 0, got {self.workers}")
        check_detect_size(self.detect_size)
