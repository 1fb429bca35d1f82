"""`fer eval`: scores of a checkpoint or exported model on one split of a manifest."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from fercli.commands import _options as _o
from fercli.commands import _ui
from fercli.config import build_config
from fercli.schema import EVAL_FILES, REPORT_JSON
from fercli.workspace import Workspace

EXAMPLE = """Examples:

  fer eval                                               # the workspace's student on the dataset's test split

  fer eval data/manifest.parquet --model student/best.pt --split valid --tta flip --json

  fer eval --model export/model.onnx --split valid       # an exported model, through ONNX Runtime

  fer eval rafdb7.parquet --model ferplus8.pt --map      # an 8-class model on a 7-class set

  fer eval --robustness                                  # also accuracy under 15 corruptions (robustness.json)
"""


@_o.with_options("out", _o.INFERENCE)
def eval_(
    ctx: typer.Context,
    manifest: Optional[Path] = typer.Argument(None, help="Manifest \\[default: the workspace's dataset]."),
    model: _o.Model = None,
    split: Optional[str] = typer.Option(None, "--split", help="train, valid or test \\[default: test]."),
    tta: Optional[str] = typer.Option(None, "--tta", help="none or flip (average with the mirrored face) \\[default: the model's recommendation, usually none]."),
    map_: Optional[bool] = typer.Option(None, "--map", help="Score on the shared classes when one class list contains the other."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Report directory \\[default: WORKSPACE/eval]."),
    threads: _o.Threads = None,
    runtime: _o.Runtime = None,
    config: Optional[Path] = _o.config_file("eval", "an"),
    json_out: bool = _o.json_flag("report"),
    robustness: Optional[bool] = typer.Option(None, "--robustness", help="Also score under a fixed, seeded set of corruptions "
                                              "(crop, rotation, blur, noise, JPEG, brightness, contrast, resolution, occlusion): "
                                              "writes robustness.json and robustness.png."),
    corruptions: Optional[str] = typer.Option(None, "--corruptions", help="With --robustness: only these corruptions "
                                              "(comma-separated names) \\[default: all]."),
    **inference: Any,
) -> None:
    """Accuracy, mean per-class accuracy, per-class precision/recall/F1, the confusion matrix, and the
    calibration of the probabilities (ECE over 15 bins, NLL, a reliability diagram)."""
    from fercli.stage_configs import EvalConfig  # light: the stage (torch) is imported after validation

    ws = _ui.state(ctx).workspace
    cfg = build_config(EvalConfig, "eval", _o.given(EvalConfig, locals(), map=map_, **inference), ws, config)
    from fercli.evaluation import run_eval

    res = run_eval(cfg, ws, track=_ui.rich_track, command="fer " + " ".join(sys.argv[1:]), on_inputs=_ui.announcer(ctx, ws))
    rep = res.report
    if json_out:
        _ui.print_json(rep)
        return
    table = Table(title=f"{rep['model']['arch']} ({rep['model']['kind']}) on {rep['manifest']['split']}: "
                        f"{rep['images']:,} images, accuracy {rep['accuracy']:.4f}, mean per-class {rep['mean_class_accuracy']:.4f}")
    for col in ("class", "precision", "recall", "F1", "support"):
        table.add_column(col, justify="right" if col != "class" else "left")
    for c, v in rep["per_class"].items():
        table.add_row(c, f"{v['precision']:.4f}", f"{v['recall']:.4f}", f"{v['f1']:.4f}", f"{v['support']:,}")
    _ui.out.print(table)
    if "votes" in rep:
        v = rep["votes"]
        _ui.out.print(f"crowd votes ({v['images']:,} images): mean KL(votes || prediction) {v['mean_kl_votes_pred']:.4f}, "
                      f"agreement with the vote majority {v['vote_majority_agreement']:.4f}")
    before = rep["calibration"].get("before")
    _ui.out.print(f"calibration (temperature {rep['temperature']:.4g}): ECE {rep['ece']:.4f}, NLL {rep['nll']:.4f}"
                  + (f" (at temperature 1: ECE {before['ece']:.4f}, NLL {before['nll']:.4f})" if before else "")
                  + f"; tta {rep['tta']}" + (" (the model's recommendation)" if rep["tta_source"] == "model" else ""))
    if "robustness" in rep:
        _print_robustness(rep["robustness"], ws)
    if rep["excluded_by_map"]:
        _ui.out.print(f"--map: {rep['excluded_by_map']:,} images of classes the model lacks were not scored")
    _ui.out.print(f"wrote {ws.rel(res.out_dir / REPORT_JSON)}, " + ", ".join(EVAL_FILES.values()))


def _delta(x: float) -> str:
    return f"{x + 0.0:+.4f}"  # + 0.0: no "-0.0000"


def _print_robustness(rob: dict[str, Any], ws: Workspace) -> None:
    clean = rob["clean"]
    table = Table(title=f"robustness: {len(rob['corruptions'])} corruptions, seed {rob['seed']}, made at "
                        f"{rob['canonical_size']} px (clean: the same round trip, uncorrupted)")
    for col in ("corruption", "severity", "accuracy", "Δ accuracy", "mean per-class", "Δ mean per-class"):
        table.add_column(col, justify="left" if col in ("corruption", "severity") else "right")
    table.add_row("clean", "", f"{clean['accuracy']:.4f}", "", f"{clean['mean_class_accuracy']:.4f}", "", end_section=True)
    for name, v in rob["corruptions"].items():
        table.add_row(name, v["severity"], f"{v['accuracy']:.4f}", _delta(-v["drop"]), f"{v['mean_class_accuracy']:.4f}",
                      _delta(-v["drop_mean_class_accuracy"]), end_section=name == list(rob["corruptions"])[-1])
    s = rob["summary"]
    table.add_row("mean", "", f"{s['mean_accuracy']:.4f}", _delta(-s["mean_drop"]), f"{s['mean_mean_class_accuracy']:.4f}",
                  _delta(s['mean_mean_class_accuracy'] - clean['mean_class_accuracy']))
    table.add_row(f"worst ({s['worst']})", "", f"{s['worst_accuracy']:.4f}", _delta(-s["worst_drop"]),
                  f"{s['worst_mean_class_accuracy']:.4f}", _delta(s['worst_mean_class_accuracy'] - clean['mean_class_accuracy']))
    _ui.out.print(table)
    _ui.out.print(f"wrote {ws.rel(rob['files']['json'])}, robustness.png")
