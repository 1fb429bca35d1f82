"""The Python API: :class:`Recognizer`, the layer that `fer predict`, `fer serve` and video share.

::

    from fercli import Recognizer

    rec = Recognizer()                      # the workspace's student, else the bundled model; detector auto
    for face in rec.predict("photo.jpg"):   # a path, encoded bytes, a PIL image or a numpy array
        print(face.label, round(face.probs[face.label], 3), face.box)

A :class:`Recognizer` loads its classifier (:class:`fercli.inference.Classifier`) and face detector
once. Detection, face selection and alignment are `fer align`'s functions with the same options,
and classification applies the model's stored preprocessing, temperature and TTA, so a face gets
the same probabilities here as from `fer predict` and `fer eval`.

The pipeline is also open in steps, for callers that batch work their own way (`fer predict`
across files, `fer serve` across concurrent requests): :meth:`Recognizer.load` (decode),
:meth:`Recognizer.detect` (detect, select, align and crop), :meth:`Recognizer.classify`
(probabilities of stacked crops) and :meth:`Recognizer.results` (typed results). Each step is
thread-safe: detection and classification each hold a lock while they run.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np

from fercli.align.config import (DEFAULT_DETECT_SIZE, DEFAULT_DETECTOR, DEFAULT_MARGIN, DEFAULT_MIN_FACE_SIZE,
                                 DEFAULT_MIN_SCORE, DEFAULT_SIZE, FACE_CHOICES, HAAR, check_face_filters)
from fercli.align.detectors import DETECTORS, auto_detector, hub_weights_path, load_detector, weights_variant
from fercli.align.faces import crop_face, no_face_reason, select_faces
from fercli.align.imageio import ImageProblem, LoadedImage, decode_image, load_image
from fercli.align.transform import check_geometry
from fercli.calibration import TTA_MODES
from fercli.errors import FerError
from fercli.inference import Classifier, resolve_model
from fercli.workspace import Artifact, Workspace

CLASSIFY_BATCH = 64  # faces per classifier forward pass
NO_DETECTOR = "none"  # Recognizer(detector="none"): pictures are aligned faces (detect=False only)
COLOR_ORDERS = ("bgr", "rgb")

# What Recognizer.predict accepts: a file path, an encoded image (bytes), a PIL image, or pixels.
ImageInput = Union[str, "os.PathLike[str]", bytes, np.ndarray, Any]
ACCEPTED = "a file path (str or Path), encoded image bytes, a PIL image or a uint8 numpy array"


def _is_pil(image: Any) -> bool:
    return hasattr(image, "mode") and hasattr(image, "convert")  # duck-typed: PIL is not imported here


def _not_a_picture(image: Any) -> FerError:
    """The error for an object Recognizer cannot read, naming its type and what it takes instead."""
    cls = type(image)
    kind = cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    hint = "; for several pictures, call predict_batch" if isinstance(image, (list, tuple)) else ""
    return FerError(f"not a picture: got {kind}; pass {ACCEPTED}{hint}")


def _path_problem(path: str | os.PathLike[str], exc: ImageProblem) -> ImageProblem:
    """``exc`` naming ``path`` (reasons from load_image omit it: fer predict puts it in its own column);
    a missing file also says how other inputs are passed, since a str is always taken as a path."""
    shown = os.fsdecode(path)
    shown = shown if len(shown) <= 120 else shown[:100] + "..."  # e.g. base64 text passed as a str
    if exc.status == "missing":
        other = ("URLs are not fetched: download the image and pass its bytes" if shown.startswith(("http://", "https://"))
                 else "other pictures go in as encoded bytes, a PIL image or a uint8 numpy array")
        return ImageProblem(exc.status, f"{shown}: {exc.reason} (a str or Path is read as an image file; {other})")
    return ImageProblem(exc.status, f"{shown}: {exc.reason}")


@dataclass
class FaceResult:
    """One classified face. Coordinates are in the input picture's pixels (after EXIF rotation)."""

    index: int  # the face's rank among those kept (detector order: best first)
    box: list[float] | None  # x1, y1, x2, y2; None when detection was off (the picture is the face)
    score: float | None  # the detector's; None without detection and for haar, which has no score
    label: str  # the most probable class
    probs: dict[str, float]  # every class's probability, in the model's class order
    landmarks: list[list[float]] | None = None  # 5 x (x, y): eyes, nose, mouth corners; None for box-only detectors

    def top(self, k: int) -> list[tuple[str, float]]:
        """The ``k`` most probable classes, most probable first."""
        return sorted(self.probs.items(), key=lambda kv: -kv[1])[:k]

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "box": self.box, "landmarks": self.landmarks, "score": self.score,
                "label": self.label, "probs": self.probs}


