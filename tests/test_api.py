"""The Python API (`from fercli import Recognizer`): inputs, typed results, batches, options."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fercli import FaceResult, Recognizer
from fercli.align.imageio import ImageProblem
from fercli.errors import FerError

pytestmark = pytest.mark.usefixtures("one_thread")  # many tiny forward passes on a shared machine


@pytest.fixture(scope="module")
def rec(mobilenet_weights: Path, tmp_path_factory) -> Recognizer:
    """The bundled model (the workspace is empty) with RetinaFace MobileNet at 320 px (quick: faces here are big)."""
    return Recognizer(detector="retinaface-mobilenet", detector_weights=mobilenet_weights, device="cpu", detect_size=320,
                      workspace=tmp_path_factory.mktemp("api_ws"))


@pytest.mark.shared
def test_every_input_kind_gives_the_same_faces(rec: Recognizer, shared_dir: Path):
    from PIL import Image

    path = shared_dir / "faces" / "astronaut.png"
    faces = rec.predict(path)
    assert len(faces) == 1 and isinstance(faces[0], FaceResult)
    face = faces[0]
    assert face.label == "happiness" and face.probs[face.label] > 0.9 and face.score > 0.99
    assert len(face.box) == 4 and len(face.landmarks) == 5 and list(face.probs) == list(rec.classes)
    assert face.top(2)[0] == ("happiness", face.probs["happiness"])
    rgb = np.asarray(Image.open(path).convert("RGB"))
    for other in (path.read_bytes(), Image.open(path), rgb, np.ascontiguousarray(rgb[:, :, ::-1])):
        color = None if not isinstance(other, np.ndarray) else ("rgb" if other is rgb else "bgr")
        assert rec.predict(other, color=color) == faces
    assert rec.predict(rgb.mean(axis=2).astype(np.uint8))[0].box is not None  # grey arrays need no colour order


def test_arrays_must_say_their_colour_order():
    from fercli.api import _face_pixels

    with pytest.raises(FerError, match="color='bgr'"):
        _face_pixels(np.zeros((8, 8, 3), np.uint8), None)
    with pytest.raises(FerError, match="uint8"):
        _face_pixels(np.zeros((8, 8, 3), np.float32), "rgb")
    assert _face_pixels(np.zeros((8, 8, 4), np.uint8), "rgb").shape == (8, 8, 3)  # alpha dropped


@pytest.mark.shared
def test_batch_detect_false_cap_and_bad_input(rec: Recognizer, shared_dir: Path):
    faces = shared_dir / "faces"
    group, road = rec.predict_batch([faces / "group_children.jpg", faces / "no_face_road.jpg"])
    assert len(group) >= 8 and road == []
    assert [f.index for f in group] == list(range(len(group)))
    whole = rec.predict(faces / "astronaut.png", detect=False)  # the picture is the face
    assert len(whole) == 1 and whole[0].box is None and whole[0].score is None and whole[0].landmarks is None
    pics = [rec.load(faces / "group_children.jpg")]
    (det,) = rec.detect(pics, max_faces=3)
    assert det.capped and len(det.faces) == 3 and det.found >= 8
    with pytest.raises(ImageProblem, match="image 1: not an image"):
        rec.predict_batch([faces / "astronaut.png", b"not an image"])


def test_options_are_checked_before_loading(tmp_path: Path):
    with pytest.raises(FerError, match="--tta must be none or flip"):
        Recognizer(tta="mirror", workspace=tmp_path)
    with pytest.raises(FerError, match="--faces"):
        Recognizer(faces="some", workspace=tmp_path)
    with pytest.raises(FerError, match="no such file|not found|cannot"):
        Recognizer(model=tmp_path / "missing.pt", workspace=tmp_path)


def test_no_detector_and_offline_detectors_only(tmp_path: Path, hub: Path):
    rec = Recognizer(detector="none", device="cpu", workspace=tmp_path)
    assert rec.detector_name is None
    (face,) = rec.predict(np.full((48, 48), 128, np.uint8))  # detection is off: the picture is one face
    assert face.box is None and abs(sum(face.probs.values()) - 1) < 1e-4
    with pytest.raises(FerError, match="detector='none'"):
        rec.predict(np.full((48, 48), 128, np.uint8), detect=True)
    with pytest.raises(FerError, match="not available offline"):  # a request must never start a download
        rec.detector_for("retinaface-resnet50")
    assert rec.detector_for("haar").name == "haar"
