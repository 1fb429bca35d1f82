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


def test_errors_name_the_input_and_what_is_accepted(tmp_path: Path):
    rec = Recognizer(detector="none", device="cpu", workspace=tmp_path)
    missing = tmp_path / "nope" / "photo.jpg"
    with pytest.raises(ImageProblem) as info:
        rec.predict(missing)
    assert info.value.status == "missing"
    assert str(info.value) == (f"{missing}: file not found (a str or Path is read as an image file; other pictures "
                               "go in as encoded bytes, a PIL image or a uint8 numpy array)")
    with pytest.raises(ImageProblem, match="URLs are not fetched"):
        rec.predict("https://example.org/face.jpg")
    accepted = "pass a file path (str or Path), encoded image bytes, a PIL image or a uint8 numpy array"
    for obj, kind in ((None, "NoneType"), (12, "int"), ({"a": 1}, "dict"), (Path, "type")):
        with pytest.raises(FerError) as info:
            rec.predict(obj)
        assert str(info.value) == f"not a picture: got {kind}; {accepted}", obj
    with pytest.raises(FerError, match=r"^not a picture: got list; .*; for several pictures, call predict_batch$"):
        rec.predict([np.zeros((8, 8), np.uint8)])
    with pytest.raises(FerError, match=r"^image 1: not a picture: got NoneType"):  # a batch names the position
        rec.predict_batch([np.zeros((8, 8), np.uint8), None])
    with pytest.raises(FerError, match="predict_batch takes a list of pictures, got one str"):
        rec.predict_batch(str(missing))


def test_recognizer_says_which_model_and_detector_it_picked(tmp_path: Path, hub: Path):
    from fercli.inference import bundled_model

    plain = Recognizer(detector="none", device="cpu", workspace=tmp_path)
    assert plain.model_path == bundled_model() and plain.model_name == bundled_model().name
    assert plain.model_origin == "bundled" and plain.detector == "none" and plain.detector_name is None
    assert repr(plain) == (f"<Recognizer model={plain.model_name!r} (bundled, {plain.classifier.arch}, 8 classes) at "
                           f"{str(plain.model_path)!r}, detector='none', tta={plain.tta!r}, device='cpu'>")
    auto = Recognizer(model=plain.model_path, device="cpu", workspace=tmp_path)  # the hub cache is empty: haar
    assert auto.detector == auto.detector_name == "haar" and "no RetinaFace weights" in auto.detector_note
    assert auto.model_origin == "given" and "detector='haar' (auto)" in repr(auto)
