"""`fer predict`: expressions of the faces in photos, folders, globs or videos.

Detection, face selection and alignment are `fer align`'s own functions with the same options, and
the classifier's preprocessing is the preset stored with the model, applied by the same code as
`fer eval`: a face gets the same prediction from `predict` as from `align` followed by `eval`.
The detector and classifier are loaded once; detection is batched across images and
classification across all their faces.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fercli.align import load_detector, load_image
from fercli.align.detectors import HAAR, auto_detector
from fercli.align.core import select_faces
from fercli.align.imageio import ImageProblem, LoadedImage
from fercli.align.transform import align_face, box_crop, check_geometry
from fercli.calibration import TTA_MODES
from fercli.data import normalize
from fercli.device import resolve_device
from fercli.errors import FerError
from fercli.fileio import atomic_path
from fercli.importers._common import is_image
from fercli.inference import Classifier, bundled_status, resolve_model
from fercli.progress import Track, no_track
from fercli.transforms import to_rgb_uint8
from fercli.workspace import Artifact, Workspace

CLASSIFY_BATCH = 64  # faces per classifier forward pass
VIDEO_EXTS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"})


@dataclass
class PredictConfig:
    """Options of `fer predict`; the detection options mean what they mean for `fer align`."""

    inputs: tuple[str, ...] = ()
    model: Path | None = None  # default: the workspace's student
    detector: str = "auto"  # auto: a cached RetinaFace, else OpenCV's Haar cascade (never downloads)
    detector_weights: Path | None = None
    faces: str = "all"  # all, largest or best
    min_score: float = 0.8
    min_face_size: float = 0.0
    size: int = 224  # alignment output size, as `fer align --size`
    margin: float = 0.0
    detect_size: int = 640
    no_detect: bool = False  # each image is already an aligned face
    every: int = 30  # video: classify every N-th frame
    tta: str | None = None  # none or flip; default: the model's recommendation (Classifier.tta)
    batch_size: int = 8  # images per detector forward pass, as `fer align --batch-size`
    device: str = "auto"
    threads: int | None = None
    annotate: Path | None = None  # write copies with boxes and labels drawn here


@dataclass
class FaceResult:
    index: int
    box: list[float] | None  # x1, y1, x2, y2 in the input's pixels (None with --no-detect)
    score: float | None
    label: str
    probs: dict[str, float]


@dataclass
class ImageResult:
    input: str
    frame: int | None = None
    status: str = "ok"  # ok, no_face, missing, unreadable, too_large, error
    reason: str | None = None
    size: tuple[int, int] | None = None  # (width, height)
    faces: list[FaceResult] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"input": self.input, "frame": self.frame, "status": self.status, "reason": self.reason,
                "width": self.size[0] if self.size else None, "height": self.size[1] if self.size else None,
                "faces": [{"index": f.index, "box": f.box, "score": f.score, "label": f.label, "probs": f.probs}
                          for f in self.faces]}


@dataclass
class PredictResult:
    model: Artifact
    classifier: Classifier
    images: list[ImageResult]
    annotated: list[Path]
    detector: str | None = None  # None with --no-detect
    detector_note: str | None = None  # why --detector auto chose it
    tta: str = "none"  # the test-time augmentation used (--tta, else the model's recommendation)

    @property
    def failed(self) -> int:
        return sum(1 for r in self.images if r.status != "ok")


def expand_inputs(inputs: tuple[str, ...]) -> list[tuple[str, str | None]]:
    """(path, problem) for every image or video named by files, folders or glob patterns, in order."""
    out: list[tuple[str, str | None]] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(str(Path(d, f)) for d, _, files in os.walk(p) for f in files
                           if is_image(f) and not f.startswith("."))
            if found:
                out.extend((f, None) for f in found)
            else:
                out.append((item, "directory holds no images"))
        elif p.exists():
            out.append((item, None))
        elif glob.has_magic(item):
            found = sorted(f for f in glob.glob(item, recursive=True) if Path(f).is_file())
            if found:
                out.extend((f, None) for f in found)
            else:
                out.append((item, "pattern matches no file"))
        else:
            out.append((item, "file not found"))
    return out


def _frames(path: str, every: int) -> Iterator[tuple[int, np.ndarray]]:
    import cv2

    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise ImageProblem("unreadable", "cannot open the video (unknown codec or not a video)")
    try:
        i = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if i % every == 0:
                yield i, frame
            i += 1
    finally:
        cap.release()


def _units(path: str, every: int) -> Iterator[tuple[int | None, LoadedImage]]:
    """The pictures one input contributes: the image itself, or every N-th frame of a video."""
    if Path(path).suffix.lower() in VIDEO_EXTS:
        n = 0
        for idx, frame in _frames(path, every):
            n += 1
            yield idx, LoadedImage(frame, 1.0, (frame.shape[1], frame.shape[0]))
        if n == 0:
            raise ImageProblem("unreadable", "the video has no readable frames")
        return
    yield None, load_image(path)


def annotate(image: np.ndarray, faces: list[FaceResult], dest: Path) -> None:
    """A copy of ``image`` (BGR or grey) with each face's box, label and probability drawn."""
    import cv2

    canvas = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image.copy()
    thick = max(1, round(max(canvas.shape[:2]) / 400))
    for f in faces:
        # --no-detect: the whole picture is the face
        box = f.box if f.box is not None else [0, 0, canvas.shape[1] - 1, canvas.shape[0] - 1]
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), (0, 200, 0), thick)
        text = f"{f.label} {f.probs[f.label]:.2f}"
        scale = 0.3 * thick
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        y = max(y1, th + base + 2)
        cv2.rectangle(canvas, (x1, y - th - base - 2), (x1 + tw + 2, y), (0, 200, 0), -1)
        cv2.putText(canvas, text, (x1 + 1, y - base - 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick, cv2.LINE_AA)
    with atomic_path(dest) as tmp:
        if not cv2.imwrite(str(tmp), canvas):
            raise FerError(f"{dest}: could not write the annotated image; check the folder is writable")


def predict(cfg: PredictConfig, ws: Workspace, track: Track = no_track,
            on_model: Any = None) -> PredictResult:
    """Detect, align and classify every face of every input; see the module docstring."""
    if not cfg.inputs:
        raise FerError("nothing to predict: name image files, folders, glob patterns or videos")
    if cfg.every < 1:
        raise FerError(f"--every must be >= 1, got {cfg.every}")
    if cfg.tta is not None and cfg.tta not in TTA_MODES:
        raise FerError(f"--tta must be none or flip, got {cfg.tta!r}")
    if cfg.faces not in ("all", "largest", "best"):
        raise FerError(f"--faces must be all, largest or best, got {cfg.faces!r}")
    check_geometry(cfg.size, cfg.margin)
    try:
        model_art = resolve_model(ws, cfg.model)
    except FerError as exc:
        if cfg.model is None:
            raise FerError("no model: pass --model CKPT (a checkpoint or an export), or train one in this workspace "
                           f"with `fer train` (no bundled model either: {bundled_status()})") from exc
        raise
    if on_model is not None:
        on_model(model_art)
    device = resolve_device(cfg.device)
    clf = Classifier.load(model_art.path, device, cfg.threads)
    tta = cfg.tta if cfg.tta is not None else clf.tta
    name, why = (cfg.detector, None) if cfg.detector != "auto" else auto_detector(cfg.detector_weights)
    detector = None if cfg.no_detect else load_detector(name, cfg.detector_weights, device, cfg.detect_size)

    results: list[ImageResult] = []
    crops: list[np.ndarray] = []  # uint8 RGB at the classifier's input size, one per face
    owners: list[tuple[ImageResult, int, list[float] | None, float | None]] = []
    keep_for_annotation: list[tuple[ImageResult, np.ndarray, float]] = []
    pending: list[tuple[ImageResult, LoadedImage]] = []

    def flush() -> None:
        if not pending:
            return
        found = detector.detect_faces([u.image for _, u in pending], min_score=cfg.min_score) if detector else None
        for k, (res, unit) in enumerate(pending):
            if cfg.annotate is not None:
                keep_for_annotation.append((res, unit.image, unit.scale))
            if detector is None:
                crops.append(to_rgb_uint8(unit.image, clf.preprocess.input_size, bgr=unit.image.ndim == 3))
                owners.append((res, 0, None, None))
                continue
            faces = found[k]
            chosen = select_faces(faces, unit.scale, cfg.faces, cfg.min_face_size)
            if not chosen:
                res.status = "no_face"
                res.reason = ((f"no face with score > {cfg.min_score:g}" if name != HAAR else "no face found by haar")
                              if not faces else
                              f"{len(faces)} face(s) found, all smaller than --min-face-size {cfg.min_face_size:g} px")
                continue
            for j, i in enumerate(chosen):
                face = faces[i]
                if face.landmarks is not None:
                    crop = align_face(unit.image, face.landmarks, cfg.size, cfg.margin)
                else:  # a box-only detector (haar): a square crop around the box
                    x1, y1, x2, y2 = face.box
                    crop = box_crop(unit.image, np.array([x1, y1, x2 - x1, y2 - y1]), cfg.size, cfg.margin)
                crops.append(to_rgb_uint8(crop, clf.preprocess.input_size, bgr=crop.ndim == 3))
                orig = face.scaled(1.0 / unit.scale)
                owners.append((res, j, [round(float(v), 2) for v in orig.box], round(float(face.score), 5)))
        pending.clear()

    for path, problem in track(expand_inputs(cfg.inputs), "reading inputs"):
        if problem is not None:
            results.append(ImageResult(path, status="missing" if "not found" in problem else "unreadable", reason=problem))
            continue
        try:
            for frame, unit in _units(path, cfg.every):
                res = ImageResult(path, frame, size=unit.original_size)
                results.append(res)
                pending.append((res, unit))
                if len(pending) >= cfg.batch_size:
                    flush()
        except ImageProblem as exc:
            results.append(ImageResult(path, status=exc.status, reason=exc.reason))
    flush()

    # Classify every face in batches, with the same normalisation (and calibration) as `fer eval`.
    probs = np.empty((len(crops), len(clf.classes)))
    for start in range(0, len(crops), CLASSIFY_BATCH):
        chunk = np.stack(crops[start:start + CLASSIFY_BATCH])
        x = normalize(torch.from_numpy(chunk).permute(0, 3, 1, 2), clf.preprocess, device)
        probs[start:start + len(chunk)] = clf.probs(x, tta_flip=tta == "flip")
    for (res, j, box, score), p in zip(owners, probs):
        label = clf.classes[int(p.argmax())]
        res.faces.append(FaceResult(j, box, score, label, {c: round(float(v), 6) for c, v in zip(clf.classes, p)}))

    annotated: list[Path] = []
    if cfg.annotate is not None:
        import cv2

        used: set[str] = set()
        for res, image, scale in keep_for_annotation:
            if not res.faces:
                continue
            if scale != 1.0 and res.size:  # draw at the input's own size
                image = cv2.resize(image, res.size, interpolation=cv2.INTER_LINEAR)
            stem = Path(res.input).stem + (f"_f{res.frame:06d}" if res.frame is not None else "")
            name, k = f"{stem}_annotated.jpg", 2
            while name in used:  # photos with the same name in different folders
                name, k = f"{stem}_{k}_annotated.jpg", k + 1
            used.add(name)
            dest = Path(cfg.annotate) / name
            annotate(image, res.faces, dest)
            annotated.append(dest)
    return PredictResult(model_art, clf, results, annotated, None if detector is None else name,
                         None if detector is None else why, tta)
