"""`fer align`'s loading step, run in DataLoader workers: decode each source image (robustly:
:mod:`fercli.align.imageio`) and prepare it for the detector, or, for ``--detector landmarks`` and
``none``, make its crop outright. A problem with one file becomes that item's (status, reason).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fercli.align.config import HAAR, AlignConfig
from fercli.align.detectors import DetectorSpec
from fercli.align.imageio import ImageProblem, LoadedImage, load_image
from fercli.align.retinaface_detector import RetinaFaceDetector
from fercli.align.transform import align_face, box_crop, resize_face
from fercli.imagestatus import os_problem
from fercli.schema import BOX_COLUMNS, LANDMARK_COLUMNS


@dataclass
class AlignItem:
    """One source image after loading: a problem, a finished crop, or a working image to detect on."""

    index: int  # position in the list of pending work
    src: str
    stat: tuple[int, int] | None = None
    problem: tuple[str, str] | None = None  # (status, reason)
    image: torch.Tensor | None = None  # working image (uint8), shared memory across processes
    scale: float = 1.0  # working image pixels per original pixel
    notes: list[str] = field(default_factory=list)
    det_input: torch.Tensor | None = None
    det_scale: float = 1.0
    crop: torch.Tensor | None = None  # landmarks/none modes: the finished crop
    used: dict[str, float] = field(default_factory=dict)  # landmarks mode: box/lm columns used


class AlignDataset(torch.utils.data.Dataset):
    """The pending source images ``srcs`` (relative to ``root``); ``landmarks`` and ``boxes`` are the
    source rows' (original pixels) for ``--detector landmarks``."""

    def __init__(self, srcs: list[str], root: Path, cfg: AlignConfig, spec: DetectorSpec | None,
                 landmarks: np.ndarray | None, boxes: np.ndarray | None) -> None:
        self.srcs, self.root, self.cfg, self.spec = srcs, root, cfg, spec
        self.landmarks, self.boxes = landmarks, boxes

    def __len__(self) -> int:
        return len(self.srcs)

    def __getitem__(self, i: int) -> AlignItem:
        item = AlignItem(i, self.srcs[i])
        path = self.root / self.srcs[i]
        try:
            st = os.stat(path)
            item.stat = (st.st_size, st.st_mtime_ns)
            loaded = load_image(path)
        except OSError as exc:  # one vocabulary with fer predict (fercli.imagestatus)
            item.problem = os_problem(exc, path)
            return item
        except ImageProblem as p:
            item.problem = (p.status, p.reason)
            return item
        except Exception as exc:  # one bad file never stops the run
            item.problem = ("error", f"{type(exc).__name__}: {exc}")
            return item
        item.notes = loaded.notes
        item.scale = loaded.scale
        try:
            mode = self.cfg.detector
            if mode == "none":
                item.crop = torch.from_numpy(resize_face(loaded.image, self.cfg.size))
            elif mode == "landmarks":
                self._crop_from_manifest(item, loaded)
            elif mode == HAAR:  # detected in the main process, on the working image
                item.image = torch.from_numpy(loaded.image)
            else:
                item.image = torch.from_numpy(loaded.image)
                item.det_input, item.det_scale = RetinaFaceDetector.prepare_image(loaded.image, self.spec, self.cfg.detect_size)
        except Exception as exc:
            item.problem = ("error", f"{type(exc).__name__}: {exc}")
            item.image = item.crop = item.det_input = None
        return item

    def _crop_from_manifest(self, item: AlignItem, loaded: LoadedImage) -> None:
        i = item.index
        lm = self.landmarks[i] if self.landmarks is not None else None
        box = self.boxes[i] if self.boxes is not None else None
        if lm is not None and np.isfinite(lm).all():
            item.crop = torch.from_numpy(align_face(loaded.image, lm.reshape(5, 2) * loaded.scale, self.cfg.size, self.cfg.margin))
            item.used = dict(zip(LANDMARK_COLUMNS, lm.tolist()))
            if box is not None and np.isfinite(box).all():
                item.used.update(zip(BOX_COLUMNS, box.tolist()))
        elif box is not None and np.isfinite(box).all() and box[2] > 0 and box[3] > 0:
            item.crop = torch.from_numpy(box_crop(loaded.image, box * loaded.scale, self.cfg.size, self.cfg.margin))
            item.used = dict(zip(BOX_COLUMNS, box.tolist()))
            item.notes = item.notes + ["no landmarks: cropped the face box"]
        else:
            item.problem = ("no_landmarks", "the source row has no five landmarks and no face box")


def collate(items: list[AlignItem]) -> list[AlignItem]:
    """A batch stays a list of items (their images differ in size)."""
    return items


def worker_init(_: int) -> None:
    # Never touch cv2's thread pool here: reconfiguring a pool inherited through fork deadlocks.
    # The parent sets cv2 to one thread before the workers fork (fercli.align.runner._thread_budget).
    torch.set_num_threads(1)
