#!/usr/bin/env bash
# GPU smoke check: runs each CUDA path of fercli once, on tiny inputs, in a few minutes on one GPU.
#
#   benchmarks/gpu_check.sh            # prints one PASS / FAIL / SKIP line per path
#
# Paths: an AMP training step and a channels-last training step (`fer train --device cuda` on a tiny
# synthetic dataset made by fer demo's generator), nccl DistributedDataParallel through torchrun with 1
# process (a DDP step on nccl, plus `fer train` launched by torchrun) and with 2 when there are 2 GPUs
# (`fer train` itself in DDP), eager `fer predict` on CUDA, ONNX Runtime's CUDA execution provider in
# `fer bench --backend onnxruntime` and `fer predict --model model.onnx` (SKIP without onnxruntime-gpu),
# and `fer align --device cuda` with the RetinaFace MobileNet weights (SKIP when they are not found:
# $FER_MOBILENET_WEIGHTS, $FER_SHARED/weights/retinaface/, ../shared/weights/retinaface/ or torch's hub
# cache), whose detections must match the CPU's (within one face at the score threshold).
#
# Exit code: 0 if nothing failed (SKIPs included), 1 otherwise. Without a CUDA device it prints a single
# SKIP line and exits 0. Each path has STEP_TIMEOUT seconds (default 150); logs are kept in the work
# folder printed at the end when anything failed (FER_GPU_CHECK_KEEP=1 keeps them always).
# Environment: PYTHON (default .venv/bin/python, else python3), FER_SHARED, FER_MOBILENET_WEIGHTS,
# FER_GPU_CHECK_DEVICE=cpu (development only: runs the same steps on the CPU, GPU-only paths skipped).
set -u
cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)

PY=${PYTHON:-}
if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
DEV=${FER_GPU_CHECK_DEVICE:-cuda}
STEP_TIMEOUT=${STEP_TIMEOUT:-150}

NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)" 2>/dev/null | tail -n 1)
case "$NGPU" in ''|*[!0-9]*) NGPU=0 ;; esac  # no torch, or noise: no GPU
if [ "$DEV" = cuda ] && [ "$NGPU" -lt 1 ]; then
    echo "SKIP gpu_check: no CUDA device here (torch.cuda.is_available() is False); nothing to check"
    exit 0
fi
if [ "$DEV" = cuda ]; then
    echo "gpu_check: $NGPU CUDA device(s): $("$PY" -c "import torch; print(', '.join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())))")"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/fer-gpu-check.XXXXXX")
WS="$WORK/ws"
export PY DEV WORK WS ROOT NGPU
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export FER_BUNDLED_MODEL=none  # the checks use the model trained here
FAILS=0
T_START=$SECONDS

fer() { "$PY" -m fercli -w "$WS" "$@"; }
export -f fer

# check NAME FUNCTION: run FUNCTION (exported) under a timeout, print PASS or FAIL with its log's tail.
check() {
    local name=$1 fn=$2 t0=$SECONDS rc
    timeout "$STEP_TIMEOUT" bash -c "set -eo pipefail; $fn" >"$WORK/$name.log" 2>&1
    rc=$?
    if [ $rc -eq 0 ]; then
        echo "PASS $name ($((SECONDS - t0))s)"
    else
        [ $rc -eq 124 ] && rc="timeout after ${STEP_TIMEOUT}s" || rc="exit $rc"
        echo "FAIL $name ($rc, $((SECONDS - t0))s; log: $WORK/$name.log)"
        tail -n 6 "$WORK/$name.log" | sed 's/^/    /'
        FAILS=$((FAILS + 1))
    fi
}
skip() { echo "SKIP $1: $2"; }

TRAIN_ARGS="--epochs 1 --input-size 48 --batch-size 8 --workers 0 --targets none --no-calibrate --device $DEV"
export TRAIN_ARGS

# ---- the tiny dataset: fer demo's synthetic faces, aligned by their known landmarks (CPU) ----------
setup() {
    "$PY" -c "from fercli.synthetic import make_sample; make_sample('$WORK/raw', {'train': 4, 'valid': 2}, size=96)"
    fer align "$WORK/raw" "$WS/aligned" --detector landmarks --size 64 --device cpu --json >/dev/null
    test -f "$WS/aligned/manifest.parquet"
}
export -f setup
check setup setup
if [ $FAILS -gt 0 ]; then
    echo "gpu_check: the tiny dataset could not be made; nothing else was run (log: $WORK/setup.log)"
    exit 1
fi

