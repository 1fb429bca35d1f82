"""Issue 3 acceptance figures: Table 4 counts and the batch-1 CPU latency ratios, measured in one run.

    .venv/bin/python benchmarks/bench_models.py                 # torch's default thread count
    .venv/bin/python benchmarks/bench_models.py --threads 1 --reps 300 --json out.json

Checks (printed, exit status 1 if one fails):
  * params within 0.04M and FLOPs within 2% of Table 4; the PDWRes branch within 1M FLOPs of +3.09M;
  * batch-1 latency of lfer <= 1.15 x shufflenet_v2 on each backend (same run, interleaved);
  * ONNX Runtime >= 2 x faster than eager for lfer at batch 1.
Latency is noisy on shared machines: the ratios come from medians of interleaved runs, and the
script can repeat the whole measurement (--rounds) and report every round.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from fercli.bench import BenchConfig, paper_table, run_bench

LATENCY_RATIO_MAX, ORT_SPEEDUP_MIN = 1.15, 2.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads (0: torch's default)")
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--max-seconds", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=1, help="repeat the latency measurement this many times")
    ap.add_argument("--backends", default="eager,torchscript,onnxruntime")
    ap.add_argument("--json", help="also write every figure to this file")
    args = ap.parse_args()

    ok = True
    paper = paper_table()
    for r in paper["rows"]:
        print(f"{r['model']:14s} params {r['params_m']:.4f}M (paper {r['paper_params_m']:.2f}, {r['d_params_m']:+.4f}) "
              f"FLOPs {r['flops_m']:.2f}M (paper {r['paper_flops_m']:.2f}, {r['d_flops_pct']:+.2f}%) "
              f"{'ok' if r['ok'] else 'FAIL'}")
    branch = paper["increments"][-1]
    print(f"PDWRes branch +{branch['d_flops_m']:.3f}M FLOPs (paper +3.09M) {'ok' if branch['ok'] else 'FAIL'}")
    ok &= paper["all_ok"]

    rounds = []
    for i in range(args.rounds):
        cfg = BenchConfig(models=("shufflenet_v2", "lfer_head", "lfer"), batches=(1,),
                          backends=tuple(args.backends.split(",")), devices=("cpu",), reps=args.reps,
                          min_reps=20, max_seconds=args.max_seconds, threads=args.threads)
        rep = run_bench(cfg).to_dict()
        rounds.append(rep)
        rows = {(r["model"], r["backend"]): r for r in rep["latency"]}
        print(f"round {i + 1}: {rep['threads']} threads, torch {torch.__version__}")
        for (model, backend), r in rows.items():
            print(f"  {model:14s} {backend:12s} median {r['median_ms']:7.2f} ms  p90 {r['p90_ms']:7.2f} ms  "
                  f"{r['images_per_s']:7.1f} img/s  vs shufflenet_v2 {r['vs_first']:.3f}x  "
                  f"eager/this {r['eager_speedup']:.2f}x  ({r['reps']} reps)")
        for backend in cfg.backends:
            ratio = rows[("lfer", backend)]["vs_first"]
            good = ratio <= LATENCY_RATIO_MAX
            ok &= good
            print(f"  lfer / shufflenet_v2 on {backend}: {ratio:.3f} (<= {LATENCY_RATIO_MAX}) {'ok' if good else 'FAIL'}")
        if "onnxruntime" in cfg.backends:
            speedup = rows[("lfer", "onnxruntime")]["eager_speedup"]
            good = speedup >= ORT_SPEEDUP_MIN
            ok &= good
            print(f"  lfer eager / onnxruntime: {speedup:.2f}x (>= {ORT_SPEEDUP_MIN}) {'ok' if good else 'FAIL'}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"paper": paper, "latency_rounds": rounds}, fh, indent=2)
    print("all checks passed" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
