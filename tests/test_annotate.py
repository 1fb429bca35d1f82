"""`fer predict --annotate`: readable labels on crowds and small photos, the detector line, bad output folders."""

from __future__ import annotations

import errno
import json
import sys
from itertools import combinations
from pathlib import Path

import cv2
import numpy as np
import pytest

import fercli.predict as fp  # names looked up in each test: on old code each test fails on its own
from fercli.classes import CLASSES_8
from fercli.cli import app
from fercli.inference import BUNDLED_MODEL
from fercli.predict import FaceResult, PredictConfig, run_predict
from fercli.workspace import Workspace


def _face(box, label="happiness", p=0.9):
    probs = {c: (p if c == label else (1 - p) / (len(CLASSES_8) - 1)) for c in CLASSES_8}
    return FaceResult(0, [float(v) for v in box], 0.99, label, probs)


def _overlap(a, b) -> bool:
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def _check_layout(plan, faces, min_placed: float) -> None:
    """Labels inside the picture, never overlapping, text sized by the face within the bounds."""
    side = min(plan.width, plan.height)
    lo = max(fp.TEXT_MIN_PX, round(fp.TEXT_MIN_FRAC * side))
    hi = max(lo, round(fp.TEXT_MAX_FRAC * side))
    rects = [lab.rect for lab in plan.labels if lab.rect is not None]
    assert len(rects) >= min_placed * len(faces), f"only {len(rects)} of {len(faces)} labels placed"
    for r in rects:
        assert 0 <= r[0] < r[2] <= plan.width and 0 <= r[1] < r[3] <= plan.height, r
    for a, b in combinations(rects, 2):
        assert not _overlap(a, b), (a, b)
    short = fp.short_names(list(faces[0].probs))
    for lab, box, face in zip(plan.labels, plan.boxes, faces):
        face_side = min(box[2] - box[0], box[3] - box[1])
        assert lab.wanted_height == min(hi, max(lo, round(fp.TEXT_PER_FACE * face_side)))
        if lab.rect is not None:
            assert lo <= lab.text_height <= lab.wanted_height <= hi
            assert lab.text.split()[0] == short[face.label]  # compact: the short name, then maybe "94%"


def test_crowd_labels_inside_and_never_overlapping():
    """A dense crowd: 70 faces of 26-48 px on 900x560, where full-size labels cannot all fit."""
    rng = np.random.default_rng(1)
    faces = []
    for r in range(7):
        for c in range(10):
            s = int(rng.integers(26, 49))
            x, y = 10 + c * 88 + int(rng.integers(0, 12)), 8 + r * 78 + int(rng.integers(0, 10))
            faces.append(_face([x, y, x + s, y + s], CLASSES_8[(r + c) % 8]))
    plan = fp.plan_annotation(900, 560, faces, CLASSES_8)
    _check_layout(plan, faces, min_placed=0.9)
    assert plan.scale == 1.0 and (plan.width, plan.height) == (900, 560)
    assert {short for short, _, _ in plan.legend} == {"neu", "hap", "sur", "sad", "ang", "dis", "fea", "con"}


def test_text_grows_with_the_face_within_bounds():
    faces = [_face([50, 50, 90, 90]), _face([300, 300, 460, 460]), _face([600, 100, 990, 490])]
    plan = fp.plan_annotation(1000, 1000, faces)
    _check_layout(plan, faces, min_placed=1.0)
    small, big, huge = (lab.text_height for lab in plan.labels)
    assert small == max(fp.TEXT_MIN_PX, round(fp.TEXT_MIN_FRAC * 1000))  # a small face: the floor, still readable
    assert small < big == round(fp.TEXT_PER_FACE * 160)
    assert huge == round(fp.TEXT_MAX_FRAC * 1000)  # a huge face: the ceiling


def test_small_photo_is_enlarged_and_labelled(tmp_path: Path):
    """A 64x64 aligned face (--no-detect: the whole picture is the face): drawn at 256 px, label inside."""
    img = np.full((64, 64, 3), 120, np.uint8)
    face = FaceResult(0, None, None, "surprise", {c: (0.8 if c == "surprise" else 0.2 / 7) for c in CLASSES_8})
    plan = fp.annotate(img, [face], tmp_path / "a.jpg", CLASSES_8)
    assert plan.scale == 4.0 and (plan.width, plan.height) == (256, 256)
    _check_layout(plan, [face], min_placed=1.0)
    assert plan.labels[0].text == "sur 80%" and plan.labels[0].where.startswith("inside")
    drawn = cv2.imread(str(tmp_path / "a.jpg"))
    assert drawn.shape[1] == 256 and drawn.shape[0] > 256  # the legend strip lies below the picture


