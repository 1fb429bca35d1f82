"""`fer bench`: parameters, MACs/FLOPs and latency of models, or the paper's Table 4 comparison."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich import box
from rich.table import Table

from fercli.commands import _options as _o
from fercli.commands import _ui
from fercli.config import build_config
from fercli.choices import MODEL_NAMES  # the registry's names (a test checks they agree), light for --help
from fercli.errors import FerError

EXAMPLE = """Examples:

  fer bench --paper                          # Table 4 (baseline, +head, +PDWRes) beside the paper

  fer bench                                  # 3 student variants, 224x224, batch 1 and 32, all backends

  fer bench shufflenet_v2 lfer --batch 1 --backend eager,onnxruntime --reps 200

  fer bench student/best.pt resnet50 --size 112 --size 224 --json

  fer bench student/best.pt --backend onnxruntime,onnxruntime-fp16,onnxruntime-int8-dynamic,onnxruntime-int8

  fer bench export/model.onnx export/model_int8.onnx export/model_fp16.onnx   # exported files as they are
"""


def _split(values: Optional[list[str]]) -> Optional[list[str]]:
    """Repeated options and comma-separated lists alike: --batch 1 --batch 32 == --batch 1,32."""
    if not values:
        return None
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def _f(value: Optional[float], digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def bench(
    ctx: typer.Context,
    models: Optional[list[str]] = typer.Argument(
        None, help=f"Registered models ({', '.join(MODEL_NAMES)}), checkpoint files or exported .onnx files (any --quantize variant) \\[default: shufflenet_v2 lfer_head lfer]."),
    size: Optional[list[str]] = typer.Option(None, "--size", "-s", help="Input size(s), multiples of 16 \\[default: 224, or a checkpoint's own]."),
    batch: Optional[list[str]] = typer.Option(None, "--batch", "-b", help="Batch size(s) to time \\[default: 1 and 32]."),
    backend: Optional[list[str]] = typer.Option(None, "--backend", help="eager, torchscript, onnxruntime, onnxruntime-fp16, onnxruntime-int8-dynamic, onnxruntime-int8 (the model quantised as fer export --quantize does it), openvino (if installed) (comma-separated) \\[default: eager, torchscript, onnxruntime]."),
    device: Optional[list[str]] = typer.Option(None, "--device", help="cpu and/or cuda \\[default: cpu, plus cuda when present]."),
    classes: Optional[int] = typer.Option(None, "--classes", help="Outputs of registry models \\[default: 7]."),
    reps: Optional[int] = typer.Option(None, "--reps", help="Timed passes per model and backend, at most \\[default: 100]."),
    min_reps: Optional[int] = typer.Option(None, "--min-reps", help="Timed passes at least, even past the time budget \\[default: 5]."),
    max_seconds: Optional[float] = typer.Option(None, "--max-seconds", help="Time budget per model, backend and batch size \\[default: 2]."),
    warmup: Optional[int] = typer.Option(None, "--warmup", help="Untimed passes first \\[default: 3]."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Intra-op threads for torch and onnxruntime \\[default: torch's]."),
    latency: Optional[bool] = typer.Option(None, "--latency/--no-latency", help="Time the models, or only count parameters and MACs."),
    paper: bool = typer.Option(False, "--paper", help="Only print Table 4 of the paper beside our counts (224x224, 7 classes)."),
    config: Optional[Path] = _o.config_file("bench", these=True),
    json_out: bool = _o.json_flag("results"),
) -> None:
    """Count parameters, MACs and FLOPs (= 2 x MACs) and time forward passes on CPU (and CUDA).

    MACs are thop's multiply-accumulates of Conv2d and Linear layers, cross-checked with
    torch.utils.flop_counter. Every model and backend of one batch size is timed interleaved in the
    same loop, so the ratios between them are fair even on a busy machine.
    """
    from fercli.stage_configs import BenchConfig  # light: the stage (torch) is imported after validation

    if paper:
        from fercli.bench import paper_table

        if models or size or batch or backend or device or classes:
            raise FerError("--paper compares the fixed Table 4 setting (the three student variants, 224x224, "
                           "7 classes); drop the other arguments, or run fer bench without --paper")
        rep = paper_table()
        if json_out:
            _ui.print_json(rep)
        else:
            _render_paper(rep)
        return
    ws = _ui.state(ctx).workspace
    overrides = _o.given(BenchConfig, locals(), models=models or None, sizes=_split(size), batches=_split(batch),
                         backends=_split(backend), devices=_split(device), num_classes=classes)
    cfg = build_config(BenchConfig, "bench", overrides, workspace=ws, config_file=config)
    from fercli.bench import run_bench

    report = run_bench(cfg, track=_ui.rich_track).to_dict()
    if json_out:
        _ui.print_json(report)
        return
    _render(report)


def _table(title: str, columns: tuple[str, ...], left: tuple[str, ...]) -> Table:
    t = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, padding=0)  # the box draws a 1-space divider
    for col in columns:
        t.add_column(col, justify="left" if col in left else "right", no_wrap=True)
    return t


def _x(value: Optional[float]) -> str:
    return "-" if value is None else _f(value) + "x"


def _render(rep: dict[str, Any]) -> None:
    cost = _table("cost at batch 1", ("model", "size", "params M", "MACs M", "FLOPs M", "flop_counter"), ("model",))
    for r in rep["cost"]:
        check = "[green]agrees[/]" if r["counters_agree"] else f"[red]{r['flop_counter_macs'] / 1e6:.2f}M MACs[/]"
        cost.add_row(r["model"], str(r["input_size"]), f"{r['params'] / 1e6:.4f}", f"{r['macs'] / 1e6:.2f}",
                     f"{r['flops'] / 1e6:.2f}", check)
    _ui.out.print(cost)
    _ui.out.print(f"MACs: {rep['counter']}.", highlight=False)
    if rep["latency"]:
        env = rep["environment"]
        devices = sorted({r["device"] for r in rep["latency"]})
        lat = _table(f"latency in ms: {rep['threads']} threads, {', '.join(devices)}; torch {env['torch']}, "
                     f"onnxruntime {env['onnxruntime']}" + (f", openvino {env['openvino']}" if env.get('openvino') else ""),
                     ("model", "backend", "MB", "size", "batch", "median", "p90", "img/s", "reps", "vs 1st", "vs eager",
                      "vs ort"),
                     ("model", "backend"))
        for r in rep["latency"]:
            backend = r["backend"] if r["device"] == "cpu" else f"{r['backend']}/{r['device']}"
            mb = "-" if r.get("bytes") is None else f"{r['bytes'] / 1e6:.2f}"
            lat.add_row(r["model"], backend, mb, str(r["input_size"]), str(r["batch"]), _f(r["median_ms"]), _f(r["p90_ms"]),
                        _f(r["images_per_s"], 0), str(r["reps"]), _x(r["vs_first"]), _x(r["eager_speedup"]),
                        _x(r.get("ort_speedup")))
        _ui.out.print(lat)
        _ui.out.print("All models and backends of one batch size were timed interleaved. MB: the ONNX file (float32 "
                      "weights for eager and torchscript); vs 1st: median / the first model's on the same backend, "
                      "input size and batch (a checkpoint at its own input size is its own 1st); "
                      "vs eager: the eager median / this one; vs ort: the float32 ONNX Runtime median / this one.",
                      highlight=False)
    for s in rep["skipped"]:
        _ui.out.print(f"[yellow]skipped {s}[/]")


def _render_paper(rep: dict[str, Any]) -> None:
    tol = rep["tolerances"]
    t = _table(f"Table 4 at {rep['input_size']}x{rep['input_size']}, {rep['num_classes']} classes: ours vs the paper",
               ("model", "params M", "paper", "diff", "MACs M", "FLOPs M", "paper", "diff %", ""), ("model", ""))
    for r in rep["rows"]:
        t.add_row(r["model"], f"{r['params_m']:.4f}", f"{r['paper_params_m']:.2f}",
                  f"{r['d_params_m']:+.4f}", f"{r['macs_m']:.2f}", f"{r['flops_m']:.2f}", f"{r['paper_flops_m']:.2f}",
                  f"{r['d_flops_pct']:+.2f}", "[green]ok[/]" if r["ok"] else "[red]outside[/]")
    _ui.out.print(t)
    _ui.out.print("rows: " + "; ".join(f"{r['model']} = {r['variant']}" for r in rep["rows"]), highlight=False)
    inc = _table("increments", ("step", "params M", "paper", "FLOPs M", "paper", "diff", ""), ("step", ""))
    for r in rep["increments"]:
        paper_f = r["paper_d_flops_m"]
        inc.add_row(r["step"], f"{r['d_params_m']:+.4f}", "-" if r["paper_d_params_m"] is None else f"+{r['paper_d_params_m']:.2f}",
                    f"{r['d_flops_m']:+.3f}", "-" if paper_f is None else f"+{paper_f:.2f}",
                    "-" if paper_f is None else f"{r['d_flops_m'] - paper_f:+.3f}",
                    "" if "ok" not in r else ("[green]ok[/]" if r["ok"] else "[red]outside[/]"))
    _ui.out.print(inc)
    _ui.out.print(f"MACs: {rep['counter']}.", highlight=False)
    _ui.out.print(f"Tolerances: params within {tol['params_m']}M and FLOPs within {tol['flops_pct']}% of each row; "
                  f"the PDWRes branch within {tol['pdwres_branch_flops_m']}M FLOPs of the paper's +3.09M "
                  "(the row also widens Conv1 24 -> 29, which the paper's increment does not show).", highlight=False)
    _ui.out.print("every figure within tolerance" if rep["all_ok"] else "[red]some figures are outside the tolerance[/]")
