"""Side by side: a model as a float32 checkpoint, float32 ONNX, fp16 ONNX, dynamic int8 and static int8.

For each: accuracy and mean per-class accuracy on a split (FERPlus valid: 3,191 labelled images),
file size, and batch-1 latency (and batch 32), all latencies timed interleaved in the same loop
(fercli.bench.time_interleaved) in several rounds, reported as medians with the ratio to float32 ONNX
Runtime per round. Also: static int8 variants that were tried (float32 first conv and head, float32
depthwise convolutions, ONNX Runtime's default S8S8, QOperator format, per-tensor weights),
OpenVINO beside ONNX Runtime on the same files when openvino is installed, and ONNX Runtime's
per-node profile of float32 and int8, which says where the time goes.

    .venv/bin/python benchmarks/quantize_report.py fercli/weights/ferplus8_lfer_ldl_fp16.pt \\
        --data /tmp/ws/data/manifest.parquet --split valid --threads 2

The exports are made with `fer export` (run_export), calibrated on a seeded sample of the
manifest's train split; accuracy with `fer eval` (evaluate) on --split. Writes --out (JSON, default
benchmarks/results/quantize.json) and the markdown table beside it (.md). Rerun it for another model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fercli.bench import environment, time_interleaved  # noqa: E402
from fercli.checkpoint import model_from_checkpoint  # noqa: E402
from fercli.evaluation import EvalConfig, run_eval  # noqa: E402
from fercli.export import ExportConfig, onnx_with_meta, read_export_meta, run_export, runtime_session  # noqa: E402
from fercli.quantize import load_calibration, profile_ops, quantize_bytes  # noqa: E402
from fercli.workspace import Workspace  # noqa: E402

TARGETS = {"int8": {"max_drop_points": 0.5, "max_latency_ratio": 0.7}, "fp16": {"max_drop_points": 0.1}}
MAIN = ("checkpoint", "onnx-fp32", "onnx-fp16", "onnx-int8-dynamic", "onnx-int8")


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _time(runners: dict[str, Any], batch: int, rounds: int, reps: int, ref: str = "onnx-fp32") -> dict[str, Any]:
    """``rounds`` interleaved rounds; per model: median of round medians, and the median ratio to ``ref``."""
    per_round: list[dict[str, float]] = []
    for r in range(rounds):
        times = time_interleaved(runners, warmup=10 if batch == 1 else 2, reps=reps, min_reps=reps, max_seconds=1e9)
        per_round.append({k: float(np.median(v)) * 1000 for k, v in times.items()})
        _log(f"  batch {batch} round {r + 1}: " + ", ".join(f"{k} {v:.3f}" for k, v in per_round[-1].items()))
    out = {}
    for k in runners:
        meds = [p[k] for p in per_round]
        ratios = [p[k] / p[ref] for p in per_round]
        out[k] = {"median_ms": float(np.median(meds)), "round_medians_ms": meds, "images_per_s": batch / np.median(meds) * 1000,
                  "ratio_to_onnx_fp32": float(np.median(ratios)), "round_ratios": ratios}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path, help="fercli checkpoint (.pt)")
    ap.add_argument("--data", type=Path, required=True, help="manifest: calibration from its train split, accuracy on --split")
    ap.add_argument("--split", default="valid")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calib-size", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=300, help="timed passes per model and round at batch 1 (batch 32: a tenth)")
    ap.add_argument("--work", type=Path, default=None, help="scratch workspace [default: a temporary folder]")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "quantize.json")
    ap.add_argument("--no-variants", action="store_true", help="skip the int8 variants that were tried")
    ap.add_argument("--no-eval", action="store_true", help="skip accuracy (latency and size only)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    work = args.work or Path(tempfile.mkdtemp(prefix="fer-quant-report-"))
    work.mkdir(parents=True, exist_ok=True)
    ws = Workspace(work)
    exp = work / "export"
    t0 = time.time()
    files: dict[str, Path] = {"checkpoint": args.model}
    export_meta: dict[str, Any] = {}
    _log(f"exports into {exp}")
    res, _ = run_export(ExportConfig(out=exp / "model.onnx"), ws, args.model)
    files["onnx-fp32"] = res.path
    for mode in ("fp16", "int8-dynamic", "int8"):
        r, _ = run_export(ExportConfig(out=exp / f"model_{mode.replace('-', '_')}.onnx", quantize=mode, calib=args.data,
                                       calib_size=args.calib_size), ws, args.model)
        files[f"onnx-{mode}"] = r.path
        export_meta[f"onnx-{mode}"] = {"quantization": r.meta["quantization"], "parity": r.meta["quantized_parity"]}
        _log(f"  {mode}: agreement {r.meta['quantized_parity']['top1_agreement']:.4f}")

    # int8 variants that were tried (same calibration images)
    meta = read_export_meta(files["onnx-fp32"])
    size = int(meta["input_size"])
    variants: dict[str, dict[str, Any]] = {}
    if not args.no_variants:
        calib = load_calibration(args.data, meta, args.calib_size, 0)
        fp32_bytes = files["onnx-fp32"].read_bytes()
        import onnx

        tried = {
            "int8 float32 first conv + head": dict(exclude=("first-conv", "head")),
            "int8 float32 depthwise convs": dict(exclude=("depthwise",)),
            "int8 S8S8 (ONNX Runtime's default)": dict(activations="int8"),
            "int8 QOperator format": dict(quant_format="QOperator"),
            "int8 per-tensor weights": dict(per_channel=False),
        }
        for name, kw in tried.items():
            data, info = quantize_bytes(fp32_bytes, "int8", calib.x, **kw)
            proto = onnx.load_from_string(data)
            del proto.metadata_props[:]
            path = exp / ("tried_" + name.replace(" ", "_").replace("+", "").replace("(", "").replace(")", "")
                          .replace("'", "").replace("__", "_") + ".onnx")
            path.write_bytes(onnx_with_meta(None, {**meta, "quantization": info}, proto=proto))
            path.with_name(path.name + ".json").write_text(json.dumps({**meta, "quantization": info}))  # what fer eval reads
            files[name] = path
            variants[name] = {"settings": {k: list(v) if isinstance(v, tuple) else v for k, v in kw.items()}}

    # accuracy
    acc: dict[str, dict[str, Any]] = {}
    if not args.no_eval:
        for name, path in files.items():
            t = time.time()
            rep = run_eval(EvalConfig(model=path, manifest=args.data, split=args.split, out=work / "eval" / name.replace(" ", "_"),
                                      workers=0, threads=args.threads, device="cpu"), ws).report
            acc[name] = {"accuracy": rep["accuracy"], "mean_class_accuracy": rep["mean_class_accuracy"], "images": rep["images"],
                         "tta": rep["tta"], "temperature": rep["temperature"]}
            _log(f"  eval {name}: {rep['accuracy']:.4f} / {rep['mean_class_accuracy']:.4f} ({time.time() - t:.0f} s)")

    # latency: everything interleaved; the checkpoint runs in eager PyTorch
    model, _ = model_from_checkpoint(args.model)
    model.eval()

    def runners(batch: int, names: list[str], openvino: bool = False) -> dict[str, Any]:
        x = torch.randn(batch, 3, size, size)
        out: dict[str, Any] = {}
        for name in names:
            if name == "checkpoint":
                def run(x=x) -> Any:
                    with torch.inference_mode():
                        return model(x)
                out[name] = run
            else:
                s = runtime_session(files[name], threads=args.threads)
                feed = {s.get_inputs()[0].name: x.numpy()}
                out[name] = (lambda s=s, feed=feed: s.run(None, feed))
        if openvino:
            for name in ("onnx-fp32", "onnx-fp16", "onnx-int8"):
                s = runtime_session(files[name], "openvino", threads=args.threads)
                feed = {s.get_inputs()[0].name: x.numpy()}
                out["openvino " + name] = (lambda s=s, feed=feed: s.run(None, feed))
        return out

    try:
        import openvino  # noqa: F401
        has_ov = True
    except ImportError:
        has_ov = False
    # The ONNX files are timed together; the checkpoint (eager PyTorch) in a loop of its own with the
    # float32 ONNX file: PyTorch's OpenMP threads keep spinning after each call and slowed whichever
    # model ran next (by up to 3x on a loaded 2-core machine).
    onnx_names = [n for n in MAIN if n != "checkpoint"]
    _log("timing (batch 1)")
    lat1 = _time(runners(1, onnx_names, openvino=has_ov), 1, args.rounds, args.reps)
    lat1.update({k: v for k, v in _time(runners(1, ["checkpoint", "onnx-fp32"]), 1, args.rounds, args.reps // 3).items()
                 if k == "checkpoint"})
    _log("timing (batch 32)")
    lat32 = _time(runners(32, onnx_names, openvino=has_ov), 32, args.rounds, max(args.reps // 10, 10))
    lat32.update({k: v for k, v in _time(runners(32, ["checkpoint", "onnx-fp32"]), 32, args.rounds,
                                         max(args.reps // 30, 5)).items() if k == "checkpoint"})
    tried_lat = {}
    if variants:
        _log("timing the int8 variants (batch 1)")
        tried_lat = _time(runners(1, ["onnx-fp32", "onnx-int8", *variants]), 1, args.rounds, args.reps)
    _log("profiling float32 and int8")
    profile = {name: profile_ops(files[name], size, batch=1, runs=200, threads=args.threads) for name in ("onnx-fp32", "onnx-int8")}

    ref = acc.get("onnx-fp32", {}).get("accuracy")
    rows = []
    for name in MAIN:
        a = acc.get(name, {})
        rows.append({"model": name, "file": str(files[name]), "bytes": files[name].stat().st_size,
                     "accuracy": a.get("accuracy"), "mean_class_accuracy": a.get("mean_class_accuracy"),
                     "drop_points": None if ref is None or not a else (ref - a["accuracy"]) * 100,
                     "batch1_ms": lat1[name]["median_ms"], "batch1_ratio": lat1[name]["ratio_to_onnx_fp32"],
                     "batch32_ms": lat32[name]["median_ms"], "batch32_images_per_s": lat32[name]["images_per_s"],
                     "batch32_ratio": lat32[name]["ratio_to_onnx_fp32"], **export_meta.get(name, {})})
    for name in variants:
        a = acc.get(name, {})
        variants[name].update(bytes=files[name].stat().st_size, accuracy=a.get("accuracy"),
                              mean_class_accuracy=a.get("mean_class_accuracy"),
                              drop_points=None if ref is None or not a else (ref - a["accuracy"]) * 100,
                              batch1_ratio=tried_lat[name]["ratio_to_onnx_fp32"], batch1_ms=tried_lat[name]["median_ms"])
    by = {r["model"]: r for r in rows}
    checks = {
        "int8_drop_points": by["onnx-int8"]["drop_points"], "int8_latency_ratio": by["onnx-int8"]["batch1_ratio"],
        "fp16_drop_points": by["onnx-fp16"]["drop_points"],
    }
    checks["int8_accuracy_ok"] = None if checks["int8_drop_points"] is None else checks["int8_drop_points"] <= 0.5
    checks["int8_latency_ok"] = checks["int8_latency_ratio"] <= 0.7
    checks["fp16_accuracy_ok"] = None if checks["fp16_drop_points"] is None else checks["fp16_drop_points"] <= 0.1
    conv_ops = {"Conv", "FusedConv", "QLinearConv", "ConvInteger", "NhwcFusedConv"}
    fp32_conv_share = sum(o["share"] for o in profile["onnx-fp32"]["ops"] if o["op"] in conv_ops)
    result = {
        "model": str(args.model), "manifest": str(args.data), "split": args.split, "input_size": size,
        "threads": args.threads, "rounds": args.rounds, "reps": args.reps, "calib_size": args.calib_size,
        "loadavg_at_end": os.getloadavg(), "cpu": platform.processor() or platform.machine(), "environment": environment(),
        "targets": TARGETS, "checks": checks, "rows": rows, "tried": variants,
        "latency": {"batch1": lat1, "batch32": lat32, "tried_batch1": tried_lat}, "profile": profile,
        "fp32_conv_share": fp32_conv_share,
        "fp32_best_case_if_convs_were_free": 1 - fp32_conv_share,
        "seconds": time.time() - t0,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    md = markdown(result)
    args.out.with_suffix(".md").write_text(md)
    print(md)
    _log(f"wrote {args.out} and {args.out.with_suffix('.md')} ({time.time() - t0:.0f} s)")


def _d(v: float | None) -> str:
    return "-" if v is None else f"{v:+.2f}"


def _p(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v * 100:.{digits}f}"


def markdown(r: dict[str, Any]) -> str:
    lines = [f"Model `{Path(r['model']).name}` at {r['input_size']}x{r['input_size']}, {r['split']} of `{Path(r['manifest']).name}`; "
             f"{r['threads']} threads; latency: median of {r['rounds']} interleaved rounds ({r['reps']} passes per model "
             f"per round at batch 1, a tenth at batch 32), ratio = median / float32 ONNX Runtime's in the same round "
             f"(median over rounds); the ONNX files in one loop, the checkpoint (eager PyTorch) in its own loop with "
             f"the float32 ONNX file; "
             f"load average at the end {r['loadavg_at_end'][0]:.1f}.", "",
             "| model | accuracy % | mean per-class % | drop (points) | size MB | batch 1 ms | vs fp32 ORT | batch 32 img/s | vs fp32 ORT (b32) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for x in r["rows"]:
        lines.append(f"| {x['model']} | {_p(x['accuracy'])} | {_p(x['mean_class_accuracy'])} | "
                     f"{_d(x['drop_points'])} | {x['bytes'] / 1e6:.2f} | "
                     f"{x['batch1_ms']:.3f} | {x['batch1_ratio']:.2f}x | {x['batch32_images_per_s']:.0f} | {x['batch32_ratio']:.2f}x |")
    c = r["checks"]
    lines += ["", f"Targets: static int8 drop {_d(c['int8_drop_points'])} points (<= 0.5: {c['int8_accuracy_ok']}), "
                  f"latency {c['int8_latency_ratio']:.2f}x fp32 ORT (<= 0.7: {c['int8_latency_ok']}); "
                  f"fp16 drop {_d(c['fp16_drop_points'])} points (<= 0.1: {c['fp16_accuracy_ok']})."]
    ov = {k: v for k, v in r["latency"]["batch1"].items() if k.startswith("openvino")}
    if ov:
        lines += ["", "OpenVINO on the same files (same rounds, ratio to ONNX Runtime float32): "
                  + "; ".join(f"{k}: batch 1 {v['ratio_to_onnx_fp32']:.2f}x, batch 32 "
                              f"{r['latency']['batch32'][k]['ratio_to_onnx_fp32']:.2f}x" for k, v in ov.items()) + "."]
    if r["tried"]:
        lines += ["", "| static int8 variant tried | accuracy % | drop (points) | batch 1 vs fp32 ORT |", "|---|---:|---:|---:|"]
        lines.append(f"| default (QDQ, U8S8, per-channel) | {_p(r['rows'][-1]['accuracy'])} | "
                     f"{_d(r['rows'][-1]['drop_points'])} | "
                     f"{r['latency']['tried_batch1']['onnx-int8']['ratio_to_onnx_fp32']:.2f}x |")
        for name, v in r["tried"].items():
            lines.append(f"| {name} | {_p(v['accuracy'])} | {_d(v['drop_points'])} | "
                         f"{v['batch1_ratio']:.2f}x |")
    for name, prof in r["profile"].items():
        top = ", ".join(f"{o['op']} {o['share'] * 100:.0f}% ({o['nodes']})" for o in prof["ops"][:8])
        lines += ["", f"ONNX Runtime profile, {name}, batch 1 ({prof['nodes_per_run']} nodes per run; share of kernel time, "
                      f"node count): {top}."]
    lines += ["", f"Convolutions are {r['fp32_conv_share'] * 100:.0f}% of the float32 kernel time: even free convolutions "
                  f"would leave {r['fp32_best_case_if_convs_were_free']:.2f}x of it."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
