"""The workspace convention: default locations, "current" artifacts, staleness, config precedence."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from _fab import make_ferplus

from fercli.classes import CLASSES_7, CLASSES_8
from fercli.config import build_config
from fercli.errors import FerError
from fercli.importers import ImportConfig, run_import
from fercli.schema import CHECKPOINT_FORMAT, META_KEY, SCHEMA_VERSION, make_provenance
from fercli.workspace import Workspace

VOTES = [[6, 0, 1, 1, 0, 0, 0, 0, 2, 0], [0, 9, 0, 0, 0, 0, 0, 0, 1, 0], [0, 0, 8, 0, 0, 0, 0, 0, 2, 0]]


def fake_dataset(root: Path, n: int = 3) -> Path:
    return make_ferplus(root, {"FER2013Train": [(f"fer{i:07d}.png", VOTES[i % 3]) for i in range(n)],
                               "FER2013Valid": [("fer0000100.png", VOTES[1])]})


def stand_in_checkpoint(ws: Workspace, kind: str, inputs: dict, classes=CLASSES_8, path: Path | None = None,
                        weight: float = 0.0) -> Path:
    """What `fer pretrain-teacher` / `fer train` will write, reduced to its metadata."""
    path = path or ws.default_path(kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    prov = make_provenance(kind, {k: ws.input_ref(a) for k, a in inputs.items()}, {"val_acc": 0.5})
    torch.save({"format": CHECKPOINT_FORMAT, "schema_version": SCHEMA_VERSION, "arch": "stand-in",
                "classes": list(classes), "state_dict": {"w": torch.full((2,), weight)}, "provenance": prov}, path)
    ws.record(kind, path)
    return path


def stand_in_labels(ws: Workspace, inputs: dict, classes=CLASSES_8) -> Path:
    """What `fer gen-labels` will write, reduced to its metadata."""
    path = ws.default_path("labels")
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"schema_version": SCHEMA_VERSION, "kind": "labels", "classes": list(classes),
            "provenance": make_provenance("labels", {k: ws.input_ref(a) for k, a in inputs.items()}, {"rows": 3})}
    table = pa.table({"path": ["a"]}).replace_schema_metadata({META_KEY: json.dumps(meta).encode()})
    pq.write_table(table, path)
    ws.record("labels", path)
    return path


def test_walk_through_default_locations_and_staleness(tmp_path: Path):
    ws = Workspace(tmp_path / "ws")
    (tmp_path / "ws").mkdir()
    status = ws.status()
    assert status["artifacts"][0]["state"] == "missing" and status["next"].startswith("fer align")
    with pytest.raises(FerError, match=r"no teacher in workspace .*run `fer pretrain-teacher` first"):
        ws.resolve("teacher")

    # Stage 1: import with no --out lands at the default location and becomes the current dataset.
    run_import(ImportConfig(format="ferplus", src=fake_dataset(tmp_path / "raw")), ws)
    assert (ws.root / "data" / "manifest.parquet").is_file()
    assert ws.status()["next"] == "fer pretrain-teacher"

    # Stages 2-4 with every path omitted, as the commands will resolve them.
    teacher = stand_in_checkpoint(ws, "teacher", ws.resolve_inputs({"dataset": None}))
    arts = ws.resolve_inputs({"dataset": None, "teacher": None})
    assert arts["dataset"].implicit and arts["teacher"].path == teacher
    assert "made" in ws.describe(arts["teacher"]) and "val_acc 0.5" in ws.describe(arts["teacher"])
    stand_in_labels(ws, arts)
    arts = ws.resolve_inputs({"dataset": None, "labels": None})
    stand_in_checkpoint(ws, "student", arts)
    rows = {r["kind"]: r for r in ws.status()["artifacts"]}
    assert [rows[k]["state"] for k in ("dataset", "teacher", "labels", "student")] == ["ok"] * 4
    assert rows["labels"]["inputs"] == {"dataset": "data/manifest.parquet", "teacher": "teacher/best.pt"}
    # FERPlus as imported has no test split: the next command says which split to score
    assert ws.status()["next"] == "fer eval --split valid"

    # The teacher is retrained: labels made from the old one are refused, naming the command to rerun.
    stand_in_checkpoint(ws, "teacher", {"dataset": arts["dataset"]}, weight=1.0)
    with pytest.raises(FerError, match=r"stale input: labels/labels.parquet was made from teacher .* rerun `fer gen-labels`"):
        ws.resolve_inputs({"dataset": None, "labels": None})
    states = {r["kind"]: r["state"] for r in ws.status()["artifacts"]}
    assert states["labels"] == "stale" and states["student"] == "stale"  # made from stale labels
    assert ws.status()["next"] == "fer gen-labels"

    # An explicit path overrides the workspace (explicit labels are not compared with the current teacher)...
    assert ws.resolve_inputs({"labels": ws.default_path("labels")})["labels"].implicit is False
    # ...but labels made from another manifest are refused even when given explicitly.
    run_import(ImportConfig(format="ferplus", src=fake_dataset(tmp_path / "raw2", n=2)), ws)
    with pytest.raises(FerError, match=r"was made from dataset data/manifest.parquet .* but this run uses data/manifest.parquet"):
        ws.resolve_inputs({"dataset": None, "labels": ws.default_path("labels")})
    assert {r["kind"]: r["state"] for r in ws.status()["artifacts"]}["teacher"] == "stale"
    # the stale teacher's run is in the way of a plain rerun (train refuses changed inputs): say --overwrite
    status = ws.status()
    assert status["next"] == "fer pretrain-teacher --overwrite" and "--overwrite trains it again" in status["note"]


def test_mismatched_classes_are_refused(tmp_path: Path):
    ws = Workspace(tmp_path)
    run_import(ImportConfig(format="ferplus", src=fake_dataset(tmp_path / "raw")), ws)
    arts = ws.resolve_inputs({"dataset": None})
    stand_in_checkpoint(ws, "teacher", arts, classes=CLASSES_7)
    with pytest.raises(FerError, match=r"class lists differ between data/manifest.parquet \(8 classes\) and teacher/best.pt \(7 classes\)"):
        ws.resolve_inputs({"dataset": None, "teacher": None})


def test_recorded_pointer_and_missing_file(tmp_path: Path):
    ws = Workspace(tmp_path)
    run_import(ImportConfig(format="ferplus", src=fake_dataset(tmp_path / "raw"), out=tmp_path / "x" / "m.parquet"), ws)
    assert ws.resolve("dataset").path == tmp_path / "x" / "m.parquet"
    assert Workspace(tmp_path).current_path("dataset") == tmp_path / "x" / "m.parquet"  # survives a new process
    with pytest.raises(FerError, match="nope.pt: no such file"):
        ws.resolve("teacher", tmp_path / "nope.pt")
    (tmp_path / ".fer" / "state.json").write_text("{broken")  # a damaged state falls back to defaults
    assert Workspace(tmp_path).current_path("dataset") is None


def test_workspace_from_env(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("FER_WORKSPACE", str(tmp_path))
    assert Workspace.find().root == tmp_path.resolve()
    assert Workspace.find(tmp_path / "other").root == (tmp_path / "other").resolve()


@dataclass
class DemoConfig:
    epochs: int = 120
    lr: float = 0.01
    arch: str = "lfer"
    flip: bool = True
    sizes: tuple[int, ...] = (224,)
    out: Path | None = None


def test_config_precedence_and_errors(tmp_path: Path):
    ws = Workspace(tmp_path)
    (tmp_path / "fer.toml").write_text('[train]\nepochs = 3\nlr = 0.1\nsizes = [64, 112]\n')
    cfg_file = tmp_path / "exp.yaml"
    cfg_file.write_text("train:\n  lr: 0.05\n  flip: false\n")
    cfg = build_config(DemoConfig, "train", {"arch": "shufflenet_v2", "epochs": None}, ws, cfg_file)
    assert cfg == DemoConfig(epochs=3, lr=0.05, arch="shufflenet_v2", flip=False, sizes=(64, 112))
    assert build_config(DemoConfig, "train", {"epochs": 7}, ws).epochs == 7
    (tmp_path / "bad.toml").write_text("epoch = 3\n")
    with pytest.raises(FerError, match=r"bad.toml: unknown option 'epoch'; known: arch, epochs"):
        build_config(DemoConfig, "train", {}, None, tmp_path / "bad.toml")
    (tmp_path / "bad2.toml").write_text('epochs = "many"\n')
    with pytest.raises(FerError, match=r"bad2.toml: option 'epochs' must be int, got 'many'"):
        build_config(DemoConfig, "train", {}, None, tmp_path / "bad2.toml")
    (tmp_path / "bad3.toml").write_text("epochs = [\n")
    with pytest.raises(FerError, match="bad3.toml: malformed config"):
        build_config(DemoConfig, "train", {}, None, tmp_path / "bad3.toml")


def test_rewriting_identical_data_keeps_everything_fresh(tmp_path: Path):
    """A rerun of import on unchanged inputs leaves the manifest as it was; the same data imported
    elsewhere (another root, another time) has the same identity, so what was made from it stays fresh."""
    import os
    import shutil

    from _fab import make_ferplus

    from fercli.importers import ImportConfig, run_import
    from fercli.schema import content_sha256, read_artifact_meta

    rows = [(f"fer{i:07d}.png", [6, 2, 0, 0, 2, 0, 0, 0, 0, 0]) for i in range(6)]
    src = make_ferplus(tmp_path / "fp", {"FER2013Train": rows, "FER2013Valid": rows[:2]})
    ws = Workspace(tmp_path / "ws")
    out = run_import(ImportConfig(format="ferplus", src=src), ws).out
    before = (out.read_bytes(), os.stat(out).st_mtime_ns, ws.sha256(out))
    run_import(ImportConfig(format="ferplus", src=src), ws)
    assert (out.read_bytes(), os.stat(out).st_mtime_ns, ws.sha256(out)) == before  # untouched
    # the same data at another root, imported into another workspace later: the same identity
    shutil.copytree(src, tmp_path / "elsewhere")
    ws2 = Workspace(tmp_path / "ws2")
    out2 = run_import(ImportConfig(format="ferplus", src=tmp_path / "elsewhere"), ws2).out
    assert out2.read_bytes() != out.read_bytes()  # other root and time in the metadata ...
    assert content_sha256(out2) == content_sha256(out) == ws2.sha256(out2)  # ... same content
    assert read_artifact_meta(out2)["root_abs"] != read_artifact_meta(out)["root_abs"]
    # different rows: a different identity
    rows[0] = (rows[0][0], [0, 8, 2, 0, 0, 0, 0, 0, 0, 0])
    make_ferplus(tmp_path / "fp", {"FER2013Train": rows, "FER2013Valid": rows[:2]})
    out3 = run_import(ImportConfig(format="ferplus", src=src), ws).out
    assert ws.sha256(out3) != before[2]
