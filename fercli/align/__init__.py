"""Face detection and five-point alignment (``fer align``; reused as-is by later stages such as ``fer predict``).

Library use::

    from fercli.align import load_detector, align_face, load_image
    det = load_detector("retinaface-mobilenet", weights="mobilenet0.25_Final.pth", device="cpu")
    img = load_image("photo.jpg").image
    faces = det.detect_faces([img], min_score=0.8)[0]          # best first
    crop = align_face(img, faces[0].landmarks, size=224)        # ArcFace template, 224x224

Modules: :mod:`~fercli.align.config` (options and detection defaults), :mod:`~fercli.align.sources`
(what to align), :mod:`~fercli.align.detectors` (registry, weights, Haar) with
:mod:`~fercli.align.retinaface_detector` (batched inference) and :mod:`~fercli.align.retinaface_nets`
(the networks), :mod:`~fercli.align.faces` (which faces to keep and their crops),
:mod:`~fercli.align.transform` (the alignment itself), :mod:`~fercli.align.imageio` (robust decoding),
and `fer align`'s run: :mod:`~fercli.align.runner` with :mod:`~fercli.align.dataset`,
:mod:`~fercli.align.journal` and :mod:`~fercli.align.outputs`.
"""

from typing import TYPE_CHECKING

from fercli.align.config import AlignConfig
from fercli.lazy import lazy_exports

if TYPE_CHECKING:
    from fercli.align.detectors import DETECTORS, RetinaFaceDetector, load_detector, resolve_device
    from fercli.align.faces import Face, select_faces
    from fercli.align.imageio import ImageProblem, LoadedImage, load_image, write_image
    from fercli.align.runner import AlignResult, run_align
    from fercli.align.sources import Source, load_source
    from fercli.align.transform import (ARCFACE_112, LANDMARK_WEIGHTS, align_face, alignment_matrix, box_crop,
                                        resize_face, template)

# Everything but the config imports OpenCV, numpy or torch: loaded on first use (PEP 562), so that a
# command builds and validates AlignConfig before it pays for them.
_MODULES = {
    "detectors": ("DETECTORS", "RetinaFaceDetector", "load_detector", "resolve_device"),
    "faces": ("Face", "select_faces"),
    "imageio": ("ImageProblem", "LoadedImage", "load_image", "write_image"),
    "runner": ("AlignResult", "run_align"),
    "sources": ("Source", "load_source"),
    "transform": ("ARCFACE_112", "LANDMARK_WEIGHTS", "align_face", "alignment_matrix", "box_crop", "resize_face",
                  "template"),
}


__getattr__ = lazy_exports(__name__, _MODULES)

__all__ = [
    "ARCFACE_112", "DETECTORS", "LANDMARK_WEIGHTS", "AlignConfig", "AlignResult", "Face", "ImageProblem",
    "LoadedImage", "RetinaFaceDetector", "Source", "align_face", "alignment_matrix", "box_crop", "load_detector",
    "load_image", "load_source", "resize_face", "resolve_device", "run_align", "select_faces", "template", "write_image",
]
