"""`fer export`: a checkpoint -> ONNX or TorchScript with its classes and preprocessing, parity-checked."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from fercli.commands import _ui
from fercli.config import build_config

EXAMPLE = """Examples:

  fer export                                          # the workspace's student -> export/model.onnx

  fer export student/best.pt --format torchscript --out deploy/lfer.torchscript

  fer export runs/lfer/best.pt -o lfer.onnx --json

  fer export student/best.pt --format checkpoint --half -o lfer_fp16.pt   # half the size, fercli loads it
"""


def export(
    ctx: typer.Context,
    ckpt: Optional[Path] = typer.Argument(None, help="Checkpoint to export \\[default: the workspace's student]."),
    format: Optional[str] = typer.Option(None, "--format", "-f", help="onnx, torchscript or checkpoint (slim .pt) \\[default: onnx]."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="File to write \\[default: WORKSPACE/export/model.onnx or model.torchscript]."),
    opset: Optional[int] = typer.Option(None, "--opset", help="ONNX opset \\[default: 17]."),
    half: Optional[bool] = typer.Option(None, "--half", help="checkpoint format: store float16 weights (loaded back as float32)."),
    tolerance: Optional[float] = typer.Option(None, "--tolerance", help="Max abs logit difference vs eager PyTorch \\[default: 1e-4; 5e-2 with --half]."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML/YAML file with an \\[export] table of these options."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Export a checkpoint to ONNX or TorchScript for deployment (dynamic batch), or to a slim checkpoint.

    The class list, input size, mean, std, temperature and recommended tta are stored inside the
    file and in a sidecar FILE.json (the output stays raw logits: divide by the temperature before
    the softmax). The export is run on random batches and compared with the eager model; it is
    written only if the max abs difference is within the tolerance.
    """
    from fercli.export import ExportConfig, resolve_checkpoint, run_export

    ws = _ui.state(ctx).workspace
    cfg = build_config(ExportConfig, "export", dict(format=format, out=out, opset=opset, half=half, tolerance=tolerance),
                       workspace=ws, config_file=config)
    if cfg.out is not None:  # before the export's work: one line, not a traceback at the end
        from fercli.fileio import check_writable_file

        check_writable_file(cfg.out, "--out")
    art = resolve_checkpoint(ws, ckpt)
    _ui.using(ctx, ws, art)
    result, _ = run_export(cfg, ws, art, command="fer " + " ".join(sys.argv[1:]))
    summary = result.summary()
    if json_out:
        _ui.print_json(summary)
        return
    table = Table(title=f"exported {summary['arch']} ({summary['format']})", show_header=False)
    table.add_column("what")
    table.add_column("value")
    table.add_row("file", f"{ws.rel(result.path)} ({summary['bytes'] / 1e6:.2f} MB)")
    table.add_row("metadata", f"inside the file and in {ws.rel(result.sidecar)}")
    table.add_row("classes", ", ".join(summary["classes"]))
    if "weights_dtype" in result.meta:
        table.add_row("weights", result.meta["weights_dtype"] + " (computed in float32)")
    table.add_row("input", f"float32 (batch, 3, {summary['input_size']}, {summary['input_size']}), RGB, "
                           f"(x/255 - mean)/std, mean {summary['mean']}, std {summary['std']}")
    table.add_row("output", f"raw logits; probabilities = softmax(logits / {summary['temperature']:.4g}) "
                            f"(temperature), recommended tta {summary['tta']}")
    table.add_row("parity vs eager", ", ".join(f"batch {b}: {d:.2e}" for b, d in result.parity.items())
                  + f" (max abs diff {result.max_abs_diff:.2e} <= {result.meta['parity']['tolerance']:g})")
    _ui.out.print(table)
    _ui.out.print(f"wrote {ws.rel(result.path)}; it is now the workspace's export")
