"""`fer eval --robustness`: the corruptions, their determinism, the cache, and the command's outputs."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from _fab import make_pattern_folder

from fercli import robustness as rb
from fercli.classes import CLASSES_7
from fercli.cli import app
from fercli.errors import FerError
from fercli.evaluation import EvalConfig, run_eval
from fercli.robustness import CORRUPTIONS, EYES_BAND, MOUTH_BAND, band_rows, image_rng, score_suite
from fercli.workspace import Workspace


def _face(seed: int = 0, size: int = 112, gray: bool = True) -> np.ndarray:
    """A textured, smooth-ish image (not saturated, no flat areas) so that every corruption shows."""
    rng = np.random.default_rng(seed)
    small = rng.integers(40, 215, (size // 8, size // 8, 1 if gray else 3), dtype=np.uint8)
    img = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
    img = img.reshape(size, size, -1)
    return np.ascontiguousarray(np.repeat(img, 3, axis=2) if gray else img)


@pytest.mark.parametrize("name", list(CORRUPTIONS))
@pytest.mark.parametrize("gray", [True, False])
def test_each_corruption_changes_the_image_deterministically(name: str, gray: bool):
    c, img = CORRUPTIONS[name], _face(gray=gray)
    before = img.copy()
    a = c(img, image_rng(0, name, 5))
    b = c(img, image_rng(0, name, 5))
    assert a.shape == img.shape and a.dtype == np.uint8
    assert np.array_equal(img, before), "the input must not be modified"
    assert not np.array_equal(a, img), f"{name} left the image unchanged"
    assert a.tobytes() == b.tobytes(), f"{name} is not deterministic"
    if gray:  # a gray face stays gray (FERPlus models never saw colour)
        assert np.array_equal(a[:, :, 0], a[:, :, 1]) and np.array_equal(a[:, :, 1], a[:, :, 2])
    # any size works (the suite runs at the canonical size, tests may use others)
    assert c(_face(size=48, gray=gray), image_rng(0, name, 0)).shape == (48, 48, 3)


def test_noise_is_seeded_per_corruption_and_image_index():
    img = _face()
    noise = CORRUPTIONS["noise_1"]
    a0, a1 = noise(img, image_rng(0, "noise_1", 0)), noise(img, image_rng(0, "noise_1", 1))
    assert not np.array_equal(a0, a1), "two images must not share one noise pattern"
    assert not np.array_equal(a0, noise(img, image_rng(1, "noise_1", 0))), "the seed must matter"
    # corrupt_all seeds image i by its index, whatever the chunking
    stack = np.stack([img] * 6)
    whole = rb.corrupt_all(stack, noise, seed=0)
    parts = np.concatenate([rb.corrupt_all(stack[:4], noise, 0), rb.corrupt_all(stack[4:], noise, 0, start=4)])
    assert np.array_equal(whole, parts) and np.array_equal(whole[1], a1)
    # rotation and crop go the documented way: ccw and cw mirror each other on a mirrored image
    ccw = CORRUPTIONS["rotate_ccw15"](img, image_rng(0, "", 0))
    cw = CORRUPTIONS["rotate_cw15"](np.ascontiguousarray(img[:, ::-1]), image_rng(0, "", 0))
    assert np.abs(ccw[:, ::-1].astype(int) - cw.astype(int)).mean() < 1.0


def test_occlusion_bands_are_where_they_say():
    img = _face()
    for name, band, gray in (("occlude_eyes", EYES_BAND, rb.SUNGLASSES_GRAY), ("occlude_mouth", MOUTH_BAND, rb.MASK_GRAY)):
        out = CORRUPTIONS[name](img, image_rng(0, name, 0))
        top, bottom = band_rows(112, band)
        assert (out[top:bottom] == gray).all()
        assert np.array_equal(out[:top], img[:top]) and np.array_equal(out[bottom:], img[bottom:])
    # the bands cover the features on aligned crops: eyes at 35-45% of the height, mouth at 70-85%
    assert EYES_BAND[0] <= 0.35 and EYES_BAND[1] >= 0.45 and MOUTH_BAND[0] <= 0.70 and MOUTH_BAND[1] >= 0.85
    assert EYES_BAND[1] < MOUTH_BAND[0]


def test_loose_crop_replicates_the_edges():
    img = _face()
    out = CORRUPTIONS["crop_loose25"](img, image_rng(0, "", 0))
    # the face shrinks to 80% of the frame; the first row of the border copies the image's first row's ends
    assert np.abs(out[0, 0].astype(int) - img[0, 0].astype(int)).max() <= 2
    assert np.abs(out[-1, -1].astype(int) - img[-1, -1].astype(int)).max() <= 2


def test_options_are_checked_up_front():
    with pytest.raises(FerError, match="--corruptions: unknown 'nope'; known: crop_tight25"):
        rb.check_options(True, ["nope"], 0)
    with pytest.raises(FerError, match="--corruptions needs --robustness"):
        rb.check_options(False, ["blur_1"], 0)
    with pytest.raises(FerError, match="robustness_seed"):
        rb.check_options(True, (), -1)
    with pytest.raises(FerError, match="given twice"):
        rb.check_options(True, ["blur_1", "blur_1"], 0)
    rb.check_options(True, ("blur_1", "jpeg_15"), 3)


# ---- the suite on a hand-made classifier ------------------------------------------------------

def _two_class_images(tmp_path: Path, n: int = 12) -> tuple[list[Path], list[str], np.ndarray]:
    """Class 0 has a bright mouth region, class 1 a dark one; everything else is noise."""
    rng = np.random.default_rng(0)
    paths, rel, y = [], [], []
    top, bottom = (int(0.72 * 48), int(0.84 * 48))
    for i in range(n):
        img = rng.integers(90, 160, (48, 48), dtype=np.uint8)
        img[top:bottom, 12:36] = 240 if i % 2 == 0 else 20
        p = tmp_path / "img" / f"{i:03d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(p), img)
        paths.append(p)
        rel.append(f"img/{i:03d}.png")
        y.append(i % 2)
    return paths, rel, np.array(y)


def _mouth_reader(x: torch.Tensor) -> np.ndarray:
    """A 'model' that reads the mouth: perfect on the clean images above, blind under a mask."""
    s = x.shape[-1]
    mouth = x[:, :, int(0.74 * s):int(0.82 * s), s // 3:2 * s // 3].float().mean((1, 2, 3))
    p0 = (mouth > 128).double().numpy()
    return np.stack([p0, 1 - p0], 1) * 0.98 + 0.01


def test_a_perfect_model_loses_accuracy_under_a_mask(tmp_path: Path):
    paths, rel, y = _two_class_images(tmp_path)
    rep = score_suite(_mouth_reader, 48, paths, rel, y, ["bright", "dark"], manifest_sha="x" * 64, cache_dir=None,
                      corruptions=["occlude_eyes", "occlude_mouth", "brighter40"])
    assert rep["clean"]["accuracy"] == 1.0 and rep["corruptions"]["occlude_eyes"]["accuracy"] == 1.0
    mouth = rep["corruptions"]["occlude_mouth"]
    assert mouth["accuracy"] == 0.5 and mouth["drop"] == 0.5 and mouth["mean_class_accuracy"] == 0.5
    assert mouth["per_class_accuracy"] == {"bright": 1.0, "dark": 0.0}
    s = rep["summary"]
    assert s["worst"] == "occlude_mouth" and s["worst_accuracy"] == 0.5 and s["worst_drop"] == 0.5
    assert s["mean_accuracy"] == pytest.approx(np.mean([v["accuracy"] for v in rep["corruptions"].values()]))
    assert list(rep["corruptions"]) == ["occlude_eyes", "occlude_mouth", "brighter40"]


def test_corrupted_images_are_cached_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    paths, rel, y = _two_class_images(tmp_path)
    cache = tmp_path / "cache"
    names = ["noise_2", "jpeg_15", "occlude_mouth"]
    kw = {"manifest_sha": "a" * 64, "cache_dir": cache, "corruptions": names, "canonical": 64}
    first = score_suite(_mouth_reader, 48, paths, rel, y, ["bright", "dark"], batch_size=5, **kw)
    files = sorted(p.name for p in cache.glob("robust-*.npy"))
    assert len(files) == 3

    def no_rebuild(*a, **k):
        raise AssertionError("the cache was rebuilt")

    monkeypatch.setattr(rb, "_build_corrupted", no_rebuild)
    monkeypatch.setattr("fercli.data.build_cache", no_rebuild)
    second = score_suite(_mouth_reader, 48, paths, rel, y, ["bright", "dark"], batch_size=64, **kw)
    assert sorted(p.name for p in cache.glob("robust-*.npy")) == files
    # the figures do not depend on the batch size; the arrays are byte-identical to an uncached build
    assert second["corruptions"] == first["corruptions"] and second["clean"] == first["clean"]
    clean = rb.canonical_images(paths, rel, "a" * 64, cache, 64)
    for name in names:
        cached = np.load(next(cache.glob(f"robust-{name}-*.npy")))
        assert np.array_equal(cached, rb.corrupt_all(np.asarray(clean), CORRUPTIONS[name], 0))
    monkeypatch.undo()
    # another seed, another manifest or other rows are other cache entries
    score_suite(_mouth_reader, 48, paths, rel, y, ["bright", "dark"], **{**kw, "seed": 1, "corruptions": ["noise_2"]})
    score_suite(_mouth_reader, 48, paths[:-1], rel[:-1], y[:-1], ["bright", "dark"], **{**kw, "corruptions": ["jpeg_15"]})
    assert len(list(cache.glob("robust-*.npy"))) == 5


# ---- the command ------------------------------------------------------------------------------

@pytest.fixture
def tiny_ws(workspace: Path) -> tuple[Workspace, Path]:
    """A 7-class pattern dataset (3 valid images per class) and an untrained 32 px checkpoint."""
    from fercli.checkpoint import make_checkpoint, save_checkpoint
    from fercli.importers import ImportConfig, run_import
    from fercli.models import create_model, model_args

    make_pattern_folder(workspace / "raw", CLASSES_7, {"valid": 3}, size=32)
    ws = Workspace(workspace)
    run_import(ImportConfig(format="folder", src=workspace / "raw"), ws)
    torch.manual_seed(0)
    model = save_checkpoint(workspace / "m.pt", make_checkpoint(create_model("shufflenet_v2", 7).eval(), "shufflenet_v2",
                                                                model_args("shufflenet_v2", 7), CLASSES_7, 32))
    return ws, model


def test_fer_eval_robustness_writes_its_report(runner, tiny_ws, one_thread):
    ws, model = tiny_ws
    args = ["eval", "--split", "valid", "--model", str(model), "--workers", "0", "--device", "cpu", "--robustness"]
    res = runner.invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    rob = json.loads((ws.root / "eval" / "robustness.json").read_text())
    assert rep["robustness"] == rob and rep["files"]["robustness_json"] == rob["files"]["json"]
    assert (ws.root / "eval" / "robustness.png").stat().st_size > 1000
    assert list(rob["corruptions"]) == list(CORRUPTIONS)
    for name, v in rob["corruptions"].items():
        assert v["severity"] == CORRUPTIONS[name].severity and v["params"] == json.loads(json.dumps(CORRUPTIONS[name].params))
        assert 0 <= v["accuracy"] <= 1 and v["drop"] == pytest.approx(rob["clean"]["accuracy"] - v["accuracy"])
    assert rob["seed"] == 0 and rob["canonical_size"] == 112 and rob["input_size"] == 32 and rob["images"] == 21
    assert rob["model"]["sha256"] == ws.sha256(model) and rob["manifest"]["sha256"] == ws.sha256(ws.current_path("dataset"))
    assert rob["manifest"]["split"] == "valid" and rob["eval_accuracy"] == rep["accuracy"]
    assert set(rob["summary"]) >= {"mean_accuracy", "worst_accuracy", "worst", "mean_drop", "worst_drop"}

    # the table, from the cache this time; a library call on the same inputs gets the same figures
    res = runner.invoke(app, [*args, "--corruptions", "occlude_eyes,jpeg_15", "--out", "e2"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "occlude_eyes" in res.stdout and "worst (" in res.stdout and "wrote e2/robustness.json" in res.stdout
    lib = rb.run_robustness(model, ws.current_path("dataset"), "valid", ws=ws, corruptions=["jpeg_15", "noise_2"])
    assert lib["corruptions"]["jpeg_15"]["accuracy"] == rob["corruptions"]["jpeg_15"]["accuracy"]
    assert lib["corruptions"]["noise_2"]["per_class_accuracy"] == rob["corruptions"]["noise_2"]["per_class_accuracy"]
    assert lib["clean"] == rob["clean"]


def test_fer_eval_robustness_options_fail_in_one_line(runner, tiny_ws):
    ws, model = tiny_ws
    res = runner.invoke(app, ["eval", "--split", "valid", "--model", str(model), "--robustness", "--corruptions", "fog"])
    assert res.exit_code == 1 and "error: --corruptions: unknown 'fog'; known:" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    res = runner.invoke(app, ["eval", "--split", "valid", "--corruptions", "blur_1"])
    assert res.exit_code == 1 and "--corruptions needs --robustness" in res.stderr
    with pytest.raises(FerError, match="needs --robustness"):
        run_eval(EvalConfig(split="valid", corruptions=("blur_1",)), ws)
