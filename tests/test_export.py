"""`fer export`: ONNX and TorchScript round trips with parity, metadata, dynamic batch, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import fercli.export as export_mod
from fercli.checkpoint import make_checkpoint, model_from_checkpoint, save_checkpoint
from fercli.classes import CLASSES_7
from fercli.cli import app
from fercli.export import ExportConfig, ort_session, read_export_meta, run_export
from fercli.models import create_model, model_args
from fercli.workspace import Workspace

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def student(workspace: Path) -> Path:
    """A trained-looking lfer checkpoint (random weights, non-trivial BN statistics) at the workspace default."""
    torch.manual_seed(0)
    model = create_model("lfer", 7)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(4, 3, 64, 64))  # populate BatchNorm running statistics
    path = workspace / "student" / "best.pt"
    save_checkpoint(path, make_checkpoint(model.eval(), "lfer", model_args("lfer", 7), CLASSES_7, 64))
    return path


def test_onnx_export_through_the_cli(runner, workspace, student):
    res = runner.invoke(app, ["export", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    path = workspace / "export" / "model.onnx"
    assert out["path"] == str(path) and out["max_abs_diff"] <= 1e-4
    assert "using student (workspace)" in res.stderr
    # metadata inside the file and beside it
    inside = read_export_meta(path)
    assert inside["classes"] == list(CLASSES_7) and inside["input_size"] == 64
    assert inside["mean"] == pytest.approx([0.485, 0.456, 0.406]) and inside["std"] == pytest.approx([0.229, 0.224, 0.225])
    assert inside["temperature"] == 1.0 and inside["tta"] == "none" and out["temperature"] == 1.0
    import onnx

    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(props["classes"]) == list(CLASSES_7) and props["input_size"] == "64"
    sidecar = json.loads((workspace / "export" / "model.onnx.json").read_text())
    assert sidecar["provenance"]["inputs"]["student"]["path"] == "student/best.pt"
    # dynamic batch and parity, independently of the export's own check
    model, _ = model_from_checkpoint(student)
    session = ort_session(path)
    x = torch.randn(5, 3, 64, 64)
    with torch.no_grad():
        ref = model(x).numpy()
    got = session.run(None, {"input": x.numpy()})[0]
    assert got.shape == (5, 7) and np.abs(got - ref).max() < 1e-4
    ws = Workspace(workspace)
    assert ws.current_path("export") == path
    assert ws.status()["artifacts"][-1]["state"] == "ok"


def test_torchscript_export_round_trip(workspace, student):
    res, _ = run_export(ExportConfig(format="torchscript"), Workspace(workspace))
    assert res.path == workspace / "export" / "model.torchscript" and res.max_abs_diff <= 1e-4
    extra = {"fercli.json": ""}
    loaded = torch.jit.load(str(res.path), _extra_files=extra)
    assert json.loads(extra["fercli.json"])["classes"] == list(CLASSES_7)
    model, _ = model_from_checkpoint(student)
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        assert (loaded(x) - model(x)).abs().max() < 1e-4
    assert read_export_meta(res.path)["input_size"] == 64


def test_export_refuses_to_write_when_parity_fails(workspace, student, monkeypatch):
    real = export_mod.onnx_bytes

    def perturbed(model, *args, **kw):
        broken = create_model("lfer", 7).eval()  # other weights: the export no longer matches eager
        return real(broken, *args, **kw)

    monkeypatch.setattr(export_mod, "onnx_bytes", perturbed)
    with pytest.raises(export_mod.FerError, match="differs from eager PyTorch .* nothing was written"):
        run_export(ExportConfig(), Workspace(workspace))
    assert not (workspace / "export" / "model.onnx").exists()
    assert not list((workspace).rglob("*.tmp-*"))


def test_export_errors_through_the_cli(runner, workspace, student, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    res = runner.invoke(app, ["-w", str(empty), "export"])
    assert res.exit_code == 1 and "no student in workspace" in res.stderr
    res = runner.invoke(app, ["export", "--format", "tflite"])
    assert res.exit_code == 1 and "--format must be one of" in res.stderr
    res = runner.invoke(app, ["export", "--format", "torchscript", "--out", "m.pt"])
    assert res.exit_code == 1 and "reserved for checkpoints" in res.stderr
    (workspace / "x.onnx").write_bytes(b"")
    res = runner.invoke(app, ["export", "x.onnx"])
    assert res.exit_code == 1 and "takes a fercli checkpoint" in res.stderr


def test_export_table_output(runner, workspace, student):
    res = runner.invoke(app, ["export", str(student), "-o", str(workspace / "deploy" / "lfer.onnx")])
    assert res.exit_code == 0, res.output
    assert "parity vs eager" in res.stdout and "neutral" in res.stdout
    assert (workspace / "deploy" / "lfer.onnx.json").is_file()


def test_half_checkpoint_export_loads_safely_and_keeps_predictions(runner, workspace, student):
    res = runner.invoke(app, ["export", "--format", "checkpoint", "--half", "--out", "slim.pt", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    slim = workspace / "slim.pt"
    assert out["format"] == "checkpoint" and 0 < out["max_abs_diff"] <= 5e-2
    assert slim.stat().st_size < 0.6 * student.stat().st_size  # float16 halves the weights
    ckpt = torch.load(slim, map_location="cpu", weights_only=True)
    assert ckpt["weights_dtype"] == "float16" and "train_state" not in ckpt
    floats = [v for v in ckpt["state_dict"].values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float16 for v in floats)
    assert ckpt["provenance"]["kind"] == "export" and ckpt["classes"] == list(CLASSES_7)
    # fercli loads it like any checkpoint, computing in float32, with the same top-1 on real-looking input
    half, _ = model_from_checkpoint(slim)
    full, _ = model_from_checkpoint(student)
    assert all(p.dtype == torch.float32 for p in half.parameters())
    x = torch.randn(16, 3, 64, 64)
    with torch.no_grad():
        a, b = full(x), half(x)
    assert (a - b).abs().max() < 5e-2 and torch.equal(a.argmax(1), b.argmax(1))


@pytest.mark.parametrize("args, message", [
    (["--format", "onnx", "--half"], "--half applies to --format checkpoint only"),
    (["--format", "checkpoint", "--out", "slim.onnx"], "must be named *.pt"),
    (["--format", "checkpoint", "--out", "student/best.pt"], "would overwrite the checkpoint"),
])
def test_checkpoint_export_refuses(runner, workspace, student, args, message):
    res = runner.invoke(app, ["export", *args])
    assert res.exit_code == 1 and message in res.stderr
    assert not (workspace / "slim.onnx").exists()
