"""The user's own sequence, typed with no paths in a fresh workspace."""

from __future__ import annotations

import json
from pathlib import Path

from _fab import make_pattern_folder

from fercli.classes import CLASSES_7
from fercli.cli import app

BUDGETS = """
[pretrain-teacher]
arch = "resnet18"
input_size = 32
epochs = 1
batch_size = 16
workers = 0

[gen-labels]
workers = 0

[train]
input_size = 32
epochs = 1
batch_size = 16
workers = 0
"""


def test_align_teacher_labels_train_with_no_paths(runner, workspace: Path):
    make_pattern_folder(workspace / "raw", CLASSES_7, {"train": 6, "valid": 3}, size=40)
    (workspace / "raw" / "train" / "anger" / "broken.png").write_bytes(b"")  # recorded, never trained on
    (workspace / "fer.toml").write_text(BUDGETS)

    res = runner.invoke(app, ["align", "raw/", "aligned/", "--detector", "none", "--size", "32"])
    assert res.exit_code == 0, res.output
    assert (workspace / "aligned" / "manifest.parquet").is_file()
    info = json.loads(runner.invoke(app, ["data", "info", "--json"]).stdout)
    assert info["status"] == {"ok": 63, "unreadable": 1} and info["missing_files"] == 0

    res = runner.invoke(app, ["pretrain-teacher"])
    assert res.exit_code == 0, res.output
    assert "using dataset (workspace): aligned/manifest.parquet" in res.stderr
    assert "wrote teacher/best.pt" in res.stdout

    res = runner.invoke(app, ["gen-labels"])
    assert res.exit_code == 0, res.output
    assert "using teacher (workspace): teacher/best.pt" in res.stderr
    assert "wrote labels/labels.parquet" in res.stdout

    res = runner.invoke(app, ["train", "--beta", "0.2", "--json"])
    assert res.exit_code == 0, res.output
    assert "using labels (workspace): labels/labels.parquet" in res.stderr
    summary = json.loads(res.stdout)
    assert summary["targets"] == "teacher" and summary["epochs_run"] == 1
    assert (workspace / "student" / "best.pt").is_file()

    status = json.loads(runner.invoke(app, ["status", "--json"]).stdout)
    assert [a["state"] for a in status["artifacts"][:4]] == ["ok"] * 4
    assert status["next"] == "fer eval --split valid"  # raw/ has train/ and valid/ folders only

    # Rerunning training in the same place must not silently overwrite the run: the same command
    # finds it finished and up to date, other settings are refused.
    mtime = (workspace / "student" / "best.pt").stat().st_mtime_ns
    res = runner.invoke(app, ["train"])
    assert res.exit_code == 0 and "student/best.pt is up to date" in res.stdout, res.output
    res = runner.invoke(app, ["train", "--epochs", "2"])
    assert res.exit_code == 1 and "pass --resume to continue it" in res.stderr
    assert (workspace / "student" / "best.pt").stat().st_mtime_ns == mtime
