"""Face detectors for alignment: the RetinaFace registry, weights resolution, Haar, and :func:`load_detector`.

:func:`load_detector` builds a :class:`~fercli.align.retinaface_detector.RetinaFaceDetector` (batched,
vectorised inference) with its weights, or OpenCV's :class:`HaarDetector`;
``detect_faces`` takes a list of photos and returns their faces (:class:`~fercli.align.faces.Face`).
RetinaFace weights come from ``--detector-weights`` or torch's hub cache (downloaded there where
there is a public URL); :func:`auto_detector` chooses without downloading anything.
"""

from __future__ import annotations

import io
import logging
import os
import urllib.request
import zipfile
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from fercli.align import retinaface_nets
from fercli.align.config import DEFAULT_DETECT_SIZE, HAAR, check_detect_size
from fercli.align.faces import Face
from fercli.align.retinaface_detector import NMS_THRESHOLD, DetectorSpec, RetinaFaceDetector
from fercli.device import resolve_device
from fercli.errors import FerError
from fercli.fileio import atomic_path, safe_torch_load

log = logging.getLogger(__name__)


RESNET50_URL = "https://github.com/ternaus/retinaface/releases/download/0.01/retinaface_resnet50_2020-07-20-f168fae3c.zip"

DETECTORS: dict[str, DetectorSpec] = {
    # retinaface-pytorch's Model: RGB, albumentations Normalize (ImageNet mean/std of 0..1 pixels).
    "retinaface-resnet50": DetectorSpec(
        name="retinaface-resnet50",
        build=retinaface_nets.build_resnet50,
        weights_file="retinaface_resnet50_2020-07-20-f168fae3c.zip",
        url=RESNET50_URL,
        source=RESNET50_URL,
        rgb=True,
        mean=(0.485 * 255, 0.456 * 255, 0.406 * 255),
        std=(0.229 * 255, 0.224 * 255, 0.225 * 255),
    ),
    # Pytorch_Retinaface: BGR minus (104, 117, 123), no scaling.
    "retinaface-mobilenet": DetectorSpec(
        name="retinaface-mobilenet",
        build=retinaface_nets.build_mobilenet,
        weights_file="mobilenet0.25_Final.pth",
        url=None,
        source="https://github.com/biubug6/Pytorch_Retinaface (weights/mobilenet0.25_Final.pth)",
        rgb=False,
        mean=(104.0, 117.0, 123.0),
        std=(1.0, 1.0, 1.0),
    ),
}


# ---- OpenCV's Haar cascade: the detector that needs no download -------------------------------
HAAR_FILE = "haarcascade_frontalface_default.xml"


class HaarDetector:
    """OpenCV's frontal-face Haar cascade, shipped inside opencv-python 4.x: nothing to download, so
    `fer predict` can detect faces offline. Boxes only (``landmarks`` None: faces are cropped by box,
    not aligned), no score (``Face.score`` is None, so ``min_score`` has no effect), and it
    misses profile, tilted and small faces that RetinaFace finds: a fallback, not a replacement.
    The cascade often fires twice on one face (a box and a shifted, larger one): overlapping boxes
    are suppressed (IoU above ``HAAR_NMS_IOU``, or mostly inside a stronger box), keeping the box
    with more supporting detections.
    """

    name = HAAR

    def __init__(self, min_size: int = 24) -> None:
        if not hasattr(cv2, "CascadeClassifier"):
            raise FerError("--detector haar needs opencv-python 4.x (5.x dropped CascadeClassifier): "
                           "pip install 'opencv-python>=4.8,<5'")
        path = Path(cv2.data.haarcascades) / HAAR_FILE
        self.cascade = cv2.CascadeClassifier(str(path))
        if self.cascade.empty():
            raise FerError(f"{path}: OpenCV's Haar cascade is missing or unreadable; reinstall opencv-python 4.x")
        self.min_size = min_size

    def detect_faces(self, images: Sequence[np.ndarray], min_score: float = 0.5,
                     nms_threshold: float = NMS_THRESHOLD) -> list[list[Face]]:
        """Faces per image (BGR or grayscale), largest first; the arguments exist for interface parity."""
        out = []
        for image in images:
            gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
            rects, support = self.cascade.detectMultiScale2(cv2.equalizeHist(gray), scaleFactor=1.1, minNeighbors=5,
                                                            minSize=(self.min_size, self.min_size))
            boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in rects], dtype=np.float64).reshape(-1, 4)
            keep = haar_nms(boxes, np.asarray(support, dtype=np.float64).reshape(-1))
            faces = [Face(boxes[i], None, None) for i in keep]
            out.append(sorted(faces, key=lambda f: -f.area))
        return out


