"""`fer bench` in tiny configurations: counts, every backend, JSON, the paper table, errors. No timing assertions."""

from __future__ import annotations

import json

import pytest
import torch

from fercli.bench import BenchConfig, run_bench, time_interleaved
from fercli.checkpoint import make_checkpoint, save_checkpoint
from fercli.classes import CLASSES_8
from fercli.cli import app
from fercli.models import create_model, model_args

pytestmark = pytest.mark.usefixtures("one_thread")


TINY = ["--size", "32", "--batch", "1", "--reps", "2", "--min-reps", "1", "--warmup", "1", "--threads", "1"]


def test_bench_every_backend_json(runner, workspace):
    res = runner.invoke(app, ["bench", "shufflenet_v2", "lfer", *TINY, "--backend", "eager,torchscript,onnxruntime", "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["threads"] == 1 and "thop" in rep["counter"]
    assert [(c["model"], c["input_size"]) for c in rep["cost"]] == [("shufflenet_v2", 32), ("lfer", 32)]
    assert all(c["counters_agree"] and c["flops"] == 2 * c["macs"] for c in rep["cost"])
    rows = {(r["model"], r["backend"]): r for r in rep["latency"]}
    assert set(rows) == {(m, b) for m in ("shufflenet_v2", "lfer") for b in ("eager", "torchscript", "onnxruntime")}
    for r in rows.values():
        assert r["device"] == "cpu" and r["batch"] == 1 and r["reps"] >= 1 and r["threads"] == 1
        assert 0 < r["median_ms"] <= r["p90_ms"] and r["images_per_s"] > 0
    assert rows[("shufflenet_v2", "onnxruntime")]["vs_first"] == 1.0
    assert rows[("lfer", "eager")]["eager_speedup"] == 1.0
    assert rows[("lfer", "onnxruntime")]["vs_first"] == pytest.approx(
        rows[("lfer", "onnxruntime")]["median_ms"] / rows[("shufflenet_v2", "onnxruntime")]["median_ms"])
    assert torch.get_num_threads() != 0  # the thread setting is restored (no assertion on its value)


def test_bench_table_and_a_checkpoint(runner, workspace):
    model = create_model("lfer_head", 8)
    save_checkpoint(workspace / "s.pt", make_checkpoint(model, "lfer_head", model_args("lfer_head", 8), CLASSES_8, 48))
    res = runner.invoke(app, ["bench", "s.pt", "--batch", "1,2", "--backend", "eager", "--reps", "2", "--min-reps", "1",
                              "--warmup", "0", "--threads", "1"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "s.pt (lfer_head)" in res.stdout and "agrees" in res.stdout and "latency in ms" in res.stdout
    rep = run_bench(BenchConfig(models=("s.pt",), latency=False))
    assert rep.cost[0]["input_size"] == 48 and not rep.latency  # the checkpoint's own size


def test_bench_paper_json(runner):
    res = runner.invoke(app, ["bench", "--paper", "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["all_ok"] and [r["model"] for r in rep["rows"]] == ["shufflenet_v2", "lfer_head", "lfer"]
    res = runner.invoke(app, ["bench", "--paper"], env={"COLUMNS": "120"})
    assert "291.48" in res.stdout and "PDWRes branch" in res.stdout and "every figure within tolerance" in res.stdout


@pytest.mark.parametrize("args, message", [
    (["bench", "lferr", "--no-latency"], "neither a registered model"),
    (["bench", "lfer", "--size", "40", "--no-latency"], "--size must be a multiple of 16"),
    (["bench", "lfer", "--backend", "tensorrt"], "--backend must be one of eager"),
    (["bench", "lfer", "--batch", "0"], "--batch must be >= 1, got 0"),
    (["bench", "missing.pt"], "'missing.pt' is neither a registered model"),
    (["bench", "lfer", "--paper"], "--paper compares the fixed Table 4 setting"),
])
def test_bench_errors(runner, workspace, args, message):
    res = runner.invoke(app, args)
    assert res.exit_code == 1 and message in res.stderr, res.output


def test_bench_cuda_without_a_gpu_is_refused(runner, workspace):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    res = runner.invoke(app, ["bench", "lfer", *TINY, "--device", "cuda"])
    assert res.exit_code == 1 and "no CUDA device" in res.stderr


def test_time_interleaved_rotates_and_respects_the_budget():
    calls = []
    runners = {k: (lambda k=k: calls.append(k)) for k in "abc"}
    times = time_interleaved(runners, warmup=1, reps=4, min_reps=2, max_seconds=60)
    assert calls[:3] == ["a", "b", "c"]  # warm-up
    assert calls[3:] == list("abc" "bca" "cab" "abc")  # each round starts one later
    assert all(len(v) == 4 for v in times.values())
    times = time_interleaved(runners, warmup=0, reps=100, min_reps=2, max_seconds=0)
    assert all(len(v) == 2 for v in times.values())  # budget spent: stop at min_reps
