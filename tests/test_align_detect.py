"""RetinaFace detection and alignment on real photos (../shared), batching, weights handling, ResNet-50."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from align_helpers import WEIGHTS_REL, write_bad_inputs, write_huge

from fercli.align import AlignConfig, align_face, alignment_matrix, load_detector, run_align, template
from fercli.align import detectors as det_mod
from fercli.align.transform import transform_points
from fercli.errors import FerError


@pytest.fixture(scope="module")
def weights(shared_dir: Path) -> Path:
    path = shared_dir / WEIGHTS_REL
    if not path.is_file():
        pytest.skip(f"RetinaFace MobileNet weights not found at {path}")
    return path


@pytest.fixture(scope="module")
def mobilenet(weights: Path):
    return load_detector("retinaface-mobilenet", weights, "cpu")


@pytest.fixture(scope="module")
def photos(shared_dir: Path) -> dict[str, np.ndarray]:
    faces = shared_dir / "faces"
    names = ("astronaut.png", "group_children.jpg", "no_face_road.jpg", "single_face.jpg", "crowd_stadium.jpg")
    if not all((faces / n).is_file() for n in names):
        pytest.skip(f"test photos not found under {faces}")
    return {n: cv2.imread(str(faces / n)) for n in names}


def _check_face_geometry(face) -> None:
    (lex, ley), (rex, rey), (nx, ny), (lmx, lmy), (rmx, rmy) = face.landmarks
    assert lex < rex, "left eye must be left of the right eye"
    assert max(ley, rey) < ny < min(lmy, rmy), "eyes above nose above mouth"
    assert lmx < rmx
    x1, y1, x2, y2 = face.box
    assert (face.landmarks >= [x1, y1]).all() and (face.landmarks <= [x2, y2]).all()


def test_astronaut_one_face_and_aligned_eyes_on_template(mobilenet, photos) -> None:
    img = photos["astronaut.png"]
    faces = mobilenet.detect_faces([img], min_score=0.5)[0]
    assert len(faces) == 1
    face = faces[0]
    assert face.score > 0.9
    _check_face_geometry(face)
    # Where the eyes land in the 224 crop: within 4 px of the template's eye points.
    eyes = transform_points(alignment_matrix(face.landmarks, 224), face.landmarks)[:2]
    assert np.linalg.norm(eyes - template(224)[:2], axis=1).max() < 4.0
    # And the crop's content agrees: detecting again on the crop finds the eyes near the template.
    crop = align_face(img, face.landmarks, 224)
    again = mobilenet.detect_faces([crop], min_score=0.5)[0]
    assert len(again) == 1 and again[0].score > 0.9
    assert np.linalg.norm(again[0].landmarks[:2] - template(224)[:2], axis=1).max() < 8.0


def test_group_has_at_least_8_faces_and_road_none(mobilenet, photos) -> None:
    group, road = mobilenet.detect_faces([photos["group_children.jpg"], photos["no_face_road.jpg"]], min_score=0.5)
    assert len(group) >= 8
    for f in group:
        _check_face_geometry(f)
    assert road == []


@pytest.mark.parametrize("group_by_size", [True, False])
def test_batched_detection_matches_one_image_at_a_time(mobilenet, photos, group_by_size: bool) -> None:
    """Grouped by size (CPU) or all padded into one batch (GPU style): padding never moves a face."""
    imgs = list(photos.values())
    # The crowd (resized to 390x640) has faces at its bottom edge; batched with square photos it gets
    # 250 rows of padding right under them. Unmasked, that padding moves them by ~1 px.
    assert len({im.shape for im in imgs}) > 1
    mobilenet.group_by_size = group_by_size
    try:
        batched = mobilenet.detect_faces(imgs, min_score=0.5)
    finally:
        mobilenet.group_by_size = True
    for img, faces in zip(imgs, batched):
        single = mobilenet.detect_faces([img], min_score=0.5)[0]
        assert len(single) == len(faces)
        for a in single:
            d = min(max(np.abs(a.box - b.box).max(), np.abs(a.landmarks - b.landmarks).max()) for b in faces)
            assert d <= 0.25


def test_grey_photo_detects_the_same_face(mobilenet, photos) -> None:
    colour = photos["astronaut.png"]
    grey = cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY)
    fc = mobilenet.detect_faces([colour])[0][0]
    fg = mobilenet.detect_faces([grey])[0][0]
    assert fg.score > 0.9
    assert np.abs(fc.landmarks - fg.landmarks).max() < 4.0
    crop = align_face(grey, fg.landmarks, 112)
    assert crop.shape == (112, 112)


def test_module_prefixed_checkpoint_loads_the_same(weights: Path, tmp_path: Path, photos) -> None:
    state = torch.load(weights, map_location="cpu", weights_only=True)
    prefixed = {("module." + k if not k.startswith("module.") else k): v for k, v in state.items()}
    torch.save(prefixed, tmp_path / "prefixed.pth")
    a = load_detector("retinaface-mobilenet", tmp_path / "prefixed.pth").detect_faces([photos["single_face.jpg"]])[0]
    b = load_detector("retinaface-mobilenet", weights).detect_faces([photos["single_face.jpg"]])[0]
    assert len(a) == len(b) == 1 and np.allclose(a[0].box, b[0].box)


def test_wrong_weights_are_one_clear_error(weights: Path, tmp_path: Path) -> None:
    with pytest.raises(FerError, match="not retinaface-resnet50 weights"):
        load_detector("retinaface-resnet50", weights)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(FerError, match="junk.pth: not a readable PyTorch file"):
        load_detector("retinaface-mobilenet", tmp_path / "junk.pth")
    with pytest.raises(FerError, match="nope.pth: detector weights not found"):
        load_detector("retinaface-mobilenet", tmp_path / "nope.pth")


def test_run_align_on_real_and_bad_photos(weights: Path, shared_dir: Path, photos, tmp_path: Path) -> None:
    """The whole path with RetinaFace MobileNet: real photos, every bad-input case, statuses, rerun."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("astronaut.png", "group_children.jpg", "no_face_road.jpg"):
        shutil.copyfile(shared_dir / "faces" / name, src / name)
    expected = write_bad_inputs(src / "bad", photos["astronaut.png"])
    write_huge(src / "bad" / "huge.jpg", photos["astronaut.png"])
    expected["huge.jpg"] = "ok"
    cfg = AlignConfig(detector="retinaface-mobilenet", detector_weights=weights, faces="all", min_score=0.5,
                      device="cpu", workers=0, batch_size=4)
    result = run_align(cfg, src, tmp_path / "out")
    df = pd.read_parquet(result.manifest_path)
    assert result.images == 3 + len(expected) == df["src_path"].nunique()

    astro = df[df["src_path"] == "astronaut.png"]
    assert len(astro) == 1 and astro["status"].iloc[0] == "ok" and astro["score"].iloc[0] > 0.9
    assert (astro[["lm0_x"]].to_numpy() < astro[["lm1_x"]].to_numpy()).all()
    group = df[df["src_path"] == "group_children.jpg"]
    assert len(group) >= 8 and (group["status"] == "ok").all()
    assert sorted(group["face_index"]) == list(range(len(group)))
    road = df[df["src_path"] == "no_face_road.jpg"]
    assert list(road["status"]) == ["no_face"] and road["face_index"].iloc[0] == -1 and "no face" in road["reason"].iloc[0]

    for name, status in expected.items():
        row = df[df["src_path"] == f"bad/{name}"]
        assert list(row["status"]) == [status], name
        assert row["reason"].iloc[0] or status == "ok"
    assert "reduced" in df[df["src_path"] == "bad/huge.jpg"]["reason"].iloc[0]
    huge = df[df["src_path"] == "bad/huge.jpg"].iloc[0]
    assert huge["box_x"] > 2000 and huge["box_w"] > 400  # in the 8000x6000 original's pixels
    exif = df[df["src_path"] == "bad/exif_rotated.jpg"].iloc[0]
    assert exif["lm0_y"] < exif["lm3_y"] and "EXIF" in exif["reason"]  # upright after rotation

    for p in df[df["status"] == "ok"]["path"]:
        crop = cv2.imread(str(tmp_path / "out" / p), cv2.IMREAD_UNCHANGED)
        assert crop.shape[:2] == (224, 224)
    assert cv2.imread(str(tmp_path / "out/bad/grey.png"), cv2.IMREAD_UNCHANGED).ndim == 2
    assert result.counts["ok"] == int((df["status"] == "ok").sum())
    assert result.counts["unreadable"] == 3 and result.counts["no_face"] == 1

    again = run_align(cfg, src, tmp_path / "out")
    assert again.processed == 0 and again.skipped == result.images
    pd.testing.assert_frame_equal(pd.read_parquet(again.manifest_path), df)