# ---- training: AMP, channels-last -----------------------------------------------------------------
# A run whose loss is not finite stops with an error, so exit 0 + best.pt means the steps were sound.
train_with() {  # OUT AMP CHANNELS_LAST
    printf '[train]\namp = %s\nchannels_last = %s\n' "$2" "$3" >"$WORK/$1.toml"
    fer train "$WS/aligned/manifest.parquet" $TRAIN_ARGS --out "$WS/$1" --config "$WORK/$1.toml" --json >"$WORK/$1.json"
    test -f "$WS/$1/best.pt"
    "$PY" - "$WORK/$1.json" <<'EOF'
import json, math, sys
s = json.load(open(sys.argv[1]))
losses = [r.get("train_loss") for r in s["history"]]
assert losses and all(isinstance(v, float) and math.isfinite(v) for v in losses), losses
print("train losses", losses)
EOF
}
export -f train_with
train_amp() { train_with run_amp true false; }
train_channels_last() { train_with run_cl false true; }
export -f train_amp train_channels_last
check train-amp train_amp
check train-channels-last train_channels_last

# ---- DDP over nccl through torchrun ---------------------------------------------------------------
cat >"$WORK/ddp_probe.py" <<'EOF'
# One DDP training step on nccl with fercli's model, AMP and channels-last, whatever the world size.
import os
import torch
import torch.distributed as dist
from fercli.models import create_model

dist.init_process_group("nccl")
rank, local = dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0"))
torch.cuda.set_device(local)
model = create_model("lfer", 7).cuda().to(memory_format=torch.channels_last)
ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[local])
opt = torch.optim.SGD(ddp.parameters(), lr=0.01, momentum=0.9)
scaler = torch.amp.GradScaler("cuda")
seen = []  # the first convolution's output: float16 under autocast, channels-last in memory
conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
conv.register_forward_hook(lambda mod, i, o: seen.append((o.dtype, o.is_contiguous(memory_format=torch.channels_last))))
x = torch.randn(8, 3, 64, 64, device="cuda").to(memory_format=torch.channels_last)
y = torch.randint(0, 7, (8,), device="cuda")
with torch.autocast("cuda", dtype=torch.float16):
    logits = ddp(x)
    loss = torch.nn.functional.cross_entropy(logits.float(), y)
assert seen and seen[0] == (torch.float16, True), seen
scaler.scale(loss).backward()
scaler.step(opt)
scaler.update()
t = torch.ones(1, device="cuda")
dist.all_reduce(t)
assert t.item() == dist.get_world_size(), t.item()
assert all(torch.isfinite(p).all() for p in model.parameters())
dist.barrier()
dist.destroy_process_group()
print(f"rank {rank}: nccl DDP step ok, loss {loss.item():.4f}")
EOF
ddp_1() {
    "$PY" -m torch.distributed.run --standalone --nproc_per_node=1 "$WORK/ddp_probe.py"
    "$PY" -m torch.distributed.run --standalone --nproc_per_node=1 -m fercli -w "$WS" train "$WS/aligned/manifest.parquet" $TRAIN_ARGS --out "$WS/run_ddp1"
    test -f "$WS/run_ddp1/best.pt"
}
ddp_2() {
    "$PY" -m torch.distributed.run --standalone --nproc_per_node=2 "$WORK/ddp_probe.py"
    "$PY" -m torch.distributed.run --standalone --nproc_per_node=2 -m fercli -w "$WS" train "$WS/aligned/manifest.parquet" $TRAIN_ARGS --out "$WS/run_ddp2"
    test -f "$WS/run_ddp2/best.pt"
}
export -f ddp_1 ddp_2
if [ "$DEV" != cuda ]; then
    skip ddp-nccl-1proc "nccl needs CUDA (FER_GPU_CHECK_DEVICE=$DEV)"
else
    check ddp-nccl-1proc ddp_1
fi
if [ "$DEV" = cuda ] && [ "$NGPU" -ge 2 ]; then
    check ddp-nccl-2proc ddp_2
else
    skip ddp-nccl-2proc "needs 2 GPUs ($NGPU here)"
fi

