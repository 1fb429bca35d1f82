"""`fer gen-labels`: the teacher's distributions for the training images."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from fercli.commands import _options as _o
from fercli.commands import _ui
from fercli.config import build_config

EXAMPLE = """Examples:

  fer gen-labels                                          # workspace teacher + dataset -> labels/labels.parquet

  fer gen-labels --teacher teacher/best.pt data/manifest.parquet --out labels.parquet --temperature 2 --flip

  fer gen-labels --teacher a/best.pt --ensemble b/best.pt --ensemble c.pt   # the mean of three teachers
"""


@_o.with_options("force", _o.INFERENCE)
def gen_labels(
    ctx: typer.Context,
    manifest: _o.Manifest = None,
    teacher: Optional[Path] = typer.Option(None, "--teacher", help="Teacher checkpoint \\[default: the workspace's]."),
    ensemble: Optional[list[Path]] = typer.Option(
        None, "--ensemble", help="Another teacher checkpoint (repeatable): the distributions become the mean of all "
        "teachers' softmax, each at its own input size."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Parquet to write \\[default: WORKSPACE/labels/labels.parquet]."),
    temperature: Optional[float] = typer.Option(None, "--temperature", "-T", help="Softmax temperature (paper: 1)."),
    flip: Optional[bool] = typer.Option(None, "--flip/--no-flip", help="Average with the mirrored image."),
    splits: Optional[str] = typer.Option(None, "--splits", help="Comma-separated splits to label (default: train)."),
    force: Optional[bool] = typer.Option(None, "--force", help="Allow labelling the test split."),
    config: Optional[Path] = _o.config_file("gen-labels"),
    json_out: bool = _o.json_flag("summary"),
    **inference: Any,
) -> None:
    """Write the teacher's softmax for every labelled training image as label distributions (parquet)."""
    from fercli.stage_configs import GenLabelsConfig  # light: the stage (torch) is imported after validation

    ws = _ui.state(ctx).workspace
    cfg = build_config(GenLabelsConfig, "gen-labels", _o.given(GenLabelsConfig, locals(), ensemble=ensemble or None,
                                                                      **inference), ws, config)
    from fercli.gen_labels import run_gen_labels

    res = run_gen_labels(cfg, ws, track=_ui.rich_track, command="fer " + " ".join(sys.argv[1:]),
                          on_inputs=_ui.announcer(ctx, ws))
    if json_out:
        _ui.print_json(res.summary)
        return
    s = res.summary
    table = Table(title=f"label distributions: {ws.rel(res.out)}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("images", f"{s['rows']:,}")
    table.add_row("splits", ", ".join(s["splits"]))
    table.add_row("temperature / flip", f"{s['temperature']} / {'yes' if s['flip'] else 'no'}")
    for member in s.get("ensemble", []):
        table.add_row(f"teacher {member['file']} ({member['arch']}, {member['input_size']} px) argmax = label",
                      f"{member['agreement']:.4f}")
    table.add_row("teacher argmax = label" if "ensemble" not in s else "ensemble argmax = label", f"{s['agreement']:.4f}")
    table.add_row("mean max probability", f"{s['mean_max_prob']:.4f}")
    table.add_row("mean entropy (nats)", f"{s['mean_entropy']:.4f}")
    if "kl_votes" in s:
        table.add_row("mean KL(votes || teacher)", f"{s['kl_votes']:.4f}")
        table.add_row("teacher argmax = vote majority", f"{s['vote_majority_agreement']:.4f}")
    _ui.out.print(table)
    _ui.out.print(f"wrote {ws.rel(res.out)}; it is now the workspace's labels")
