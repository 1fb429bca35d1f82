"""`fer calibrate`: fit a checkpoint's softmax temperature on a labelled split and store it in the checkpoint."""

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

  fer calibrate                                          # the workspace's student, on the dataset's valid split, in place

  fer calibrate runs/lfer/best.pt --manifest data/manifest.parquet --split valid --out lfer_calibrated.pt --json

  fer calibrate --out ferplus8_calibrated.pt              # no student here: a calibrated copy of the bundled model
"""


@_o.with_options("out", _o.INFERENCE)
def calibrate(
    ctx: typer.Context,
    ckpt: Optional[Path] = typer.Argument(None, help="fercli checkpoint \\[default: the workspace's student]."),
    manifest: Optional[Path] = typer.Option(None, "--manifest", help="Labelled manifest \\[default: the workspace's dataset]."),
    split: Optional[str] = typer.Option(None, "--split", help="Split to fit on: train, valid or test \\[default: valid]."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Checkpoint to write \\[default: CKPT itself, in place]."),
    config: Optional[Path] = _o.config_file("calibrate"),
    json_out: bool = _o.json_flag("result"),
    **inference: Any,
) -> None:
    """Fit the softmax temperature (temperature scaling) that makes the probabilities calibrated.

    The checkpoint's raw logits (no test-time augmentation) on the split are fitted by NLL; the
    temperature is stored in the checkpoint and applied by `fer eval`, `fer predict` and exports.
    Predictions (the most likely class) do not change. Prints ECE and NLL before and after.
    """
    from fercli.stage_configs import CalibrateConfig  # light: the stage (torch) is imported after validation

    ws = _ui.state(ctx).workspace
    cfg = build_config(CalibrateConfig, "calibrate", _o.given(CalibrateConfig, locals(), model=ckpt, **inference), ws, config)
    from fercli.calibration import run_calibrate

    res = run_calibrate(cfg, ws, track=_ui.rich_track, command="fer " + " ".join(sys.argv[1:]),
                        on_inputs=_ui.announcer(ctx, ws))
    summary = res.summary()
    if json_out:
        _ui.print_json(summary)
        return
    table = Table(title=f"temperature {res.temperature:.4f} fitted on {res.split} ({res.images:,} images)")
    for col in ("", "temperature", "ECE (15 bins)", "NLL"):
        table.add_column(col, justify="right" if col else "left")
    for name, row in (("before", res.before), ("after", res.after)):
        table.add_row(name, f"{row['temperature']:.4f}", f"{row['ece']:.4f}", f"{row['nll']:.4f}")
    _ui.out.print(table)
    if res.previous != 1.0:
        _ui.out.print(f"replaced the checkpoint's previous temperature {res.previous:.4f}")
    _ui.out.print(f"wrote {ws.rel(res.path)}" + (" (in place)" if summary["in_place"] else "")
                  + f"; figures on the fitting split are optimistic: check with `fer eval --model {ws.rel(res.path)}`")
