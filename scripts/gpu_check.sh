#!/usr/bin/env bash
# The device check: everything a GPU session should run, in one call that fits the device limits.
#
#   scripts/make_gpu_carry.sh            # here: data and pure-Python test packages -> gpu-carry/
#   OUT=dir BUDGET_S=540 scripts/gpu_check.sh [all|tests|train|bench]   # on the device machine
#
# all = smoke, then the mini-resnet recipe (50 epochs, fewer if the measured step time says they
# would not fit the budget) beside the GPU tests and gradcheck, then the side-by-side benchmarks.
# $OUT gets about ten files (the device returns only a few): run folders stay in a temp dir.
# A failed smoke run stops early (after the GPU tests, for their diagnosis) to save device time.
# Run from the repository root on a machine with CuPy and a GPU (no install needed; PYTHONPATH=.).
set -uo pipefail
STAGE=${1:-all}
OUT=${OUT:-gpu-check-out}
BUDGET_S=${BUDGET_S:-540}
DATA_DIR=${DATA_DIR:-gpu-carry/fashion-mnist}
PY=${PYTHON:-python3}
START=$(date +%s)
RUNS=$(mktemp -d)
trap 'rm -rf "$RUNS"' EXIT
mkdir -p "$OUT"
STATUS=0  # the exit status: 1 when any stage failed

left() { echo $((START + BUDGET_S - $(date +%s))); }
# Seconds left minus $1, never under 10 (timeout takes 0 as "no limit" and refuses negatives).
budget() { local s=$(($(left) - ${1:-0})); echo $((s < 10 ? 10 : s)); }
log() { echo "[$(($(date +%s) - START)) s] $*" | tee -a "$OUT/progress.txt"; }
check() { local code=$1; shift; [ "$code" -eq 0 ] || STATUS=1; log "$* exit $code"; }

# Put a carried package on the path only where the device lacks it.
setup_path() {
  local extra pkg
  extra=$(mktemp -d)
  for pkg in pytest pluggy iniconfig packaging pytest_benchmark cpuinfo tqdm tomli; do
    if ! $PY -c "import $pkg" 2>/dev/null && [ -e "gpu-carry/pylib/$pkg" ]; then
      ln -s "$PWD/gpu-carry/pylib/$pkg" "$extra/"
      [ "$pkg" = pytest ] && ln -s "$PWD/gpu-carry/pylib/_pytest" "$PWD/gpu-carry/pylib/py.py" "$extra/"
      for dist in "$PWD"/gpu-carry/pylib/{"$pkg",py_"$pkg"2}-[0-9]*.dist-info; do
        [ -e "$dist" ] && ln -s "$dist" "$extra/"
      done
      echo "carried: $pkg" >> "$OUT/versions.txt"
    fi
  done
  export PYTHONPATH=".:$extra"
}

# Keep the tests (and their NumPy threads) off the cores of the training run's launch thread.
TEST_CPUS=(env OPENBLAS_NUM_THREADS=4 OMP_NUM_THREADS=4)
TRAIN_CPUS=()
if command -v taskset > /dev/null && [ "$(nproc)" -ge 8 ]; then
  TEST_CPUS+=(taskset -c "4-$(($(nproc) - 1))")
  TRAIN_CPUS=(taskset -c 0-3)
fi

info() {
  {
    nvidia-smi
    $PY --version
    $PY -c "import cupy, numpy; print('cupy', cupy.__version__, 'numpy', numpy.__version__)"
    $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  } >> "$OUT/versions.txt" 2>&1
}

tests() {
  log "GPU tests"
  timeout "${1:-240}" "${TEST_CPUS[@]}" $PY -m pytest -m gpu -q -p no:cacheprovider -o addopts="--benchmark-disable" \
    -rfE > "$OUT/pytest-gpu.txt" 2>&1
  check $? "pytest -m gpu: $(tail -n 1 "$OUT/pytest-gpu.txt");"
  timeout 90 "${TEST_CPUS[@]}" $PY -m convnet_gpu gradcheck --device cuda > "$OUT/gradcheck-cuda.txt" 2>&1
  check $? "gradcheck: $(tail -n 1 "$OUT/gradcheck-cuda.txt");"
}

