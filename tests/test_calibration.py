"""Calibrated probabilities: ECE/NLL, temperature fitting, the temperature in checkpoints, exports,
`fer eval`, `fer predict` and `fer calibrate`."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from _fab import make_pattern_folder

from fercli.calibration import (
    ECE_BINS,
    CalibrateConfig,
    run_calibrate,
    calibration_bins,
    check_temperature,
    expected_calibration_error,
    fit_temperature,
    nll,
    softmax,
)
from fercli.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint
from fercli.classes import CLASSES_7
from fercli.errors import FerError
from fercli.inference import Classifier
from fercli.models import create_model, model_args
from fercli.workspace import Workspace

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 32  # the smallest input size every model accepts: fast forwards


def _cli():
    from fercli.cli import app  # imported late: a broken sibling command must not hide the core tests

    return app


# ---- the metrics and the fit on synthetic logits ------------------------------------------------
def _sampled(n: int, classes: int, scale: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels drawn from softmax(logits): probabilities calibrated by construction."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, classes)) * scale
    p = softmax(z)
    y = (p.cumsum(1) > rng.random((n, 1))).argmax(1)
    return z, y


def test_ece_is_near_zero_when_calibrated_and_large_when_overconfident():
    z, y = _sampled(20_000, 7, 2.0, seed=0)
    assert expected_calibration_error(softmax(z), y) < 0.015
    over = softmax(3 * z)  # the same ranking, three times too sharp
    assert expected_calibration_error(over, y) > 0.15
    assert nll(over, y) > nll(softmax(z), y)
    under = softmax(z / 3)
    assert expected_calibration_error(under, y) > 0.05


def test_calibration_bins_and_ece_by_hand():
    probs = np.array([[0.95, 0.05], [0.95, 0.05], [0.65, 0.35], [0.3, 0.7]])
    y = np.array([0, 1, 0, 1])
    bins = calibration_bins(probs, y, bins=10)
    assert len(bins) == 10 and sum(b["count"] for b in bins) == 4
    top = bins[9]  # (0.9, 1.0]: two images at 0.95, one right
    assert top["count"] == 2 and top["confidence"] == pytest.approx(0.95) and top["accuracy"] == 0.5
    assert bins[6]["count"] == 2 and bins[6]["accuracy"] == 1.0  # 0.65 and 0.7, both right
    assert bins[0]["count"] == 0 and bins[0]["accuracy"] is None  # JSON-safe empty bins
    assert expected_calibration_error(probs, y, bins=10) == pytest.approx(2 / 4 * 0.45 + 2 / 4 * 0.325)
    assert nll(probs, y) == pytest.approx(-np.mean(np.log([0.95, 0.05, 0.65, 0.7])))
    assert ECE_BINS == 15 and len(calibration_bins(probs, y)) == 15


@pytest.mark.parametrize("true_t", [3.0, 0.5])
def test_fit_temperature_recovers_a_known_temperature(true_t: float):
    z, y = _sampled(8_000, 8, 2.0, seed=1)
    scaled = z * true_t  # a model whose logits are true_t times the calibrated ones
    t = fit_temperature(scaled, y)
    assert t == pytest.approx(true_t, rel=0.1)
    fixed = softmax(scaled, t)
    assert (fixed.argmax(1) == scaled.argmax(1)).all()  # temperature scaling never changes a prediction
    assert expected_calibration_error(fixed, y) < expected_calibration_error(softmax(scaled), y) / 3
    assert fit_temperature(torch.as_tensor(scaled), torch.as_tensor(y)) == pytest.approx(t)  # tensors too


def test_fit_temperature_refuses_bad_input():
    with pytest.raises(FerError, match="shape"):
        fit_temperature(np.zeros((3, 2)), np.zeros(4, dtype=int))
    with pytest.raises(FerError, match="NaN or inf"):
        fit_temperature(np.array([[0.0, np.nan]]), np.array([0]))


@pytest.mark.parametrize("value", [0, -1.0, float("nan"), float("inf"), "2", True, None, [2.0]])
def test_check_temperature_refuses(value):
    with pytest.raises(FerError, match=r"^model\.pt: temperature"):
        check_temperature(value, "model.pt")


def test_check_temperature_accepts_numbers():
    assert check_temperature(2, "x") == 2.0 and check_temperature(np.float32(0.5), "x") == 0.5


# ---- the temperature in checkpoints and the Classifier --------------------------------------------
def _model(seed: int = 0, sharpen: float = 1.0) -> torch.nn.Module:
    """A random lfer whose BatchNorm statistics vary (so its logits depend on the input); ``sharpen``
    scales the classifier head, making the softmax over-confident."""
    torch.manual_seed(seed)
    model = create_model("lfer", 7)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(8, 3, SIZE, SIZE))
        model.head.classifier.weight.mul_(sharpen)
        model.head.classifier.bias.mul_(sharpen)
    return model.eval()


def _save(path: Path, model: torch.nn.Module | None = None, **extra) -> Path:
    model = model if model is not None else _model()
    ck = make_checkpoint(model, "lfer", model_args("lfer", 7), CLASSES_7, SIZE)
    ck.update(extra)
    save_checkpoint(path, ck)
    return path


def test_checkpoints_store_temperature_and_tta_with_defaults(tmp_path: Path):
    raw = torch.load(_save(tmp_path / "a.pt", temperature=2.5, tta="flip"), weights_only=True)
    assert raw["temperature"] == 2.5 and raw["tta"] == "flip"
    ck = make_checkpoint(_model(), "lfer", model_args("lfer", 7), CLASSES_7, SIZE)
    assert ck["temperature"] == 1.0 and ck["tta"] == "none"
    with pytest.raises(FerError, match="temperature"):
        make_checkpoint(_model(), "lfer", model_args("lfer", 7), CLASSES_7, SIZE, temperature=0.0)
    # an older checkpoint without the keys: plain softmax, no TTA
    del ck["temperature"], ck["tta"]
    save_checkpoint(tmp_path / "old.pt", ck)
    clf = Classifier.load(tmp_path / "old.pt")
    assert clf.temperature == 1.0 and clf.tta == "none"


@pytest.mark.parametrize("extra, message", [
    ({"temperature": 0.0}, r"temperature 0\.0 must be a finite number > 0"),
    ({"temperature": -2.0}, r"temperature -2\.0 must be a finite number > 0"),
    ({"temperature": float("nan")}, r"temperature nan must be a finite number > 0"),
    ({"temperature": "1.5"}, r"temperature '1\.5' is not a number"),
    ({"tta": "crop"}, r"tta must be one of none, flip, got 'crop'"),
])
def test_load_refuses_bad_temperature_or_tta_naming_the_file(tmp_path: Path, extra, message):
    path = _save(tmp_path / "bad.pt", **extra)
    with pytest.raises(FerError, match=rf"^{path}: {message}"):
        load_checkpoint(path)
    with pytest.raises(FerError, match=message):
        Classifier.load(path)


def test_classifier_applies_the_temperature_and_keeps_logits_raw(tmp_path: Path):
    model = _model()
    _save(tmp_path / "t1.pt", model)
    _save(tmp_path / "t25.pt", model, temperature=2.5, tta="flip")
    plain, hot = Classifier.load(tmp_path / "t1.pt"), Classifier.load(tmp_path / "t25.pt")
    assert hot.temperature == 2.5 and hot.tta == "flip" and plain.temperature == 1.0
    x = torch.randn(4, 3, SIZE, SIZE)
    with torch.no_grad():
        ref = model(x).numpy()
    z = hot.logits(x)
    assert np.abs(z - ref).max() < 1e-5 and np.abs(plain.logits(x) - z).max() < 1e-6  # logits stay raw
    p = hot.probs(x)
    assert np.abs(p - softmax(ref, 2.5)).max() < 1e-6 and np.allclose(p.sum(1), 1.0)
    assert (p.argmax(1) == plain.probs(x).argmax(1)).all()
    assert not np.allclose(p, plain.probs(x), atol=1e-4)  # the temperature really changed something
    flip = hot.probs(x, tta_flip=True)
    assert np.abs(flip - (softmax(z, 2.5) + softmax(hot.logits(x.flip(-1)), 2.5)) / 2).max() < 1e-6
    assert np.abs(hot.probs_from_logits([z], temperature=1.0) - plain.probs(x)).max() < 1e-6


# ---- exports --------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_probabilities_equal_the_checkpoints(workspace: Path, fmt: str):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    from fercli.export import ExportConfig, read_export_meta, run_export

    ckpt = _save(workspace / "student" / "best.pt", _model(sharpen=4.0), temperature=2.5, tta="flip")
    res, _ = run_export(ExportConfig(format=fmt), Workspace(workspace))
    meta = read_export_meta(res.path)
    assert meta["temperature"] == 2.5 and meta["tta"] == "flip" and "raw logits" in meta["output"]["meaning"]
    sidecar = json.loads(res.sidecar.read_text())
    assert sidecar["temperature"] == 2.5 and sidecar["tta"] == "flip"
    a, b = Classifier.load(ckpt), Classifier.load(res.path)
    assert b.kind == fmt and b.temperature == 2.5 and b.tta == "flip"
    x = torch.randn(5, 3, SIZE, SIZE)
    assert np.abs(a.logits(x) - b.logits(x)).max() < 1e-4  # the exported output is the raw logits
    pa, pb = a.probs(x), b.probs(x)
    assert np.abs(pa - pb).max() < 1e-4 and not np.allclose(pa, softmax(a.logits(x)), atol=1e-3)
    assert np.abs(a.probs(x, tta_flip=True) - b.probs(x, tta_flip=True)).max() < 1e-4
    if fmt == "onnx":
        import onnx

        props = {p.key: p.value for p in onnx.load(str(res.path)).metadata_props}
        assert float(props["temperature"]) == 2.5 and props["tta"] == "flip"  # for runtimes without fercli


def test_half_checkpoint_export_keeps_temperature_and_tta(runner, workspace: Path):
    _save(workspace / "student" / "best.pt", temperature=1.75, tta="flip")
    res = runner.invoke(_cli(), ["export", "--format", "checkpoint", "--half", "-o", "slim.pt", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["temperature"] == 1.75 and out["tta"] == "flip"
    ck = load_checkpoint(workspace / "slim.pt")
    assert ck["temperature"] == 1.75 and ck["tta"] == "flip" and ck["weights_dtype"] == "float16"
    clf = Classifier.load(workspace / "slim.pt")
    assert clf.temperature == 1.75 and clf.tta == "flip"


# ---- fer eval, fer predict and fer calibrate in a tiny workspace ---------------------------------
@pytest.fixture
def tiny(workspace: Path) -> Path:
    """A workspace with a 7-class pattern manifest (3 valid and 2 test images per class) and an
    over-confident random student at student/best.pt."""
    from fercli.importers import ImportConfig, run_import

    make_pattern_folder(workspace / "raw", CLASSES_7, {"train": 1, "valid": 3, "test": 2}, size=SIZE)
    run_import(ImportConfig(format="folder", src=workspace / "raw"), Workspace(workspace))
    return _save(workspace / "student" / "best.pt", _model(sharpen=6.0))


def _probs(csv: Path) -> tuple[np.ndarray, np.ndarray]:
    df = pd.read_csv(csv)
    probs = df[[f"p_{c}" for c in CLASSES_7]].to_numpy()
    return probs, df["label"].map(CLASSES_7.index).to_numpy()


def test_calibrate_then_eval_end_to_end(runner, workspace: Path, tiny: Path):
    app = _cli()
    res = runner.invoke(app, ["eval", "--split", "valid", "--workers", "0", "--json", "--out", "before"])
    assert res.exit_code == 0, res.output
    rep0 = json.loads(res.stdout)
    assert rep0["temperature"] == 1.0 and "before" not in rep0["calibration"]
    assert rep0["tta"] == "none" and rep0["tta_source"] == "model"
    sha0 = Workspace(workspace).sha256(tiny)

    res = runner.invoke(app, ["calibrate", "--workers", "0", "--json"])
    assert res.exit_code == 0, res.output
    assert "using student (workspace): student/best.pt" in res.stderr
    out = json.loads(res.stdout)
    t = out["temperature"]
    assert out["in_place"] and out["split"] == "valid" and out["images"] == 21 and out["ece_bins"] == 15
    assert t > 1.0  # the head was sharpened six-fold: the fit must soften it
    assert out["before"]["temperature"] == 1.0 and out["after"]["temperature"] == t
    assert out["after"]["nll"] < out["before"]["nll"] and out["after"]["ece"] < out["before"]["ece"]
    # the figures at T = 1 are those `fer eval` measured before on the same split
    assert out["before"]["nll"] == pytest.approx(rep0["nll"], abs=1e-4)
    assert out["before"]["ece"] == pytest.approx(rep0["ece"], abs=1e-4)
    ck = load_checkpoint(tiny)
    assert ck["temperature"] == pytest.approx(t) and ck["calibration"]["split"] == "valid"
    assert ck["calibration"]["source"]["sha256"] == sha0 and Workspace(workspace).sha256(tiny) != sha0

    res = runner.invoke(app, ["eval", "--split", "valid", "--workers", "0", "--json", "--tta", "flip"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["tta"] == "flip" and rep["tta_source"] == "option"
    res = runner.invoke(app, ["eval", "--split", "valid", "--workers", "0", "--json"])
    rep = json.loads(res.stdout)
    assert rep["temperature"] == pytest.approx(t) and rep["calibration"]["ece_bins"] == 15
    assert rep["calibration"]["before"] == pytest.approx({"temperature": 1.0, "ece": rep0["ece"], "nll": rep0["nll"]},
                                                         abs=1e-6)
    assert rep["nll"] == pytest.approx(out["after"]["nll"], abs=1e-4) and rep["ece"] < rep0["ece"]
    assert rep["confusion"] == rep0["confusion"]  # no prediction changed
    probs, y = _probs(workspace / "eval" / "predictions.csv")
    assert rep["ece"] == pytest.approx(expected_calibration_error(probs, y), abs=1e-4)
    assert rep["nll"] == pytest.approx(nll(probs, y), abs=1e-4)
    assert sum(b["count"] for b in rep["calibration"]["bins"]) == 21
    png = workspace / "eval" / "reliability.png"
    assert rep["files"]["reliability_png"] == str(png) and png.stat().st_size > 5000
    assert cv2.imread(str(png)) is not None
    assert not list((workspace / "eval").glob(".*tmp*"))  # atomic writes leave nothing behind

    res = runner.invoke(app, ["eval", "--split", "valid", "--workers", "0"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert f"calibration (temperature {t:.4g}): ECE {rep['ece']:.4f}" in res.stdout
    assert f"(at temperature 1: ECE {rep0['ece']:.4f}" in res.stdout and "reliability.png" in res.stdout


def test_calibrate_to_another_file_and_its_table(runner, workspace: Path, tiny: Path):
    before = tiny.read_bytes()
    res = runner.invoke(_cli(), ["calibrate", str(tiny), "--split", "test", "--out", "cal/c.pt", "--workers", "0"],
                        env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert tiny.read_bytes() == before  # the source is untouched
    ck = load_checkpoint(workspace / "cal" / "c.pt")
    assert ck["temperature"] > 1.0 and ck["calibration"]["split"] == "test" and ck["calibration"]["images"] == 14
    assert "before" in res.stdout and "after" in res.stdout and "wrote cal/c.pt" in res.stdout


@pytest.mark.parametrize("args, message", [
    (["--split", "dev"], "--split must be one of train, valid, test, got 'dev'"),
    (["--out", "model.onnx"], "--out must name a checkpoint"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["model.onnx"], "takes a fercli checkpoint, not an export"),
])
def test_calibrate_refuses_bad_options_in_one_line(runner, workspace: Path, tiny: Path, args, message):
    (workspace / "model.onnx").write_bytes(b"x")
    before = tiny.read_bytes()
    res = runner.invoke(_cli(), ["calibrate", *args])
    assert res.exit_code == 1 and message in res.stderr, res.output
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.output
    assert tiny.read_bytes() == before


def test_calibrate_refuses_the_bundled_model_in_place(runner, workspace: Path, tmp_path: Path, monkeypatch):
    from fercli.importers import ImportConfig, run_import

    make_pattern_folder(workspace / "raw", CLASSES_7, {"valid": 2}, size=SIZE)
    run_import(ImportConfig(format="folder", src=workspace / "raw"), Workspace(workspace))
    bundled = _save(tmp_path / "bundled.pt", _model(sharpen=6.0))
    monkeypatch.setenv("FER_BUNDLED_MODEL", str(bundled))
    before = bundled.read_bytes()
    res = runner.invoke(_cli(), ["calibrate", "--workers", "0"])
    assert res.exit_code == 1 and "is the bundled model" in res.stderr and "--out" in res.stderr
    assert bundled.read_bytes() == before
    res = runner.invoke(_cli(), ["calibrate", "--workers", "0", "--out", "mine.pt", "--json"])
    assert res.exit_code == 0, res.output
    assert load_checkpoint(workspace / "mine.pt")["temperature"] == pytest.approx(json.loads(res.stdout)["temperature"])


def test_calibrate_core_refuses_other_class_lists(workspace: Path, tmp_path: Path):
    from fercli.importers import ImportConfig, run_import

    make_pattern_folder(workspace / "raw", CLASSES_7, {"valid": 2}, size=SIZE)
    run_import(ImportConfig(format="folder", src=workspace / "raw", classes=8), Workspace(workspace))
    _save(workspace / "student" / "best.pt")  # 7 classes
    with pytest.raises(FerError, match="class lists differ"):
        run_calibrate(CalibrateConfig(workers=0), Workspace(workspace))


def test_eval_refuses_a_bad_temperature_in_one_line(runner, workspace: Path, tiny: Path):
    _save(tiny, temperature=float("nan"))
    res = runner.invoke(_cli(), ["eval", "--split", "valid", "--workers", "0"])
    assert res.exit_code == 1, res.output
    errors = [line for line in res.stderr.splitlines() if not line.startswith("using ")]
    assert errors == [f"error: {tiny}: temperature nan must be a finite number > 0; refit it with `fer calibrate`"]
    assert "Traceback" not in res.output
    _save(tiny, temperature=0.0)
    res = runner.invoke(_cli(), ["predict", "x.png", "--no-detect"])
    assert res.exit_code == 1 and "temperature 0.0 must be" in res.stderr and "Traceback" not in res.output


def test_predict_json_uses_the_temperature_and_the_recommended_tta(runner, workspace: Path):
    model = _model(sharpen=6.0)
    _save(workspace / "plain.pt", model)
    _save(workspace / "calibrated.pt", model, temperature=4.0, tta="flip")
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(workspace / f"face{i}.png"), rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8))
    outs = {}
    for name in ("plain", "calibrated"):
        res = runner.invoke(_cli(), ["predict", "face*.png", "--no-detect", "--model", f"{name}.pt", "--json"])
        assert res.exit_code == 0, res.output
        outs[name] = [r["faces"][0] for r in json.loads(res.stdout)]
    assert "temperature 4, tta flip" in res.stderr
    for f in outs["calibrated"]:
        assert sum(f["probs"].values()) == pytest.approx(1.0, abs=1e-4)
    # with the model's tta (flip) and T = 4: exactly the Classifier's probabilities for the mirrored mean
    from fercli.data import normalize

    clf = Classifier.load(workspace / "calibrated.pt")
    for i, f in enumerate(outs["calibrated"]):
        img = cv2.cvtColor(cv2.imread(str(workspace / f"face{i}.png")), cv2.COLOR_BGR2RGB)
        x = normalize(torch.from_numpy(img).permute(2, 0, 1)[None], clf.preprocess, torch.device("cpu"))
        want = clf.probs(x, tta_flip=True)[0]
        assert [f["probs"][c] for c in CLASSES_7] == pytest.approx(want.tolist(), abs=1e-5)
        assert max(f["probs"].values()) < max(outs["plain"][i]["probs"].values())  # softer than at T = 1
    res = runner.invoke(_cli(), ["predict", "face0.png", "--no-detect", "--model", "calibrated.pt", "--tta", "none",
                                 "--json"])
    assert res.exit_code == 0 and "tta none" in res.stderr


def test_adjustment_curve_trades_accuracy_for_rare_class_recall():
    from fercli.calibration import adjustment_curve

    rng = np.random.default_rng(0)
    prior = np.array([0.8, 0.15, 0.05])
    labels = rng.choice(3, size=2000, p=prior)
    # a model biased towards the frequent class: its logits carry log(prior) on top of the evidence
    logits = rng.normal(0, 1, (2000, 3)) + 1.5 * np.eye(3)[labels] + np.log(prior)
    curve = adjustment_curve(logits, labels, prior, [0.0, 0.5, 1.0])
    assert [p["tau"] for p in curve] == [0.0, 0.5, 1.0]
    assert curve[0]["recall"][2] < curve[2]["recall"][2]  # the rare class gains recall ...
    assert curve[0]["accuracy"] > curve[2]["accuracy"]  # ... at the cost of overall accuracy
    assert curve[2]["mean_class_accuracy"] > curve[0]["mean_class_accuracy"]
    assert curve[0]["min_recall"] == min(curve[0]["recall"])


def test_adjustment_curve_with_views_predicts_what_a_folded_model_computes_under_flip_tta():
    from fercli.calibration import adjustment_curve
    from fercli.probability import mean_softmax

    rng = np.random.default_rng(1)
    prior = np.array([0.7, 0.2, 0.1])
    labels = rng.choice(3, size=3000, p=prior)
    plain = rng.normal(0, 1.5, (3000, 3)) + np.eye(3)[labels] + np.log(prior)
    mirrored = plain + rng.normal(0, 1.5, (3000, 3))
    taus = [0.0, 0.5, 1.0]
    curve = adjustment_curve(plain, labels, prior, taus, views=[mirrored])
    for tau, point in zip(taus, curve):
        shift = -tau * np.log(prior / prior.sum())  # what fold_logit_adjustment adds to the bias
        want = mean_softmax([plain + shift, mirrored + shift]).argmax(1)
        assert point["accuracy"] == pytest.approx(float((want == labels).mean()))
    # the shift applied after averaging the views' softmax is not the same thing
    late = (np.log(mean_softmax([plain, mirrored])) + np.log(prior) * -1.0).argmax(1)
    assert curve[2]["accuracy"] != pytest.approx(float((late == labels).mean()))
    assert adjustment_curve(plain, labels, prior, taus) != curve  # no views: the plain logits alone


def test_fold_logit_adjustment_shifts_the_final_bias():
    from fercli.calibration import fold_logit_adjustment
    from fercli.models import build_model

    for arch in ("lfer", "shufflenet_v2", "resnet18"):
        model, _ = build_model(arch, 8)
        model.eval()
        x = torch.randn(2, 3, 32, 32)
        before = model(x)
        shift = np.linspace(-1, 1, 8)
        name = fold_logit_adjustment(model, shift)
        assert name.endswith("bias")
        assert torch.allclose(model(x), before + torch.tensor(shift, dtype=torch.float32), atol=1e-5)


def test_fit_temperature_with_views_fits_the_averaged_probabilities():
    from fercli.calibration import fit_temperature

    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 3000)
    base = rng.normal(0, 1, (3000, 4)) + 2.0 * np.eye(4)[y]
    a, b = 3 * (base + rng.normal(0, 0.3, base.shape)), 3 * (base + rng.normal(0, 0.3, base.shape))
    single = fit_temperature(a, y)
    both = fit_temperature(a, y, [b])
    assert 1.0 < both < single < 5.0  # averaging two views is already less over-confident: a lower T
    with pytest.raises(FerError, match="differ in shape"):
        fit_temperature(a, y, [b[:, :3]])