HAAR_NMS_IOU = 0.3  # Haar boxes overlapping more than this are one face
HAAR_NMS_INSIDE = 0.6  # ... and so is a box whose area lies this much inside a stronger one


def haar_nms(boxes: np.ndarray, support: np.ndarray) -> list[int]:
    """Greedy suppression of overlapping boxes (x1, y1, x2, y2), strongest ``support`` first."""
    order = sorted(range(len(boxes)), key=lambda i: (-support[i], i))
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep: list[int] = []
    for i in order:
        dup = False
        for k in keep:
            iw = min(boxes[i, 2], boxes[k, 2]) - max(boxes[i, 0], boxes[k, 0])
            ih = min(boxes[i, 3], boxes[k, 3]) - max(boxes[i, 1], boxes[k, 1])
            inter = max(0.0, iw) * max(0.0, ih)
            if inter > HAAR_NMS_IOU * (area[i] + area[k] - inter) or inter > HAAR_NMS_INSIDE * min(area[i], area[k]):
                dup = True
                break
        if not dup:
            keep.append(i)
    return keep


def auto_detector(weights: str | os.PathLike[str] | None = None) -> tuple[str, str]:
    """``--detector auto``: (detector name, why) without downloading anything.

    Explicit ``weights`` mean the RetinaFace variant they are for (by file name, else by their
    parameter names; ResNet-50 when neither tells); otherwise the first RetinaFace whose weights are
    already in torch's hub cache (ResNet-50, then MobileNet); otherwise the Haar cascade.
    """
    if weights is not None:
        return weights_variant(weights), "--detector-weights given"
    for name, spec in DETECTORS.items():
        if hub_weights_path(spec).is_file():
            return name, f"its weights are in torch's hub cache ({hub_weights_path(spec)})"
    return HAAR, ("no RetinaFace weights in torch's hub cache; pass --detector retinaface-resnet50 to download "
                  "them, or --detector-weights mobilenet0.25_Final.pth if you have that file (better on tilted and "
                  "small faces)")


def weights_variant(weights: str | os.PathLike[str]) -> str:
    """The RetinaFace variant a weights file is for: by its published file name, else by its
    parameter names (MobileNet's body has ``stage1``, ResNet-50's ``layer1``); ResNet-50 if unknown."""
    path = Path(weights).expanduser()
    for name, spec in DETECTORS.items():
        if path.name == spec.weights_file:
            return name
    try:
        keys = list(read_state_dict(path))
    except Exception:  # unreadable: loading it will say why
        return "retinaface-resnet50"
    if any(k.startswith("body.stage1") for k in keys):
        return "retinaface-mobilenet"
    return "retinaface-resnet50"


def alternatives(name: str) -> str:
    """What to use instead of detector ``name`` when its weights are missing (for error messages)."""
    alts = [] if name == "retinaface-mobilenet" else [
        "--detector retinaface-mobilenet --detector-weights mobilenet0.25_Final.pth"]
    alts.append("--detector haar (OpenCV's cascade, offline, boxes only)")
    return "; or use " + ", or ".join(alts)


