"""`fer export`: a checkpoint -> ONNX or TorchScript with its classes and preprocessing, parity-checked."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from fercli.commands import _options as _o
from fercli.commands import _ui
from fercli.config import build_config

EXAMPLE = """Examples:

  fer export                                          # the workspace's student -> export/model.onnx

  fer export student/best.pt --format torchscript --out deploy/lfer.torchscript

  fer export runs/lfer/best.pt -o lfer.onnx --json

  fer export student/best.pt --format checkpoint --half -o lfer_fp16.pt   # half the size, fercli loads it

  fer export student/best.pt --quantize int8 --calib data/manifest.parquet   # -> export/model_int8.onnx

  fer export export/model.onnx --quantize fp16       # quantise a float32 export -> export/model_fp16.onnx
"""


def export(
    ctx: typer.Context,
    ckpt: Optional[Path] = typer.Argument(None, help="Checkpoint to export \\[default: the workspace's student]."),
    format: Optional[str] = typer.Option(None, "--format", "-f", help="onnx, torchscript or checkpoint (slim .pt) \\[default: onnx]."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="File to write \\[default: WORKSPACE/export/model.onnx or model.torchscript]."),
    opset: Optional[int] = typer.Option(None, "--opset", help="ONNX opset \\[default: 17]."),
    half: Optional[bool] = typer.Option(None, "--half", help="checkpoint format: store float16 weights (loaded back as float32)."),
    tolerance: Optional[float] = typer.Option(None, "--tolerance", help="Max abs logit difference vs eager PyTorch \\[default: 1e-4; 5e-2 with --half]."),
    quantize: Optional[str] = typer.Option(None, "--quantize", "-q", help="ONNX only: int8 (static, QDQ, per-channel weights, "
                                           "calibrated), int8-dynamic or fp16; the file is compared with float32 on the "
                                           "calibration images and written only if top-1 agreement >= --min-agreement."),
    calib: Optional[Path] = typer.Option(None, "--calib", help="Calibration images for --quantize: a manifest (a seeded "
                                         "sample of its train split; never valid or test) or a .npy of uint8 (N, S, S, 3) "
                                         "RGB faces \\[default: the workspace's dataset]."),
    calib_size: Optional[int] = typer.Option(None, "--calib-size", help="Calibration images, at least 50 \\[default: 500]."),
    quant_exclude: Optional[str] = typer.Option(None, "--quant-exclude", help="int8: keep these in float32 (comma-separated): "
                                                "first-conv, head, depthwise, or ONNX node names."),
    min_agreement: Optional[float] = typer.Option(None, "--min-agreement", help="--quantize: the least top-1 agreement with "
                                                  "float32 to write the file \\[default: int8 0.95, int8-dynamic 0.90, fp16 0.99]."),
    config: Optional[Path] = _o.config_file("export", "an", these=True),
    json_out: bool = _o.json_flag("result"),
) -> None:
    """Export a checkpoint to ONNX or TorchScript for deployment (dynamic batch), or to a slim checkpoint.

    The class list, input size, mean, std, temperature and recommended tta are stored inside the
    file and in a sidecar FILE.json (the output stays raw logits: divide by the temperature before
    the softmax). The export is run on random batches and compared with the eager model; it is
    written only if the max abs difference is within the tolerance.
    """
    from fercli.stage_configs import ExportConfig  # light: the stage (torch) is imported after validation

    ws = _ui.state(ctx).workspace
    cfg = build_config(ExportConfig, "export", _o.given(ExportConfig, locals()), workspace=ws, config_file=config)
    if cfg.out is not None:  # before the export's work: one line, not a traceback at the end
        from fercli.fileio import check_writable_file

        check_writable_file(cfg.out, "--out")
    from fercli.export import resolve_checkpoint, run_export

    art = resolve_checkpoint(ws, ckpt, cfg.quantize)
    _ui.using(ctx, ws, art)
    result, _ = run_export(cfg, ws, art, command="fer " + " ".join(sys.argv[1:]))
    summary = result.summary()
    if json_out:
        _ui.print_json(summary)
        return
    mode = f" {summary['quantization']['mode']}" if "quantization" in summary else ""
    table = Table(title=f"exported {summary['arch']} ({summary['format']}{mode})", show_header=False)
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
    if "quantization" in summary:
        _quantized_rows(table, summary)
    else:
        table.add_row("parity vs eager", ", ".join(f"batch {b}: {d:.2e}" for b, d in result.parity.items())
                      + f" (max abs diff {result.max_abs_diff:.2e} <= {result.meta['parity']['tolerance']:g})")
    _ui.out.print(table)
    _ui.out.print(f"wrote {ws.rel(result.path)}; it is now the workspace's export")


def _quantized_rows(table: Table, summary: dict) -> None:
    q, par = summary["quantization"], summary["quantized_parity"]
    what = f"{q['mode']}, {q['format']}" + "".join(f"; {k} {q[k]}" for k in ("weights", "activations") if q.get(k))
    if q.get("excluded"):
        what += f"; kept in float32: {', '.join(q['excluded'])} ({q['excluded_nodes']} nodes)"
    table.add_row("quantization", what)
    cal = q.get("calibration")
    if cal:
        table.add_row("calibration", f"{cal['images']} images, a seeded sample (seed {cal['seed']}) of "
                                     f"{cal['drawn_from']:,} {cal['split'] or ''} images in {cal['source']}".replace("  ", " "))
    table.add_row("size", f"{summary['bytes'] / 1e6:.2f} MB (float32: {par['fp32_bytes'] / 1e6:.2f} MB, "
                          f"{summary['bytes'] / par['fp32_bytes']:.2f}x)")
    table.add_row("parity vs float32", f"top-1 agreement {par['top1_agreement']:.4f} on {par['images']} {par['inputs']} "
                                       f"(>= {par['min_agreement']:g}); largest probability difference "
                                       f"{par['max_prob_diff']:.4f}, largest logit difference {par['max_logit_diff']:.4f}")
    if summary["parity"]:
        table.add_row("float32 vs eager", ", ".join(f"batch {b}: {d:.2e}" for b, d in summary["parity"].items()))