def test_resnet50_with_random_weights_runs_the_whole_path(tmp_path: Path, workspace: Path, runner) -> None:
    """The real retinaface-pytorch ResNet-50 network (random weights: its own cannot be downloaded here)."""
    from fercli.cli import app

    torch.manual_seed(0)
    net = det_mod.DETECTORS["retinaface-resnet50"].build()
    torch.save(net.state_dict(), tmp_path / "resnet50_random.pth")
    src = tmp_path / "photos"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(src / f"p{i}.jpg"), rng.integers(0, 255, (90 + 10 * i, 120, 3), dtype=np.uint8))
    res = runner.invoke(app, ["align", str(src), "out", "--detector", "retinaface-resnet50",
                              "--detector-weights", str(tmp_path / "resnet50_random.pth"), "--min-score", "0.0",
                              "--faces", "best", "--detect-size", "128", "--size", "96", "--device", "cpu", "--json"])
    assert res.exit_code == 0, res.output
    df = pd.read_parquet(workspace / "out" / "manifest.parquet")
    assert sorted(df["src_path"]) == ["p0.jpg", "p1.jpg", "p2.jpg"]
    assert (df["status"] == "ok").all()  # min score 0: random weights still "find" a face in every image
    for p in df["path"]:
        assert cv2.imread(str(workspace / "out" / p)).shape == (96, 96, 3)
    from fercli.schema import read_parquet_meta

    meta = read_parquet_meta(workspace / "out" / "manifest.parquet")
    assert meta["provenance"]["inputs"]["detector_weights"]["path"].endswith("resnet50_random.pth")
    assert meta["align"]["settings"]["detector"] == "retinaface-resnet50"


