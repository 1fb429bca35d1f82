"""`fer align` through the CLI: folders with labels and splits, workspace integration, reruns, errors."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from fercli.align.transform import ARCFACE_112, template, transform_points
from fercli.cli import app
from fercli.schema import read_manifest, write_manifest
from fercli.workspace import Workspace


def _img(seed: int, h: int = 60, w: int = 50) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), (5, 5), 0)


@pytest.fixture
def photos(workspace: Path) -> Path:
    """photos/{train,valid}/<class>/ with mixed extensions and cases, one grey image, one bad file."""
    root = workspace / "photos"
    files = {
        "train/happy/a.jpg": _img(1), "train/happy/B.JPG": _img(2), "train/sad/c.png": _img(3),
        "train/sad/deep/d.webp": _img(4), "valid/happy/e.bmp": _img(5), "valid/sad/f.jpeg": _img(6),
    }
    for rel, img in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(root / rel), img)
    cv2.imwrite(str(root / "valid/sad/grey.png"), cv2.cvtColor(_img(7), cv2.COLOR_BGR2GRAY))
    (root / "train/sad/broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "train/sad/notes.txt").write_text("not an image, not picked up")
    return root


def test_help_shows_an_example(runner) -> None:
    res = runner.invoke(app, ["align", "--help"])
    assert res.exit_code == 0
    for text in ("fer align photos/ aligned/ --detector retinaface-mobilenet", "--detector", "--faces", "--min-score",
                 "--min-face-size", "--size", "--margin", "--device", "--batch-size", "--workers", "--detector-weights"):
        assert text in res.output


def test_end_to_end_folder_with_detector_none(runner, workspace: Path, photos: Path) -> None:
    res = runner.invoke(app, ["align", "photos", "aligned", "--detector", "none", "--size", "48"])
    assert res.exit_code == 0, res.output
    assert "ok" in res.output and "unreadable" in res.output and "wrote aligned/manifest.parquet" in res.output
    m = read_manifest(workspace / "aligned" / "manifest.parquet")
    df = m.df.set_index("src_path")
    assert len(df) == 8
    assert df.loc["train/sad/broken.jpg", "status"] == "unreadable"
    ok = df[df["status"] == "ok"]
    assert sorted(ok["path"]) == sorted(ok.index)  # crops mirror the source paths
    assert df.loc["train/happy/B.JPG", ["split", "label_name"]].tolist() == ["train", "happiness"]
    assert df.loc["valid/sad/f.jpeg", ["split", "label_name"]].tolist() == ["valid", "sadness"]
    for rel in ok["path"]:
        crop = cv2.imread(str(workspace / "aligned" / rel), cv2.IMREAD_UNCHANGED)
        assert crop.shape[:2] == (48, 48)
    assert cv2.imread(str(workspace / "aligned/valid/sad/grey.png"), cv2.IMREAD_UNCHANGED).ndim == 2
    assert Workspace(workspace).current_path("dataset") == workspace / "aligned" / "manifest.parquet"
    assert m.meta["align"]["source_kind"] == "folder" and m.meta["provenance"]["summary"]["faces"] == 7


def test_rerun_skips_finished_and_json(runner, workspace: Path, photos: Path) -> None:
    args = ["align", "photos", "aligned", "--detector", "none", "--size", "48", "--json"]
    first = json.loads(runner.invoke(app, args).stdout)
    assert first["processed"] == 8 and first["statuses"] == {"ok": 7, "unreadable": 1}
    cv2.imwrite(str(photos / "train/happy/new.png"), _img(9))
    second = json.loads(runner.invoke(app, args).stdout)
    assert second["processed"] == 1 and second["skipped_done_before"] == 8 and second["images"] == 9
    # a changed source image is redone
    cv2.imwrite(str(photos / "train/happy/a.jpg"), _img(10, 70, 70))
    third = json.loads(runner.invoke(app, args).stdout)
    assert third["processed"] == 1
    # other settings need --overwrite
    res = runner.invoke(app, ["align", "photos", "aligned", "--detector", "none", "--size", "64"])
    assert res.exit_code == 1 and "other settings" in res.output and "size 48 -> 64" in res.output
    res = runner.invoke(app, ["align", "photos", "aligned", "--detector", "none", "--size", "64", "--overwrite", "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["processed"] == 9
    assert cv2.imread(str(workspace / "aligned/train/happy/a.jpg")).shape == (64, 64, 3)


def test_src_omitted_uses_the_workspace_dataset(runner, workspace: Path, photos: Path) -> None:
    assert runner.invoke(app, ["data", "import", "folder", "photos"]).exit_code == 0
    res = runner.invoke(app, ["align", "--detector", "none", "--size", "40", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["source_kind"] == "manifest" and out["images"] == 8
    assert (workspace / "aligned" / "manifest.parquet").is_file()
    # now the current dataset is aligned/manifest.parquet itself: a rerun realigns from its source
    again = json.loads(runner.invoke(app, ["align", "--detector", "none", "--size", "40", "--json"]).stdout)
    assert again["processed"] == 0 and again["skipped_done_before"] == 8


def test_config_file_sets_defaults(runner, workspace: Path, photos: Path) -> None:
    (workspace / "fer.toml").write_text('[align]\ndetector = "none"\nsize = 36\n')
    res = runner.invoke(app, ["align", "photos", "out"])
    assert res.exit_code == 0, res.output
    assert cv2.imread(str(workspace / "out/train/happy/a.jpg")).shape == (36, 36, 3)
    (workspace / "fer.toml").write_text('[align]\nfaces = "several"\n')
    res = runner.invoke(app, ["align", "photos", "out"])
    assert res.exit_code == 1 and "faces" in res.output and "several" in res.output


def test_nothing_processed_exits_non_zero_but_records_every_file(runner, workspace: Path) -> None:
    bad = workspace / "bad"
    bad.mkdir()
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "text.png").write_text("hello")
    res = runner.invoke(app, ["align", "bad", "out", "--detector", "none"])
    assert res.exit_code == 1
    assert "no face could be aligned" in res.output
    df = read_manifest(workspace / "out" / "manifest.parquet").df
    assert sorted(df["status"]) == ["unreadable", "unreadable"]
    assert set(df["reason"]) == {"empty file (0 bytes)", "not an image (unrecognised file format)"}
    assert Workspace(workspace).current_path("dataset") is None  # a faceless manifest is not the dataset


@pytest.mark.parametrize("args,message", [
    (["photos", "photos/aligned"], "inside SRC"),
    (["photos/train/happy/a.jpg", "out"], "SRC must be a folder of images"),
    (["nowhere", "out"], "nowhere: no such file or directory"),
    (["photos", "out", "--detector", "resnet"], "detector"),
    (["photos", "out", "--size", "4"], "--size must be"),
])
def test_bad_arguments_are_one_line_errors(runner, workspace: Path, photos: Path, args, message) -> None:
    res = runner.invoke(app, ["align", *args])
    assert res.exit_code == 1 and message in res.output, res.output


def test_landmarks_detector_uses_manifest_points(runner, workspace: Path) -> None:
    """RAF-DB-style manifest landmarks (and a box-only row) drive the crop; no detector runs."""
    root = workspace / "raf"
    root.mkdir()
    h, w = 300, 260
    m = np.array([[1.4, -0.2, 60.0], [0.2, 1.4, 40.0]])  # the template (112 px) placed into the photo
    lm = transform_points(m, ARCFACE_112)
    img = np.zeros((h, w, 3), np.uint8)
    for x, y in lm:
        cv2.circle(img, (int(round(x * 16)), int(round(y * 16))), 4 * 16, (255, 255, 255), -1, cv2.LINE_AA, shift=4)
    for name in ("a.png", "b.png", "c.png"):
        cv2.imwrite(str(root / name), img)
    rows = pd.DataFrame({"path": ["a.png", "b.png", "c.png"], "split": "train", "label": [0, 1, -1],
                         "label_name": ["neutral", "happiness", None]})
    for i, col in enumerate(f"lm{j}_{a}" for j in range(5) for a in "xy"):
        rows[col] = [lm.reshape(-1)[i], np.nan, np.nan]
    for col, v in zip(("box_x", "box_y", "box_w", "box_h"), (50.0, 40.0, 150.0, 170.0)):
        rows[col] = [v, v, np.nan]
    write_manifest(rows, ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear"), root,
                   workspace / "raf.parquet")
    res = runner.invoke(app, ["align", "raf.parquet", "out", "--detector", "landmarks", "--size", "112", "--json"])
    assert res.exit_code == 0, res.output
    df = read_manifest(workspace / "out" / "manifest.parquet").df.set_index("src_path")
    assert df.loc["a.png", "status"] == "ok" and df.loc["b.png", "status"] == "ok"
    assert "no landmarks: cropped the face box" in df.loc["b.png", "reason"]
    assert df.loc["c.png", "status"] == "no_landmarks"
    assert df.loc["a.png", "lm0_x"] == pytest.approx(lm[0, 0], abs=1e-3)
    assert df.loc["a.png", "label_name"] == "neutral" and pd.isna(df.loc["c.png", "label_name"])
    crop = cv2.imread(str(workspace / "out" / "a.png"), cv2.IMREAD_GRAYSCALE)
    for x, y in template(112):  # each landmark dot lands on its template point
        assert crop[int(round(y)), int(round(x))] > 200


def test_landmarks_detector_needs_points_or_boxes(runner, workspace: Path, photos: Path) -> None:
    res = runner.invoke(app, ["align", "photos", "out", "--detector", "landmarks"])
    assert res.exit_code == 1 and "needs five landmarks" in res.output


def test_realigning_an_aligned_manifest(runner, workspace: Path, photos: Path) -> None:
    """An aligned manifest can be a SRC (e.g. to resize): its ok rows are the images; its landmarks,
    which belong to the original photos, are not reused on the crops."""
    assert runner.invoke(app, ["align", "photos", "a1", "--detector", "none", "--size", "48"]).exit_code == 0
    res = runner.invoke(app, ["align", "a1/manifest.parquet", "a2", "--detector", "none", "--size", "24", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["images"] == 7  # the unreadable row of a1 is not an image
    assert cv2.imread(str(workspace / "a2/train/happy/a.jpg")).shape == (24, 24, 3)
    res = runner.invoke(app, ["align", "a1/manifest.parquet", "a3", "--detector", "landmarks"])
    assert res.exit_code == 1 and "needs five landmarks" in res.output
