"""`fer eval`: scores of a checkpoint or exported model on one split of a manifest."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from fercli.commands import _ui
from fercli.config import build_config
from fercli.evaluation import EvalConfig, evaluate

EXAMPLE = """Examples:

  fer eval                                               # the workspace's student on the dataset's test split

  fer eval data/manifest.parquet --model student/best.pt --split valid --tta flip --json

  fer eval --model export/model.onnx --split valid       # an exported model, through ONNX Runtime

  fer eval rafdb7.parquet --model ferplus8.pt --map      # an 8-class model on a 7-class set
"""


def eval_(
    ctx: typer.Context,
    manifest: Optional[Path] = typer.Argument(None, help="Manifest \\[default: the workspace's dataset]."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Checkpoint or export \\[default: the workspace's student]."),
    split: Optional[str] = typer.Option(None, "--split", help="train, valid or test \\[default: test]."),
    tta: Optional[str] = typer.Option(None, "--tta", help="none or flip (average with the mirrored face)."),
    map_: Optional[bool] = typer.Option(None, "--map", help="Score on the shared classes when one class list contains the other."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Report directory \\[default: WORKSPACE/eval]."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b", help="Inference batch size."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Decoding worker processes."),
    cache: Optional[bool] = typer.Option(None, "--cache/--no-cache", help="Use the decoded image cache."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:N."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML/YAML file with an \\[eval] table."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Accuracy, mean per-class accuracy, per-class precision/recall/F1 and the confusion matrix."""
    ws = _ui.state(ctx).workspace
    cfg = build_config(EvalConfig, "eval", dict(
        model=model, manifest=manifest, split=split, tta=tta, map=map_, out=out, batch_size=batch_size,
        workers=workers, cache=cache, device=device, threads=threads), ws, config)
    res = evaluate(cfg, ws, track=_ui.rich_track, command="fer " + " ".join(sys.argv[1:]), on_inputs=_ui.announcer(ctx, ws))
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
    if rep["excluded_by_map"]:
        _ui.out.print(f"--map: {rep['excluded_by_map']:,} images of classes the model lacks were not scored")
    _ui.out.print(f"wrote {ws.rel(res.out_dir / 'report.json')}, predictions.csv, confusion.csv, confusion.png")
