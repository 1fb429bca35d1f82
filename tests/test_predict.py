"""`fer predict`: real photos, the same answer as align + eval, bad inputs, videos."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from _fab import make_pattern_folder

from fercli.align import AlignConfig, run_align
from fercli.classes import CLASSES_7
from fercli.cli import app
from fercli.evaluation import EvalConfig, run_eval
from fercli.importers import ImportConfig, run_import
from fercli.predict import PredictConfig, run_predict
from fercli.training import TrainConfig, run_train
from fercli.workspace import Workspace


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A small checkpoint trained in the tests (48x48 inputs)."""
    root = tmp_path_factory.mktemp("predict_model")
    make_pattern_folder(root / "raw", CLASSES_7, {"train": 6, "valid": 2}, size=48)
    ws = Workspace(root / "ws")
    run_import(ImportConfig(format="folder", src=root / "raw"), ws)
    return run_train(TrainConfig(arch="lfer", input_size=48, epochs=1, batch_size=16, workers=0, targets="none"), ws).best


@pytest.fixture(scope="module")
def weights(mobilenet_weights: Path) -> Path:
    return mobilenet_weights


@pytest.mark.shared
def test_group_photo_json_and_annotation(runner, workspace: Path, model: Path, weights: Path, shared_dir: Path):
    photo = shared_dir / "faces" / "group_children.jpg"
    res = runner.invoke(app, ["predict", str(photo), "--model", str(model), "--detector", "retinaface-mobilenet",
                              "--detector-weights", str(weights), "--json", "--annotate", "annotated"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert len(out) == 1 and out[0]["status"] == "ok" and (out[0]["width"], out[0]["height"]) == (1024, 768)
    faces = out[0]["faces"]
    assert len(faces) >= 8
    for f in faces:
        assert sum(f["probs"].values()) == pytest.approx(1.0, abs=1e-4)
        assert f["label"] == max(f["probs"], key=f["probs"].get) and len(f["box"]) == 4 and f["score"] > 0.8
    drawn = cv2.imread(str(workspace / "annotated" / "group_children_annotated.jpg"))
    h, w = cv2.imread(str(photo)).shape[:2]
    assert drawn is not None and drawn.shape[1] == w and drawn.shape[0] > h  # the legend strip is below the photo


@pytest.mark.shared
def test_predict_equals_align_then_eval(tmp_path: Path, model: Path, weights: Path, shared_dir: Path):
    raw = tmp_path / "raw" / "test" / "happiness"
    raw.mkdir(parents=True)
    shutil.copy(shared_dir / "faces" / "astronaut.png", raw / "astronaut.png")  # PNG: the crop round-trips exactly
    ws = Workspace(tmp_path / "ws")
    run_align(AlignConfig(detector="retinaface-mobilenet", detector_weights=weights, device="cpu"),
              tmp_path / "raw", tmp_path / "ws" / "aligned", ws)
    rep = run_eval(EvalConfig(model=model, split="test", workers=0, device="cpu"), ws)
    via_eval = pd.read_csv(rep.out_dir / "predictions.csv").iloc[0]
    res = run_predict(PredictConfig(inputs=(str(raw / "astronaut.png"),), model=model, detector="retinaface-mobilenet",
                                detector_weights=weights, faces="largest", device="cpu"), ws)
    face = res.images[0].faces[0]
    assert face.label == via_eval["pred"]
    assert max(abs(face.probs[c] - via_eval[f"p_{c}"]) for c in CLASSES_7) < 1e-5


@pytest.mark.shared
def test_bad_inputs_do_not_stop_the_others(runner, workspace: Path, model: Path, weights: Path, shared_dir: Path):
    (workspace / "empty_dir").mkdir()
    (workspace / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (workspace / "clip.mp4").write_bytes(b"not a video")
    args = ["predict", str(shared_dir / "faces" / "astronaut.png"), str(shared_dir / "faces" / "no_face_road.jpg"),
            "missing.jpg", "empty_dir", "broken.jpg", "clip.mp4", "--model", str(model),
            "--detector", "retinaface-mobilenet", "--detector-weights", str(weights), "--json"]
    res = runner.invoke(app, args)
    assert res.exit_code == 1
    status = {Path(r["input"]).name: r["status"] for r in json.loads(res.stdout)}
    assert status == {"astronaut.png": "ok", "no_face_road.jpg": "no_face", "missing.jpg": "missing",
                      "empty_dir": "unreadable", "broken.jpg": "unreadable", "clip.mp4": "unreadable"}
    # a RetinaFace weights file is not a classifier
    res = runner.invoke(app, ["predict", str(shared_dir / "faces" / "astronaut.png"), "--model", str(weights)])
    assert res.exit_code == 1 and "not a fercli checkpoint" in res.stderr


def test_video_and_no_detect_csv(runner, workspace: Path, model: Path):
    frames = [np.full((48, 48, 3), v, np.uint8) for v in (30, 90, 150, 210, 250)]
    writer = cv2.VideoWriter(str(workspace / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 5, (48, 48))
    for f in frames:
        writer.write(f)
    writer.release()
    cv2.imwrite(str(workspace / "face.png"), frames[0])
    (workspace / "other").mkdir()
    cv2.imwrite(str(workspace / "other" / "face.png"), frames[1])
    res = runner.invoke(app, ["predict", "clip.avi", "*.png", "other/face.png", "--model", str(model), "--no-detect",
                              "--every", "2", "--csv", "--annotate", "ann"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (workspace / "ann").iterdir()) == [
        "clip_f000000_annotated.jpg", "clip_f000002_annotated.jpg", "clip_f000004_annotated.jpg",
        "face_2_annotated.jpg", "face_annotated.jpg"]
    rows = list(pd.read_csv(pd.io.common.StringIO(res.stdout)).itertuples())
    assert [(Path(r.input).name, r.frame if r.frame == r.frame else None) for r in rows] == [
        ("clip.avi", 0), ("clip.avi", 2), ("clip.avi", 4), ("face.png", None), ("face.png", None)]
    probs = pd.read_csv(pd.io.common.StringIO(res.stdout))[list(CLASSES_7)].to_numpy()
    assert np.allclose(probs.sum(1), 1.0, atol=1e-4)


def test_no_model_outside_a_workspace(runner, workspace: Path, monkeypatch):
    monkeypatch.setenv("FER_BUNDLED_MODEL", "none")  # otherwise the bundled FERPlus model answers
    cv2.imwrite(str(workspace / "face.png"), np.zeros((48, 48, 3), np.uint8))
    res = runner.invoke(app, ["predict", "face.png", "--no-detect"])
    assert res.exit_code == 1 and "no model: pass --model" in res.stderr


def test_auto_detector_never_downloads(hub: Path, tmp_path: Path):
    from fercli.align.detectors import DETECTORS, auto_detector, hub_weights_path

    assert auto_detector()[0] == "haar"
    assert auto_detector(tmp_path / "w.pth")[0] == "retinaface-resnet50"  # explicit weights: the default detector
    cached = hub_weights_path(DETECTORS["retinaface-mobilenet"])
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"")
    assert auto_detector() == ("retinaface-mobilenet", f"its weights are in torch's hub cache ({cached})")


def test_haar_detector_on_real_photos(shared_dir: Path):
    from fercli.align.detectors import load_detector

    det = load_detector("haar")
    single, road = (cv2.imread(str(shared_dir / "faces" / n)) for n in ("single_face.jpg", "no_face_road.jpg"))
    found = det.detect_faces([single, road])
    assert len(found[0]) == 1 and found[1] == []
    face = found[0][0]
    assert face.landmarks is None and face.width > 100 and face.score is None  # haar has no score
    with pytest.raises(Exception, match="drop --detector-weights"):
        load_detector("haar", shared_dir / "x.pth")


# RetinaFace MobileNet's boxes of the 8 children in group_children.jpg (README, `fer predict` example)
CHILDREN = [(162, 137, 278, 278), (709, 176, 804, 303), (166, 336, 305, 505), (508, 122, 624, 269),
            (836, 312, 955, 459), (322, 103, 421, 230), (573, 314, 704, 477), (364, 266, 497, 436)]


def _iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_haar_boxes_each_face_once(runner, workspace: Path, shared_dir: Path):
    """Haar fired twice on one child (IoU 0.49); now overlapping boxes are suppressed, and no score is reported."""
    from fercli.align.detectors import load_detector
    from fercli.inference import BUNDLED_MODEL

    photo = shared_dir / "faces" / "group_children.jpg"
    faces = load_detector("haar").detect_faces([cv2.imread(str(photo))])[0]
    boxes = [f.box.tolist() for f in faces]
    assert all(_iou(a, b) <= 0.3 for i, a in enumerate(boxes) for b in boxes[i + 1:])
    for child in CHILDREN:  # no child boxed twice
        assert sum(_iou(child, b) > 0.3 for b in boxes) <= 1, child
    assert sum(any(_iou(child, b) > 0.3 for b in boxes) for child in CHILDREN) >= 7
    assert all(f.score is None for f in faces)
    res = runner.invoke(app, ["predict", str(photo), "--model", str(BUNDLED_MODEL), "--detector", "haar", "--json"])
    assert res.exit_code == 0, res.output
    assert [f["score"] for f in json.loads(res.stdout)[0]["faces"]] == [None] * len(faces)  # null, not 1.0
    res = runner.invoke(app, ["predict", str(photo), "--model", str(BUNDLED_MODEL), "--detector", "haar", "--csv"])
    assert set(pd.read_csv(pd.io.common.StringIO(res.stdout))["score"].astype(str)) == {"-"}


def test_predict_offline_with_no_options(runner, workspace: Path, model: Path, shared_dir: Path, hub: Path,
                                         monkeypatch):
    """`fer predict face.jpg` after a bare install: no weights cached, no workspace student."""
    monkeypatch.setenv("FER_BUNDLED_MODEL", str(model))  # stands in for the shipped model
    photos = [str(shared_dir / "faces" / n) for n in ("single_face.jpg", "no_face_road.jpg")]
    res = runner.invoke(app, ["predict", *photos, "--json"])
    assert res.exit_code == 1, res.output  # the road has no face
    assert "using student (bundled)" in res.stderr and "detector: haar (auto: no RetinaFace weights" in res.stderr
    face, road = json.loads(res.stdout)
    assert face["status"] == "ok" and len(face["faces"]) == 1 and face["faces"][0]["box"][2] > 300
    assert road["status"] == "no_face" and road["reason"] == "no face found by haar"


def test_table_gives_the_reason_not_a_probability_for_a_picture_without_a_face(runner, workspace: Path, hub: Path):
    """A blank picture (Haar finds nothing) and a missing file: p is "-" and the reason has its own column."""
    blank = workspace / "blank.png"
    cv2.imwrite(str(blank), np.full((96, 96, 3), 128, np.uint8))
    res = runner.invoke(app, ["predict", str(blank), "missing.jpg", "--detector", "haar"], env={"COLUMNS": "200"})
    assert res.exit_code == 1, res.output
    header = next(line for line in res.stdout.splitlines() if "input" in line and "label" in line)
    assert [c.strip() for c in header.strip("┃ ").split("┃")] == ["input", "face", "box", "label", "p", "score", "reason"]
    rows = {Path(line.split("│")[1].strip()).name: [c.strip() for c in line.strip("│ ").split("│")]
            for line in res.stdout.splitlines() if line.startswith("│")}
    assert rows["blank.png"][3:] == ["no_face", "-", "-", "no face found by haar"]
    assert rows["missing.jpg"][3:] == ["missing", "-", "-", "file not found"]
    # --json already carries status and reason; it is unchanged
    res = runner.invoke(app, ["predict", str(blank), "--detector", "haar", "--json"])
    (only,) = json.loads(res.stdout)
    assert only["status"] == "no_face" and only["reason"] == "no face found by haar" and only["faces"] == []
    # with every picture predicted there is no reason column
    res = runner.invoke(app, ["predict", str(blank), "--no-detect"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    header = next(line for line in res.stdout.splitlines() if "input" in line and "label" in line)
    assert "reason" not in header and "p" in header