def test_labels_stay_inside_at_the_edges():
    faces = [_face([0, 0, 80, 80]), _face([920, 0, 1000, 80]), _face([0, 520, 80, 600]), _face([920, 520, 1000, 600])]
    plan = fp.plan_annotation(1000, 600, faces)
    _check_layout(plan, faces, min_placed=1.0)


@pytest.mark.shared
def test_real_crowd_annotation(tmp_path: Path, shared_dir: Path):
    weights = shared_dir / "weights" / "retinaface" / "mobilenet0.25_Final.pth"
    if not weights.is_file():
        pytest.skip(f"{weights} not found")
    photo = shared_dir / "faces" / "crowd_stadium.jpg"
    res = run_predict(PredictConfig(inputs=(str(photo),), model=BUNDLED_MODEL, detector="retinaface-mobilenet",
                                detector_weights=weights, device="cpu", annotate=tmp_path / "ann"), Workspace(tmp_path))
    faces = res.images[0].faces
    assert len(faces) >= 15
    plan = fp.plan_annotation(1024, 624, faces, res.classifier.classes)
    _check_layout(plan, faces, min_placed=1.0)
    drawn = cv2.imread(str(tmp_path / "ann" / "crowd_stadium_annotated.jpg"))
    assert drawn.shape[1] == 1024 and drawn.shape[0] > 624


# ---- defect 6: the detector line ----------------------------------------------------------------
@pytest.mark.shared
def test_detector_line_with_annotate(runner, workspace: Path, shared_dir: Path):
    res = runner.invoke(app, ["predict", str(shared_dir / "faces" / "single_face.jpg"), "--model", str(BUNDLED_MODEL),
                              "--detector", "haar", "--annotate", "ann", "--json"])
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("detector:")]
    assert lines == ["detector: haar"], res.stderr
    assert (workspace / "ann" / "single_face_annotated.jpg").is_file()


# ---- defect 7: bad output folders, and predictions kept when annotating fails --------------------
def _face_png(path: Path) -> Path:
    cv2.imwrite(str(path), np.full((64, 64, 3), 128, np.uint8))
    return path


def test_annotate_into_a_file_is_one_line(runner, workspace: Path):
    _face_png(workspace / "x.png")
    (workspace / "existing_file.mp4").write_bytes(b"x")
    res = runner.invoke(app, ["predict", "x.png", "--no-detect", "--model", str(BUNDLED_MODEL),
                              "--annotate", "existing_file.mp4"])
    assert res.exit_code == 1 and not isinstance(res.exception, FileExistsError), res.exception
    assert res.stderr.startswith("error: --annotate existing_file.mp4") and res.stderr.count("\n") == 1, res.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux") or not Path("/proc/self").exists(), reason="needs /proc")
def test_annotate_into_proc_is_one_line(runner, workspace: Path):
    _face_png(workspace / "x.png")
    res = runner.invoke(app, ["predict", "x.png", "--no-detect", "--model", str(BUNDLED_MODEL), "--annotate", "/proc/nope"])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert res.stderr.startswith("error: --annotate /proc/nope: cannot create the folder"), res.stderr
    assert res.stdout == ""  # refused before any work


def test_failed_annotation_keeps_the_predictions(runner, workspace: Path, monkeypatch):
    for name in ("a.png", "b.png"):
        _face_png(workspace / name)

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fp, "annotate", disk_full)
    res = runner.invoke(app, ["predict", "a.png", "b.png", "--no-detect", "--model", str(BUNDLED_MODEL),
                              "--annotate", "ann", "--json"])
    assert res.exit_code == 1
    out = json.loads(res.stdout)  # every prediction is printed in full
    assert [r["status"] for r in out] == ["ok", "ok"] and all(len(r["faces"]) == 1 for r in out)
    assert "error: --annotate stopped after 0 picture(s)" in res.stderr and "No space left" in res.stderr
    assert "Traceback" not in res.output