@dataclass
class FaceCrop:
    """A face ready for the classifier: ``crop`` is uint8 RGB at the model's input size."""

    crop: np.ndarray
    box: list[float] | None
    score: float | None
    landmarks: list[list[float]] | None


@dataclass
class Detection:
    """The faces kept in one picture (see :meth:`Recognizer.detect`)."""

    faces: list[FaceCrop] = field(default_factory=list)
    found: int = 0  # faces the detector reported above min_score (1 without detection)
    reason: str | None = None  # why no face was kept, when ``faces`` is empty
    capped: bool = False  # more faces were selected than ``max_faces``; the best ones were kept


@dataclass
class RecognizerConfig:
    """How a :class:`Recognizer` is built; the detection options mean what they mean for `fer align`."""

    model: Path | None = None  # a checkpoint or export; None: the workspace's student, else the bundled model
    detector: str = DEFAULT_DETECTOR  # auto: a cached RetinaFace, else OpenCV's Haar cascade (never downloads); none: no detector
    detector_weights: Path | None = None
    faces: str = "all"  # all, largest or best
    min_score: float = DEFAULT_MIN_SCORE
    min_face_size: float = DEFAULT_MIN_FACE_SIZE  # px, the box's shorter side in the input picture
    size: int = DEFAULT_SIZE  # alignment output size (then resized to the model's input size)
    margin: float = DEFAULT_MARGIN
    detect_size: int = DEFAULT_DETECT_SIZE  # longest side of the detector's input
    tta: str | None = None  # none or flip; None: the model's recommendation
    device: str = "auto"
    threads: int | None = None
    runtime: str = "onnxruntime"  # an .onnx model runs on onnxruntime or openvino
    max_faces: int | None = None  # keep at most this many faces per picture (None: all)

    def check(self) -> None:
        """Refuse bad values before anything is loaded (FerError naming the option)."""
        if self.tta is not None and self.tta not in TTA_MODES:
            raise FerError(f"--tta must be none or flip, got {self.tta!r}")
        if self.faces not in FACE_CHOICES:
            raise FerError(f"--faces must be all, largest or best, got {self.faces!r}")
        check_face_filters(self.min_score, self.min_face_size)
        if self.max_faces is not None and self.max_faces < 1:
            raise FerError(f"--max-faces must be >= 1, got {self.max_faces}")
        check_geometry(self.size, self.margin)


