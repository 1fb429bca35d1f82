"""`fer eval`: figures recomputed by hand from the saved predictions; ONNX equals the checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _fab import ferplus_subset, make_pattern_folder

from fercli.calibration import expected_calibration_error
from fercli.classes import CLASSES_7, CLASSES_8
from fercli.cli import app
from fercli.errors import FerError
from fercli.evaluation import EvalConfig, compute_metrics, run_eval
from fercli.export import ExportConfig, run_export
from fercli.importers import ImportConfig, run_import
from fercli.schema import read_manifest, write_manifest
from fercli.training import TrainConfig, run_train
from fercli.workspace import Workspace


def test_compute_metrics_by_hand():
    y = np.array([0, 0, 1, 1, 2])
    probs = np.eye(3)[[0, 1, 1, 1, 0]]
    m = compute_metrics(y, probs, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert m["per_class"]["b"] == {"precision": pytest.approx(2 / 3), "recall": 1.0, "f1": pytest.approx(0.8), "support": 2}
    assert m["per_class"]["c"]["recall"] == 0.0 and m["mean_class_accuracy"] == pytest.approx((0.5 + 1 + 0) / 3)
    votes = np.array([[0.5, 0.5, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0], [np.nan] * 3])
    v = compute_metrics(y, np.full((5, 3), 1 / 3), ["a", "b", "c"], votes)["votes"]
    assert v["images"] == 4 and v["mean_kl_votes_pred"] == pytest.approx((np.log(1.5) + 3 * np.log(3)) / 4)


@pytest.fixture(scope="module")
def ferplus_ws(ferplus_dir: Path, tmp_path_factory) -> Workspace:
    """A tiny model trained briefly on a FERPlus subset; the subset's valid split is evaluated."""
    ws, _ = ferplus_subset(ferplus_dir, tmp_path_factory.mktemp("evalws"), 300, 200, seed=1)
    run_train(TrainConfig(arch="shufflenet_v2", input_size=48, epochs=1, batch_size=32, workers=0, threads=1, targets="none"), ws)
    return ws


@pytest.mark.shared
def test_eval_agrees_with_hand_computation(ferplus_ws: Workspace):
    res = run_eval(EvalConfig(split="valid", workers=0), ferplus_ws)
    rep = res.report
    preds = pd.read_csv(res.out_dir / "predictions.csv")
    assert len(preds) == rep["images"] == 200
    probs = preds[[f"p_{c}" for c in CLASSES_8]].to_numpy()
    assert np.allclose(probs.sum(1), 1.0, atol=1e-5)
    assert (preds["pred"] == [CLASSES_8[i] for i in probs.argmax(1)]).all()
    assert rep["accuracy"] == pytest.approx((preds["pred"] == preds["label"]).mean())
    for c in CLASSES_8:
        rows = preds[preds["label"] == c]
        if len(rows):
            assert rep["per_class"][c]["recall"] == pytest.approx((rows["pred"] == c).mean())
    cm = pd.crosstab(preds["label"], preds["pred"]).reindex(index=CLASSES_8, columns=CLASSES_8, fill_value=0)
    assert rep["confusion"] == cm.to_numpy().tolist()
    assert (res.out_dir / "confusion.png").stat().st_size > 1000 and (res.out_dir / "reliability.png").is_file()
    assert rep["ece"] == pytest.approx(expected_calibration_error(probs, preds["label"].map(CLASSES_8.index).to_numpy()),
                                       abs=1e-4)
    assert pd.read_csv(res.out_dir / "confusion.csv").iloc[:, 1:].to_numpy().tolist() == rep["confusion"]
    assert rep["model"]["sha256"] == ferplus_ws.sha256(ferplus_ws.current_path("student"))
    assert rep["manifest"]["split"] == "valid" and rep["classes"] == list(CLASSES_8)
    assert "votes" in rep and 0 <= rep["votes"]["vote_majority_agreement"] <= 1
    assert ferplus_ws.current_path("eval") == res.out_dir / "report.json"


@pytest.mark.shared
def test_eval_of_the_onnx_export_equals_the_checkpoint(ferplus_ws: Workspace, tmp_path: Path):
    pytest.importorskip("onnxruntime")
    ckpt = run_eval(EvalConfig(split="valid", workers=0, out=tmp_path / "ckpt"), ferplus_ws)
    exp, _ = run_export(ExportConfig(format="onnx", out=tmp_path / "m.onnx"), ferplus_ws)
    onnx = run_eval(EvalConfig(split="valid", workers=0, model=exp.path, out=tmp_path / "onnx"), ferplus_ws)
    assert onnx.report["model"]["kind"] == "onnx"
    assert onnx.report["accuracy"] == ckpt.report["accuracy"] and onnx.report["confusion"] == ckpt.report["confusion"]
    a = pd.read_csv(tmp_path / "ckpt" / "predictions.csv").filter(like="p_").to_numpy()
    b = pd.read_csv(tmp_path / "onnx" / "predictions.csv").filter(like="p_").to_numpy()
    assert np.abs(a - b).max() < 1e-5


@pytest.mark.shared
def test_eval_class_lists_and_splits(ferplus_ws: Workspace, tmp_path: Path):
    m = read_manifest(ferplus_ws.current_path("dataset"))
    with pytest.raises(FerError, match=r"no labelled images in split 'test' \(it has: train, valid\); pass --split valid"):
        run_eval(EvalConfig(workers=0), ferplus_ws)
    # the same images as a 7-class set: refused without --map, scored on the shared classes with it
    df7 = m.df[m.df["label_name"] != "contempt"].drop(columns=m.dist_columns)
    write_manifest(df7, CLASSES_7, m.root, tmp_path / "seven.parquet")
    with pytest.raises(FerError, match="class lists differ.*pass --map"):
        run_eval(EvalConfig(manifest=tmp_path / "seven.parquet", split="valid", workers=0), ferplus_ws)
    rep = run_eval(EvalConfig(manifest=tmp_path / "seven.parquet", split="valid", map=True, workers=0,
                              out=tmp_path / "e7"), ferplus_ws).report
    assert rep["mapped"] and rep["classes"] == list(CLASSES_7)
    with pytest.raises(FerError, match="not a fercli checkpoint"):
        bad = tmp_path / "retina.pth"
        import torch
        torch.save({"body.conv.weight": torch.zeros(1)}, bad)
        run_eval(EvalConfig(model=bad, split="valid", workers=0), ferplus_ws)


def test_eval_cli_in_a_workspace(runner, workspace: Path):
    make_pattern_folder(workspace / "raw", CLASSES_7, {"train": 6, "valid": 3}, size=32)
    ws = Workspace(workspace)
    run_import(ImportConfig(format="folder", src=workspace / "raw"), ws)
    run_train(TrainConfig(arch="shufflenet_v2", input_size=32, epochs=1, batch_size=16, workers=0, targets="none"), ws)
    res = runner.invoke(app, ["eval", "--split", "valid", "--json"])
    assert res.exit_code == 0, res.output
    assert "using student (workspace): student/best.pt" in res.stderr
    rep = json.loads(res.stdout)
    assert rep["images"] == 21 and set(rep["per_class"]) == set(CLASSES_7)
    assert rep["temperature"] == 1.0 and 0 <= rep["ece"] <= 1 and rep["nll"] > 0 and rep["tta"] == "none"
    assert (workspace / "eval" / "reliability.png").stat().st_size > 1000
    res = runner.invoke(app, ["eval", "--split", "valid"], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "precision" in res.stdout and "wrote eval/report.json" in res.stdout