# ---- weights --------------------------------------------------------------------------------
def hub_weights_path(spec: DetectorSpec) -> Path:
    """Where torch's hub cache keeps (or would keep) ``spec``'s weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / spec.weights_file


def _download(url: str, dest: Path, timeout: float = 30.0) -> None:
    with urllib.request.urlopen(url, timeout=timeout) as resp, atomic_path(dest) as tmp:
        with open(tmp, "wb") as fh:
            while block := resp.read(1 << 20):
                fh.write(block)


def resolve_weights(spec: DetectorSpec, explicit: str | os.PathLike[str] | None = None) -> Path:
    """The weights file to load: ``explicit``, else the hub cache (downloading where there is a URL)."""
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise FerError(f"{path}: detector weights not found (--detector-weights); check the path{alternatives(spec.name)}")
        return path
    path = hub_weights_path(spec)
    if path.is_file():
        return path
    where = f"put {spec.weights_file} at {path} (torch's hub cache) or pass --detector-weights PATH"
    if spec.url is None:
        raise FerError(f"{spec.name} weights not found: {path} is missing; get {spec.weights_file} from {spec.source} "
                       f"and {where}{alternatives(spec.name)}")
    log.warning("downloading %s weights from %s to %s", spec.name, spec.url, path)
    try:
        _download(spec.url, path)
    except Exception as exc:  # offline, proxy, HTTP error: all end the same way for the user
        reason = " ".join(str(getattr(exc, "reason", exc)).split()) or type(exc).__name__
        raise FerError(
            f"{spec.name} weights not found: {path} is missing and downloading {spec.url} failed ({reason}); "
            f"download it on a machine with internet access and {where}{alternatives(spec.name)}"
        ) from None
    return path


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a ``.pth`` file or a zip holding one; ``module.`` prefixes removed."""
    archive = None
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            if not any(n.endswith("data.pkl") for n in names):  # a zip archive, not torch's own zip format
                members = [m for m in names if m.endswith((".pth", ".pt", ".ckpt"))]
                if len(members) != 1:
                    raise FerError(f"{path}: zip file should hold exactly one .pth file, found {members or 'none'}")
                archive = io.BytesIO(zf.read(members[0]))
    obj = safe_torch_load(archive if archive is not None else path, path)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise FerError(f"{path}: not a state dict (a mapping of parameter names to tensors)")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def load_detector(
    name: str,
    weights: str | os.PathLike[str] | None = None,
    device: str | torch.device | None = "cpu",
    detect_size: int = DEFAULT_DETECT_SIZE,
) -> RetinaFaceDetector | HaarDetector:
    """Build detector ``name`` (a key of :data:`DETECTORS`, or ``haar``) with its weights on ``device``."""
    if name == HAAR:
        if weights is not None:
            raise FerError("--detector haar uses OpenCV's built-in cascade; drop --detector-weights")
        return HaarDetector()
    if name not in DETECTORS:
        raise FerError(f"unknown detector {name!r}; choose one of {', '.join(['auto', *DETECTORS, HAAR])}")
    check_detect_size(detect_size)
    spec = DETECTORS[name]
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    net = spec.build()  # checks the retinaface package before looking for weights
    path = resolve_weights(spec, weights)
    state = read_state_dict(path)
    try:
        result = net.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        first = next((l.strip() for l in str(exc).splitlines() if "size mismatch" in l), str(exc).splitlines()[0])
        raise FerError(f"{path}: not {spec.name} weights ({first}); pass the {spec.weights_file} checkpoint or choose the matching --detector") from None
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        shown = (missing or result.unexpected_keys)[:3]
        raise FerError(
            f"{path}: not {spec.name} weights ({len(missing)} missing and {len(result.unexpected_keys)} unexpected "
            f"parameters, e.g. {', '.join(shown)}); pass the {spec.weights_file} checkpoint or choose the matching --detector"
        )
    return RetinaFaceDetector(spec, net, dev, detect_size, weights=path)