def _face_pixels(image: Any, color: str | None) -> np.ndarray:
    """A PIL image or a numpy array -> uint8 grey (HxW) or BGR (HxWx3), the layout detectors take."""
    if _is_pil(image):
        if image.mode in ("L", "I;16", "I"):
            return np.asarray(image.convert("L"))
        return np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise FerError(f"expected uint8 pixels, got {arr.dtype} (scale to 0..255 and convert first)")
    if arr.ndim == 3 and arr.shape[2] in (3, 4) and min(arr.shape[:2]) >= 1:  # colour: the order must be said
        if color not in COLOR_ORDERS:
            raise FerError(f"a colour array needs color='bgr' (OpenCV) or color='rgb' (PIL, imageio), got {color!r}")
        # alpha is dropped, as for files
        return np.ascontiguousarray(arr[:, :, :3] if color == "bgr" else arr[:, :, 2::-1])
    grey = arr[:, :, 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr
    if grey.ndim != 2:
        raise FerError(f"expected HxW, HxWx3 or HxWx4 pixels, got shape {arr.shape}")
    return np.ascontiguousarray(grey)


class Recognizer:
    """Expression recognition of the faces in pictures: a classifier and a face detector, loaded once.

    ``model`` is a checkpoint or an export (None: the workspace's student, else the bundled
    FERPlus model); ``detector`` is ``auto`` (a RetinaFace whose weights are cached, else OpenCV's
    Haar cascade), ``retinaface-mobilenet``, ``retinaface-resnet50``, ``haar``, or ``none`` (every
    picture is an aligned face). The keyword
    options are :class:`RecognizerConfig`'s. Bad options and unusable models raise :class:`FerError`
    before anything is loaded; unusable pictures raise :class:`ImageProblem` (``status``, ``reason``,
    naming the path for files), and an object that is no picture at all a :class:`FerError` naming
    its type.

    What it picked, once built (``repr()`` shows them too):

    * ``model_path``: the model file used (``Path``); ``model_name``: its file name;
      ``model_origin``: ``given``, ``workspace`` or ``bundled``; ``model``: the resolved
      :class:`~fercli.workspace.Artifact` with its metadata; ``classifier``: the loaded model.
    * ``detector``: the detector actually used, ``auto`` resolved (``retinaface-resnet50``,
      ``retinaface-mobilenet``, ``haar``, or ``none``); ``detector_note``: why ``auto`` chose it
      (None otherwise); ``detector_name``: the same as ``detector`` but None for ``none``.
    * ``tta``, ``device``, ``classes``, ``sha256``.
    """

    def __init__(self, model: str | os.PathLike[str] | None = None, detector: str = "auto", *,
                 workspace: Workspace | str | os.PathLike[str] | None = None,
                 on_model: Callable[[Artifact], Any] | None = None, **options: Any) -> None:
        cfg = RecognizerConfig(model=None if model is None else Path(model), detector=detector, **options)
        self._init(cfg, workspace, on_model)

    @classmethod
    def from_config(cls, cfg: RecognizerConfig, workspace: Workspace | str | os.PathLike[str] | None = None,
                    on_model: Callable[[Artifact], Any] | None = None) -> Recognizer:
        """Build from a typed config; ``on_model`` is called with the resolved model before it loads."""
        self = cls.__new__(cls)
        self._init(cfg, workspace, on_model)
        return self

    def _init(self, cfg: RecognizerConfig, workspace: Any, on_model: Callable[[Artifact], Any] | None) -> None:
        from fercli.device import resolve_device

        cfg.check()
        ws = workspace if isinstance(workspace, Workspace) else Workspace.find(workspace)
        self.config = cfg
        self.model: Artifact = resolve_model(ws, cfg.model)  # its errors name the file tried and what is wrong
        self.model_path: Path = self.model.path
        self.model_name: str = self.model.path.name
        self.model_origin: str = self.model.origin
        if on_model is not None:
            on_model(self.model)
        self.device = resolve_device(cfg.device)
        self.classifier = Classifier.load(self.model.path, self.device, cfg.threads, runtime=cfg.runtime)
        self.tta: str = cfg.tta if cfg.tta is not None else self.classifier.tta
        self.detector_name: str | None
        if cfg.detector == "auto":
            self.detector_name, self.detector_note = auto_detector(cfg.detector_weights)
        else:
            self.detector_name, self.detector_note = (None if cfg.detector == NO_DETECTOR else cfg.detector), None
        self.detector: str = self.detector_name or NO_DETECTOR  # "auto" resolved, as a caller would pass it
        self._detectors: dict[str, Any] = {}
        self._detectors_lock = threading.Lock()  # guards the cache (loading), not detection
        self._detect_lock = threading.Lock()
        self._classify_lock = threading.Lock()
        if self.detector_name is not None:
            self.detector_for(self.detector_name)  # fail now, not on the first picture

    # ---- what it is ---------------------------------------------------------------------------
    @property
    def classes(self) -> tuple[str, ...]:
        return self.classifier.classes

    def __repr__(self) -> str:
        auto = " (auto)" if self.config.detector == "auto" else ""  # why auto chose it: detector_note
        return (f"<Recognizer model={self.model_name!r} ({self.model_origin}, {self.classifier.arch}, "
                f"{len(self.classes)} classes) at {str(self.model_path)!r}, detector={self.detector!r}{auto}, "
                f"tta={self.tta!r}, device={str(self.device)!r}>")

    @functools.cached_property
    def sha256(self) -> str:
        """The model file's sha256 (computed once)."""
        return self.classifier.sha256

    def detector_for(self, name: str | None = None) -> Any:
        """The loaded detector ``name`` (None or ``auto``: the configured one), loading it on first use.

        Only detectors usable offline are loaded: the configured one, ``haar``, or a RetinaFace
        whose weights are in torch's hub cache (or are the configured ``detector_weights``); any
        other name is a :class:`FerError`, so a request can never start a download."""
        name = self.detector_name if name in (None, "auto") else name
        if name is None:
            raise FerError("this Recognizer was built with detector='none': pass detect=False, or build it with a detector")
        with self._detectors_lock:
            if name in self._detectors:
                return self._detectors[name]
            weights = None
            if name == self.detector_name:
                weights = self.config.detector_weights
            elif name in DETECTORS:
                given = self.config.detector_weights
                if given is not None and weights_variant(given) == name:
                    weights = given
                elif not hub_weights_path(DETECTORS[name]).is_file():
                    raise FerError(f"detector {name!r} is not available offline here (its weights are not in "
                                   f"torch's hub cache); use {self.detector_name!r} or 'haar'")
            elif name != HAAR:
                raise FerError(f"unknown detector {name!r}; choose one of {', '.join(['auto', *DETECTORS, HAAR])}")
            det = load_detector(name, weights, self.device, self.config.detect_size)
            self._detectors[name] = det
            return det

    # ---- the steps ----------------------------------------------------------------------------
    @staticmethod
    def load(image: ImageInput, color: str | None = None, max_pixels: int | None = None,
             quiet: bool = True) -> LoadedImage:
        """Decode one picture: a file path, encoded bytes (JPEG, PNG, ...), a PIL image, or a uint8 numpy
        array (HxW grey, or HxWx3/4 with ``color`` 'bgr' or 'rgb': the order must be said).

        Encoded input is checked from its header first (:func:`fercli.align.imageio.decode_image`):
        more than ``max_pixels`` pixels is refused before decoding. Raises :class:`ImageProblem` (a
        file's reason starts with its path), or :class:`FerError` for an object of any other type."""
        if isinstance(image, (bytes, bytearray, memoryview)):
            return decode_image(bytes(image), max_pixels=max_pixels, quiet=quiet)
        if isinstance(image, (str, os.PathLike)):
            try:
                return load_image(image)
            except ImageProblem as exc:
                raise _path_problem(image, exc) from None
        if not (_is_pil(image) or isinstance(image, np.ndarray) or hasattr(image, "__array__")):
            raise _not_a_picture(image)  # np.asarray would make an object array of it, and a puzzling error
        pixels = _face_pixels(image, color)
        return LoadedImage(pixels, 1.0, (pixels.shape[1], pixels.shape[0]))

    def detect(self, pictures: Sequence[LoadedImage], *, detect: bool | None = None, detector: str | None = None,
               min_score: float | None = None, max_faces: int | None = None) -> list[Detection]:
        """Detect, select (``faces``, ``min_face_size``), align and crop the faces of ``pictures``, in one
        detector batch. ``detect=False`` (the default with ``detector='none'``) takes each picture as one aligned face. Boxes and landmarks
        are in each picture's original pixels. At most ``max_faces`` (default: the config's) are kept
        per picture, the detector's best first, and :attr:`Detection.capped` says when some were dropped."""
        cfg = self.config
        detect = self.detector_name is not None if detect is None else detect  # default: detect if it can
        min_score = cfg.min_score if min_score is None else min_score
        if not 0 <= min_score < 1:
            raise FerError(f"min_score must be in [0, 1), got {min_score}")
        max_faces = cfg.max_faces if max_faces is None else max_faces
        size = self.classifier.preprocess.input_size
        if not detect:
            return [Detection([FaceCrop(self._rgb(p.image, size), None, None, None)], found=1) for p in pictures]
        det = self.detector_for(detector)
        name = self.detector_name if detector in (None, "auto") else detector
        with self._detect_lock:
            found = det.detect_faces([p.image for p in pictures], min_score=min_score) if pictures else []
        out = []
        for pic, faces in zip(pictures, found):
            chosen = select_faces(faces, pic.scale, cfg.faces, cfg.min_face_size)
            res = Detection(found=len(faces))
            if not chosen:
                res.reason = no_face_reason(name, min_score, len(faces), cfg.min_face_size)
            if max_faces is not None and len(chosen) > max_faces:
                chosen, res.capped = chosen[:max_faces], True
            for i in chosen:
                face = faces[i]
                crop = crop_face(pic.image, face, cfg.size, cfg.margin)
                orig = face.scaled(1.0 / pic.scale)
                res.faces.append(FaceCrop(
                    self._rgb(crop, size), [round(float(v), 2) for v in orig.box],
                    None if face.score is None else round(float(face.score), 5),  # haar: no score
                    None if orig.landmarks is None else [[round(float(x), 2), round(float(y), 2)]
                                                         for x, y in np.asarray(orig.landmarks)]))
            out.append(res)
        return out

    @staticmethod
    def _rgb(image: np.ndarray, size: int) -> np.ndarray:
        from fercli.transforms import to_rgb_uint8

        return to_rgb_uint8(image, size, bgr=image.ndim == 3)

    def classify(self, crops: np.ndarray | Sequence[np.ndarray], tta: str | None = None) -> np.ndarray:
        """Probabilities (N, C), float64, of uint8 RGB crops at the model's input size, with the same
        normalisation, temperature and TTA (``tta``, default the recognizer's) as `fer eval`."""
        import torch

        from fercli.data import normalize

        tta = self.tta if tta is None else tta
        if tta not in TTA_MODES:
            raise FerError(f"tta must be none or flip, got {tta!r}")
        crops = np.asarray(crops) if len(crops) else np.empty((0, 1, 1, 3), np.uint8)
        probs = np.empty((len(crops), len(self.classes)))
        clf = self.classifier
        with self._classify_lock:
            for start in range(0, len(crops), CLASSIFY_BATCH):
                chunk = np.ascontiguousarray(crops[start:start + CLASSIFY_BATCH])
                x = normalize(torch.from_numpy(chunk).permute(0, 3, 1, 2), clf.preprocess, self.device)
                probs[start:start + len(chunk)] = clf.probs(x, tta_flip=tta == "flip")
        return probs

    def results(self, faces: Sequence[FaceCrop], probs: np.ndarray) -> list[FaceResult]:
        """Typed results for ``faces`` and their rows of :meth:`classify`'s output."""
        out = []
        for j, (f, p) in enumerate(zip(faces, probs)):
            out.append(FaceResult(j, f.box, f.score, self.classes[int(np.argmax(p))],
                                  {c: round(float(v), 6) for c, v in zip(self.classes, p)}, f.landmarks))
        return out

    # ---- all at once --------------------------------------------------------------------------
    def predict(self, image: ImageInput, *, color: str | None = None, detect: bool | None = None, tta: str | None = None,
                detector: str | None = None, min_score: float | None = None,
                max_faces: int | None = None) -> list[FaceResult]:
        """The faces of one picture, best first (an empty list when none is found).

        ``image``: a path, encoded bytes, a PIL image, or a uint8 array (``color`` 'bgr' or 'rgb' for
        colour arrays). ``detect=False`` classifies the whole picture as one aligned face."""
        return self.predict_batch([image], color=color, detect=detect, tta=tta, detector=detector,
                                  min_score=min_score, max_faces=max_faces)[0]

    def predict_batch(self, images: Sequence[ImageInput], *, color: str | None = None, detect: bool | None = None,
                      tta: str | None = None, detector: str | None = None, min_score: float | None = None,
                      max_faces: int | None = None, batch_size: int = 8) -> list[list[FaceResult]]:
        """:meth:`predict` for several pictures: detection in batches of ``batch_size`` pictures and
        classification of all their faces together. The first unusable picture raises
        :class:`ImageProblem` (or :class:`FerError` for an object that is no picture), its message
        prefixed with its position when there are several."""
        if isinstance(images, (str, bytes, os.PathLike)) or _is_pil(images):  # iterating it would go wrong quietly
            raise FerError(f"predict_batch takes a list of pictures, got one {type(images).__name__}: "
                           "wrap it in a list, or call predict")
        detections: list[Detection] = []
        for start in range(0, len(images), max(1, batch_size)):
            pictures = []
            for k, image in enumerate(images[start:start + batch_size], start):
                where = f"image {k}: " if len(images) > 1 else ""
                try:
                    pictures.append(self.load(image, color))
                except ImageProblem as exc:
                    raise ImageProblem(exc.status, where + exc.reason) from None
                except FerError as exc:
                    raise FerError(where + str(exc)) from None
            detections += self.detect(pictures, detect=detect, detector=detector, min_score=min_score,
                                      max_faces=max_faces)
        crops = [f.crop for d in detections for f in d.faces]
        probs = self.classify(np.stack(crops) if crops else [], tta)
        out, k = [], 0
        for d in detections:
            out.append(self.results(d.faces, probs[k:k + len(d.faces)]))
            k += len(d.faces)
        return out