# ---- inference: eager predict, ONNX Runtime's CUDA provider ---------------------------------------
FACE=$(ls "$WS"/aligned/valid/*/*.png | head -n 1)
MODEL=$(ls "$WS"/run_*/best.pt 2>/dev/null | head -n 1)  # whichever training run above succeeded
export FACE MODEL
predict_eager() {
    test -n "$MODEL" || { echo "no trained model: every training run above failed"; exit 1; }
    fer predict "$FACE" --model "$MODEL" --no-detect --device "$DEV" --json >"$WORK/predict.json"
    "$PY" -c "import json; r = json.load(open('$WORK/predict.json')); assert r[0]['status'] == 'ok', r"
}
ort_provider() {  # the session must really run on the CUDA provider (ORT falls back to CPU quietly)
    "$PY" - <<'EOF'
import torch
from fercli.export import onnx_bytes, ort_session
from fercli.models import create_model
s = ort_session(onnx_bytes(create_model("lfer", 7).eval(), 64), device="cuda")
assert s.get_providers()[0] == "CUDAExecutionProvider", s.get_providers()
print("providers", s.get_providers())
EOF
}
bench_ort() {
    ort_provider
    fer bench lfer --backend onnxruntime --device cuda --size 64 --batch 1 --reps 5 --min-reps 2 --max-seconds 0.2 --warmup 1 --json >"$WORK/bench.json"
    "$PY" - "$WORK/bench.json" <<'EOF'
import json, sys
b = json.load(open(sys.argv[1]))
rows = [r for r in b["latency"] if r["backend"] == "onnxruntime" and r["device"] == "cuda"]
assert rows and all(r["median_ms"] > 0 for r in rows), (b["latency"], b["skipped"])
print("onnxruntime on cuda:", ", ".join(f"batch {r['batch']}: {r['median_ms']:.3f} ms" for r in rows))
EOF
}
predict_ort() {
    ort_provider
    test -n "$MODEL" || { echo "no trained model: every training run above failed"; exit 1; }
    fer export "$MODEL" -o "$WORK/model.onnx"
    fer predict "$FACE" --model "$WORK/model.onnx" --no-detect --device cuda --json >"$WORK/predict_onnx.json"
    "$PY" -c "import json; r = json.load(open('$WORK/predict_onnx.json')); assert r[0]['status'] == 'ok', r"
}
export -f predict_eager ort_provider bench_ort predict_ort
check predict-eager predict_eager
HAS_ORT_CUDA=$("$PY" -c "import onnxruntime as o; print(int('CUDAExecutionProvider' in o.get_available_providers()))" 2>/dev/null)
if [ "$DEV" != cuda ]; then
    skip bench-onnxruntime-cuda "needs CUDA (FER_GPU_CHECK_DEVICE=$DEV)"
    skip predict-onnxruntime-cuda "needs CUDA (FER_GPU_CHECK_DEVICE=$DEV)"
elif [ "${HAS_ORT_CUDA:-0}" = 1 ]; then
    check bench-onnxruntime-cuda bench_ort
    check predict-onnxruntime-cuda predict_ort
else
    skip bench-onnxruntime-cuda "onnxruntime has no CUDAExecutionProvider (pip install onnxruntime-gpu)"
    skip predict-onnxruntime-cuda "onnxruntime has no CUDAExecutionProvider (pip install onnxruntime-gpu)"
fi

# ---- fer align: RetinaFace MobileNet in GPU batches, the same faces as on the CPU -----------------
WEIGHTS=""
for w in "${FER_MOBILENET_WEIGHTS:-}" "${FER_SHARED:-}/weights/retinaface/mobilenet0.25_Final.pth" \
         "$ROOT/../shared/weights/retinaface/mobilenet0.25_Final.pth" "$ROOT/shared/weights/retinaface/mobilenet0.25_Final.pth" \
         "${TORCH_HOME:-$HOME/.cache/torch}/hub/checkpoints/mobilenet0.25_Final.pth"; do
    if [ -n "$w" ] && [ -f "$w" ]; then WEIGHTS=$w; break; fi
done
PHOTOS=""
for d in "${FER_SHARED:-}/faces" "$ROOT/../shared/faces" "$ROOT/shared/faces"; do
    if [ -d "$d" ]; then PHOTOS=$d; break; fi
done
export WEIGHTS PHOTOS
align_gpu() {
    local src=${PHOTOS:-$WORK/raw}
    for run in cpu:cpu "target:$DEV"; do  # --workers 0: the same decoding path on both
        rc=0
        "$PY" -m fercli -w "$WORK/ws_align" align "$src" "$WORK/aligned_${run%%:*}" --detector retinaface-mobilenet --detector-weights "$WEIGHTS" \
            --faces all --batch-size 4 --workers 0 --device "${run#*:}" --json >"$WORK/align_${run%%:*}.json" || rc=$?
        [ $rc -le 1 ] || exit $rc  # 1: no face at all (possible on the synthetic faces); judged below
    done
    "$PY" - "$WORK/align_cpu.json" "$WORK/align_target.json" <<'EOF'
import json, sys
cpu, gpu = (json.load(open(p)) for p in sys.argv[1:])
assert gpu["processed"] > 0 and "error" not in gpu["statuses"], gpu
# cuDNN and CPU convolutions differ in the last bits: allow one face flipping at the score threshold
assert abs(gpu["faces"] - cpu["faces"]) <= 1, f"faces: cpu {cpu['faces']}, gpu {gpu['faces']}"
print(f"{gpu['processed']} images; faces: cpu {cpu['faces']}, gpu {gpu['faces']}; {gpu['images_per_second']} images/s")
EOF
}
export -f align_gpu
if [ -z "$WEIGHTS" ]; then
    skip align-cuda "RetinaFace MobileNet weights not found (set FER_MOBILENET_WEIGHTS or FER_SHARED)"
else
    check align-cuda align_gpu
fi

echo "gpu_check: $FAILS failed, $((SECONDS - T_START))s"
if [ $FAILS -eq 0 ] && [ -z "${FER_GPU_CHECK_KEEP:-}" ]; then
    rm -rf "$WORK"
else
    echo "gpu_check: logs in $WORK"
fi
[ $FAILS -eq 0 ]
