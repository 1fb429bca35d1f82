"""`fer gen-labels`: the teacher's distributions for the training images."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from fercli.commands import _ui
from fercli.config import build_config

EXAMPLE = """Examples:

  fer gen-labels                                          # workspace teacher + dataset -> labels/labels.parquet

  fer gen-labels --teacher teacher/best.pt data/manifest.parquet --out labels.parquet --temperature 2 --flip
"""


def gen_labels(
    ctx: typer.Context,
    manifest: Optional[Path] = typer.Argument(None, help="Dataset manifest \\[default: the workspace's dataset]."),
    teacher: Optional[Path] = typer.Option(None, "--teacher", help="Teacher checkpoint \\[default: the workspace's]."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Parquet to write \\[default: WORKSPACE/labels/labels.parquet]."),
    temperature: Optional[float] = typer.Option(None, "--temperature", "-T", help="Softmax temperature (paper: 1)."),
    flip: Optional[bool] = typer.Option(None, "--flip/--no-flip", help="Average with the mirrored image."),
    splits: Optional[str] = typer.Option(None, "--splits", help="Comma-separated splits to label (default: train)."),
    force: Optional[bool] = typer.Option(None, "--force", help="Allow labelling the test split."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b", help="Inference batch size."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Decoding worker processes."),
    cache: Optional[bool] = typer.Option(None, "--cache/--no-cache", help="Use the decoded image cache."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:N."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML/YAML file with a \\[gen-labels] table."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Write the teacher's softmax for every labelled training image as label distributions (parquet)."""
    from fercli.gen_labels import GenLabelsConfig, run_gen_labels

    ws = _ui.state(ctx).workspace
    cfg = build_config(GenLabelsConfig, "gen-labels", dict(
        manifest=manifest, teacher=teacher, out=out, temperature=temperature, flip=flip, splits=splits, force=force,
        batch_size=batch_size, workers=workers, cache=cache, device=device), ws, config)
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
    table.add_row("teacher argmax = label", f"{s['agreement']:.4f}")
    table.add_row("mean max probability", f"{s['mean_max_prob']:.4f}")
    table.add_row("mean entropy (nats)", f"{s['mean_entropy']:.4f}")
    if "kl_votes" in s:
        table.add_row("mean KL(votes || teacher)", f"{s['kl_votes']:.4f}")
        table.add_row("teacher argmax = vote majority", f"{s['vote_majority_agreement']:.4f}")
    _ui.out.print(table)
    _ui.out.print(f"wrote {ws.rel(res.out)}; it is now the workspace's labels")
