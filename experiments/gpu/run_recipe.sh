#!/usr/bin/env bash
# experiments/recipe.py on a lent GPU machine (the device tool), in one call:
#   bash experiments/gpu/run_recipe.sh SECONDS [recipe.py options...]
# The working tree travels with .gpu/ carried (experiments/gpu/pack.py pack ... .gpu). Runs still
# training after SECONDS are stopped; what finished comes back in $OUT: result JSONs and logs
# (results.tgz, refreshed every minute), and the bundled-model candidates' best.pt.
set -u
BUDGET=${1:?seconds}; shift
OUTDIR=${OUT:-/tmp/out}; mkdir -p "$OUTDIR"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
export FER_SHARED=/tmp/shared FER_EXP_WORKSPACE=/tmp/ws FER_EXP_RESULTS=/tmp/results
mkdir -p "$FER_EXP_RESULTS"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUTDIR/gpu.txt" 2>&1
python3 -c "import torch, torchvision; print(torch.__version__, torchvision.__version__, torch.cuda.is_available())" >> "$OUTDIR/gpu.txt" 2>&1
python3 experiments/gpu/pack.py unpack .gpu /tmp/shared/datasets/ferplus || exit 1
package() {
  local runs=/tmp/ws/runs/recipe
  tar czf "$OUTDIR/results.tgz.tmp" -C / tmp/results tmp/ws/logs \
      $(cd / && ls -d tmp/ws/runs/recipe/*/metrics.csv tmp/ws/labels/*.parquet 2>/dev/null) 2>/dev/null
  mv -f "$OUTDIR/results.tgz.tmp" "$OUTDIR/results.tgz"
  for cand in lfer_votes lfer_mix; do
    [ -f "$runs/$cand/best.pt" ] && cp -f "$runs/$cand/best.pt" "$OUTDIR/$cand.pt"
  done
  return 0
}
( while sleep 60; do package; done ) & PACKER=$!
timeout -k 5 "$BUDGET" python3 experiments/recipe.py --device cuda "$@" > "$OUTDIR/recipe.log" 2>&1
echo "recipe.py exit $?" >> "$OUTDIR/recipe.log"
pkill -f "fercli" ; sleep 2
kill $PACKER 2>/dev/null
nvidia-smi >> "$OUTDIR/gpu.txt" 2>&1
package
# the teacher's weights, fp16, in pieces under the tool's 16 MB a file (cat teacher_fp16.pt.* > teacher_fp16.pt)
if [ -f /tmp/ws/runs/recipe/teacher-resnet18/best.pt ]; then
  python3 -m fercli -q export /tmp/ws/runs/recipe/teacher-resnet18/best.pt --format checkpoint --half \
      -o /tmp/teacher_fp16.pt && split -b 15M /tmp/teacher_fp16.pt "$OUTDIR/teacher_fp16.pt."
fi
tail -40 "$OUTDIR/recipe.log"
ls -la "$OUTDIR"