# One epoch on a slice of the data through the whole trainer (jitter, BN, residuals, checkpoint).
smoke() {
  log "smoke run"
  timeout 120 $PY -m convnet_gpu train --device cuda --model mini-resnet --train-subset 2048 --epochs 1 \
    --batch-size 256 --lr 0.1 --jitter 2 --data-dir "$DATA_DIR" --no-progress \
    --out "$RUNS/smoke-run" > "$OUT/smoke.txt" 2>&1
}

# The smoke run's GPU-trained checkpoint, evaluated on the CPU (a cross-device load).
eval_on_cpu() {
  timeout "${1:-120}" "${TEST_CPUS[@]}" $PY -m convnet_gpu eval --device cpu \
    --checkpoint "$RUNS/smoke-run" --data-dir "$DATA_DIR" > "$OUT/eval-gpu-checkpoint-on-cpu.txt" 2>&1
  check $? "eval on cpu: $(grep -i 'accuracy' "$OUT/eval-gpu-checkpoint-on-cpu.txt" | head -n 1);"
}

# Epochs that fit in $1 seconds at the training speed bench measures (+35% for eval, saving
# and the GPU tests that run beside the first minutes).
epochs_for() {
  timeout 90 $PY -m convnet_gpu bench --device cuda --model mini-resnet --batch-size 256 --steps 40 --warmup 5 \
    --peer none --json "$RUNS/probe.json" > "$RUNS/probe.txt" 2>&1
  $PY - "$1" "$RUNS/probe.json" <<'PYEOF'
import json, sys
seconds = float(sys.argv[1])
rows = [r for r in json.load(open(sys.argv[2])) if "train_images_per_second" in r]
epoch_s = 60000 / rows[0]["train_images_per_second"] * 1.35
print(max(6, min(50, int(seconds / epoch_s))))
PYEOF
}

train() {
  local epochs=$1 run="$RUNS/mini-resnet-gpu"
  log "training mini-resnet for $epochs epochs"
  timeout "$2" "${TRAIN_CPUS[@]}" $PY -m convnet_gpu train --device cuda --model mini-resnet \
    --epochs "$epochs" --batch-size 256 --lr 0.2 --weight-decay 5e-4 --jitter 2 \
    --label-smoothing 0.1 --data-dir "$DATA_DIR" --no-progress --out "$run" \
    > "$OUT/train-mini-resnet-gpu.txt" 2>&1
  local code=$?
  check $code "training: $(grep 'epoch' "$OUT/train-mini-resnet-gpu.txt" | tail -n 1);"
  cp "$run/metrics.jsonl" "$OUT/train-mini-resnet-gpu-metrics.jsonl" 2>/dev/null
  return $code
}

bench() {
  log "benchmarks"
  {
    timeout 70 $PY -m convnet_gpu bench --device cpu,cuda --peer torch --batch-size 128 --steps 20
    timeout 45 $PY -m convnet_gpu bench --device cuda --peer torch --batch-size 1024 --steps 20
    timeout 45 $PY -m convnet_gpu bench --device cuda --peer torch --model mini-resnet \
      --batch-size 256 --steps 20
  } > "$OUT/bench.txt" 2>&1
  check $? "benchmarks (the last one's)"
  cat "$OUT/bench.txt"
}

setup_path
info
case "$STAGE" in
  tests) tests ;;
  bench) bench ;;
  train) train "${EPOCHS:-50}" "$(budget 10)" ;;
  all)
    if ! smoke; then
      log "smoke run FAILED: $(tail -n 3 "$OUT/smoke.txt" | tr '\n' ' ')"
      tests "$(budget 110)"  # gradcheck's 90 s come after
      exit 1
    fi
    log "$(grep -h 'epoch 1' "$OUT/smoke.txt" | head -n 1)"
    reserve=170  # the benchmarks afterwards (their timeouts add up to 160 s)
    epochs=$(epochs_for "$(budget $((reserve + 30)))")
    [[ "$epochs" =~ ^[0-9]+$ ]] || epochs=12  # the probe failed: a guess
    log "probe: $(grep -i 'convnet_gpu' "$RUNS/probe.txt" | head -n 1)"
    train "$epochs" "$(budget "$reserve")" &
    train_pid=$!
    tests 200
    eval_on_cpu 120
    wait $train_pid || STATUS=1
    if [ "$(left)" -gt 160 ]; then bench; else log "no time left for the benchmarks"; fi
    ;;
  *) echo "usage: OUT=dir [BUDGET_S=540] scripts/gpu_check.sh [all|tests|train|bench]" >&2; exit 2 ;;
esac
log "done (status $STATUS)"
exit $STATUS
