"""`fer demo`: the whole pipeline on an embedded synthetic sample (or a real dataset), as a tutorial."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from fercli.commands import _options as _o
from fercli.commands import _ui
from fercli.config import build_config

EXAMPLE = """Examples:

  fer demo                                               # synthetic sample -> runs/demo/report.md

  fer demo --data ~/datasets/ferplus --format ferplus --out runs/demo-ferplus
"""


def demo(
    ctx: typer.Context,
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Fresh workspace for the demo \\[default: runs/demo]."),
    data: Optional[Path] = typer.Option(None, "--data", help="A real dataset instead of the synthetic sample."),
    format: Optional[str] = typer.Option(None, "--format", help="Its format: ferplus, rafdb, affectnet or folder."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the synthetic sample."),
    tiny: Optional[bool] = typer.Option(None, "--tiny", help="A few images and epochs (a smoke test)."),
    overwrite: Optional[bool] = typer.Option(None, "--overwrite", help="Replace a non-empty --out."),
    json_out: bool = _o.json_flag("summary"),
) -> None:
    """Run every stage in turn in a fresh workspace, printing each command first, then write report.md."""
    from fercli.demo import DemoConfig, run_demo

    cfg = build_config(DemoConfig, "demo", _o.given(DemoConfig, locals()))
    quiet = json_out or _ui.state(ctx).quiet
    res = run_demo(cfg, announce=(lambda s: None) if quiet else (lambda s: _ui.err.print(f"[bold cyan]$ {s}[/]", highlight=False)),
                   echo=(lambda s: None) if quiet else (lambda s: _ui.out.print(s.rstrip(), highlight=False, markup=False)))
    if json_out:
        _ui.print_json({"out": str(res.out), "synthetic": res.synthetic, "test_accuracy": res.test_accuracy,
                        "eval_split": res.eval_split,
                        "report": str(res.report),
                        "stages": [{"command": s.command, "seconds": round(s.seconds, 2), "artifact": s.artifact,
                                    "figure": s.figure} for s in res.stages]})
        return
    table = Table(title=f"fer demo ({'synthetic sample' if res.synthetic else 'real data'}): {res.out}")
    for col in ("stage", "artifact", "seconds", "key figure"):
        table.add_column(col, justify="right" if col == "seconds" else "left")
    for s in res.stages:
        table.add_row(s.command, s.artifact or "-", f"{s.seconds:.1f}", s.figure or "-")
    _ui.out.print(table)
    if res.synthetic:
        _ui.out.print("The data is synthetic (drawn faces): this shows the pipeline, not accuracy on real faces. "
                      "On a real dataset: fer demo --data PATH --format ferplus|rafdb|affectnet|folder")
    _ui.out.print(f"accuracy on the {res.eval_split} split {res.test_accuracy:.4f}; report: {res.report}")
