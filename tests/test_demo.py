"""`fer demo` with a tiny budget: every stage runs and the report is written."""

from __future__ import annotations

import json
from pathlib import Path

from fercli.cli import app


def test_demo_tiny(runner, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("FER_WORKSPACE", str(tmp_path / "elsewhere"))  # the demo's own folder is its workspace
    out = tmp_path / "demo"
    res = runner.invoke(app, ["demo", "--tiny", "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    typed = [s["command"] for s in summary["stages"]]
    assert typed == ["fer align raw/ aligned/", "fer pretrain-teacher", "fer gen-labels", "fer train --beta 0.2",
                     "fer eval", "fer bench", "fer export", "fer predict img.png"]
    assert summary["synthetic"] and 0 <= summary["test_accuracy"] <= 1
    report = (out / "report.md").read_text()
    assert "synthetic" in report and "![confusion matrix](eval/confusion.png)" in report
    assert (out / "eval" / "confusion.png").is_file() and (out / "student" / "curves.png").is_file()
    assert (out / "export" / "model.onnx").is_file()
    res = runner.invoke(app, ["demo", "--tiny", "--out", str(out)])
    assert res.exit_code == 1 and "not empty; pass --overwrite" in res.stderr
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    res = runner.invoke(app, ["demo", "--tiny", "--out", str(tmp_path / "mine"), "--overwrite"])
    assert res.exit_code == 1 and "not a folder made by fer demo" in res.stderr
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"