def test_missing_weights_offline_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(url, dest, timeout=30.0):
        raise OSError("[Errno 101] Network is unreachable")

    monkeypatch.setattr(det_mod, "_download", offline)
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    with pytest.raises(FerError) as info:
        load_detector("retinaface-resnet50", None, "cpu")
    msg = str(info.value)
    assert str(hub / "retinaface_resnet50_2020-07-20-f168fae3c.zip") in msg
    assert "Network is unreachable" in msg and "--detector-weights PATH" in msg and "\n" not in msg
    with pytest.raises(FerError) as info:
        load_detector("retinaface-mobilenet", None, "cpu")
    msg = str(info.value)
    assert str(hub / "mobilenet0.25_Final.pth") in msg and "Pytorch_Retinaface" in msg and "--detector-weights PATH" in msg


def test_weights_found_in_the_hub_cache(weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    shutil.copyfile(weights, hub / "mobilenet0.25_Final.pth")
    assert load_detector("retinaface-mobilenet", None, "cpu").weights == hub / "mobilenet0.25_Final.pth"


def test_resnet_zip_weights_are_read(tmp_path: Path) -> None:
    """retinaface-pytorch publishes its weights as a zip holding one .pth."""
    import zipfile

    state = {"fpn.output1.0.weight": torch.zeros(2, 2)}
    torch.save(state, tmp_path / "w.pth")
    with zipfile.ZipFile(tmp_path / "w.zip", "w") as zf:
        zf.write(tmp_path / "w.pth", "retinaface_resnet50.pth")
    got = det_mod.read_state_dict(tmp_path / "w.zip")
    assert list(got) == ["fpn.output1.0.weight"]


def test_missing_retinaface_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "retinaface", None)
    with pytest.raises(FerError, match=r"pip install --no-deps retinaface-pytorch==0\.0\.8"):
        load_detector("retinaface-mobilenet", None, "cpu")


def test_unavailable_device_is_an_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(FerError, match="CUDA is not available"):
        det_mod.resolve_device("cuda")
    with pytest.raises(FerError, match="not a device"):
        det_mod.resolve_device("gpu7")
    assert det_mod.resolve_device("auto").type == "cpu"


def test_dataloader_workers_give_the_same_manifest(weights: Path, shared_dir: Path, photos, tmp_path: Path) -> None:
    """Decoding in worker processes (forked after cv2 and torch have run threads here) changes nothing."""
    src = tmp_path / "src"
    src.mkdir()
    for i, name in enumerate(["astronaut.png", "group_children.jpg", "no_face_road.jpg", "single_face.jpg"] * 2):
        shutil.copyfile(shared_dir / "faces" / name, src / f"{i}_{name}")
    cv2.resize(photos["group_children.jpg"], (2000, 1500))  # make sure cv2's thread pool is alive before the fork
    frames = []
    for workers in (0, 2):
        cfg = AlignConfig(detector="retinaface-mobilenet", detector_weights=weights, faces="all", device="cpu",
                          workers=workers, batch_size=2)
        result = run_align(cfg, src, tmp_path / f"out{workers}")
        frames.append(pd.read_parquet(result.manifest_path))
    pd.testing.assert_frame_equal(frames[0], frames[1])
    assert (frames[0]["status"] == "ok").sum() >= 2 + 2 + 16


def test_a_class_the_detector_misses_is_reported(weights: Path, shared_dir: Path, tmp_path: Path) -> None:
    """A class whose faces the detector misses is named in the result, not silently dropped."""
    src = tmp_path / "src"
    for cls, name in (("happiness", "astronaut.png"), ("disgust", "no_face_road.jpg")):
        (src / cls).mkdir(parents=True)
        shutil.copyfile(shared_dir / "faces" / name, src / cls / name)
    cfg = AlignConfig(detector="retinaface-mobilenet", detector_weights=weights, min_score=0.5, device="cpu",
                      workers=0, batch_size=4, no_split=True)
    result = run_align(cfg, src, tmp_path / "out")
    warnings = [n for n in result.notes if n.startswith("warning: class")]
    assert len(warnings) == 1 and "'disgust' kept a face in 0 of 1 images (the class is gone" in warnings[0]
    assert "--detector retinaface" in warnings[0] and result.summary()["notes"] == result.notes
