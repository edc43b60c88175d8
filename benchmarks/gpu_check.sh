#!/usr/bin/env bash
# The GPU check, ready for the day a GPU is lent: on one H100/H200 in at most about 10 minutes it runs
#   full         the largest slice of --preset=full that fits (the data-scaling protocol: released teacher,
#                res4 and res8 at 8,000 labeled images and the whole split, CE, KD and DKD, 1 seed)
#   bench_train  one KD run vs the student's compute floor, on the device
#   bench_sweep  the demo's grid on the device, eager, then with --cuda_graphs=True
# and writes everything under OUT: each step's log, its JSON, and steps.jsonl (step, exit code, seconds).
#
#   source .gpu/env.sh && bash benchmarks/gpu_check.sh $OUT cuda full     # on the GPU machine (docs/speed.md)
#   bash benchmarks/gpu_check.sh /tmp/gpu_dry cpu tiny                    # the dry run tests/test_bench.py makes
#
# A step that fails or runs past its limit is recorded and the next one runs: one bad step never costs
# the others. Data: $GPU_DATA where set (the GPU machine's copy), else data/ and the system copy.
set -uo pipefail
OUT=${1:-gpu_check}
DEVICE=${2:-cuda}
SIZE=${3:-full}
PY=${PYTHON:-python3}
DATA=${GPU_DATA:-data}
export FASHION_MNIST_DIR=${FASHION_MNIST_DIR:-${GPU_DATA:+$GPU_DATA/fashion-mnist}}
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
: > "$OUT/steps.jsonl"
if [ "$SIZE" = tiny ]; then  # seconds on a CPU: every step and file, no meaningful number
  FULL=(--sweep_train_samples=[256] --sweep_train_epochs=[1] --max_test_samples=128
        --val_fraction=0.01 --seeds=1 --sweep_blocks=[2] --sweep_methods=[kd] --batch_size=64)
  TRAIN=(--images=256 --test_images=128 --epochs=1 --teacher_width=4)
  SWEEP=(--override=--max_train_samples=256 --override=--max_test_samples=128 --override=--epochs=1
         --override=--sweep_blocks=[2] --override=--seeds=1 --override=--teacher_width=4)
  LIMIT=180
elif [ "$SIZE" = full ]; then  # budget on one H100/H200: full ~5 min, each bench ~1-2 min
  FULL=(--seeds=1 --sweep_blocks=[4,8] --sweep_train_samples=[8000,0] --sweep_train_epochs=[20,10])
  TRAIN=(--images=20000 --test_images=2000 --epochs=3)
  SWEEP=()
  LIMIT=330
else
  echo "usage: bash benchmarks/gpu_check.sh OUT [cuda|cpu] [full|tiny]" >&2
  exit 2
fi

step() {  # step NAME COMMAND...: run with a time limit, log it, record its exit code and seconds
  local name=$1 start rc
  shift
  start=$(date +%s)
  timeout "$LIMIT" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  printf '{"step": "%s", "exit_code": %d, "seconds": %d, "device": "%s", "size": "%s"}\n' \
    "$name" "$rc" "$(( $(date +%s) - start ))" "$DEVICE" "$SIZE" >> "$OUT/steps.jsonl"
  echo "$name: exit $rc, $(( $(date +%s) - start )) s"
}

step full "$PY" run_experiments.py --preset=full "${FULL[@]}" --device="$DEVICE" --data_dir="$DATA" \
  --out_dir="$OUT/full" --tensorboard=False
step bench_train "$PY" benchmarks/bench_train.py --dataset=fashion-mnist --device="$DEVICE" "${TRAIN[@]}" \
  --paths=project,floor --json="$OUT/bench_train.json"
for mode in eager graphs; do
  graphs=$([ $mode = graphs ] && echo True || echo False)
  step "bench_sweep_$mode" "$PY" benchmarks/bench_sweep.py --preset=demo --paths=project "${SWEEP[@]}" \
    --override=--device="$DEVICE" --override=--data_dir="$DATA" --override=--cuda_graphs=$graphs \
    --override=--tensorboard=False --json="$OUT/bench_sweep_$mode.json"
done
cp -r "$OUT/full/scale.md" "$OUT/full_results.md" 2>/dev/null || true
! grep -q '"exit_code": [1-9]' "$OUT/steps.jsonl"
