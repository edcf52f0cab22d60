#!/usr/bin/env bash
# The device check, in two stages that each fit one device call (600 s):
#   OUT=dir scripts/gpu_check.sh tests   # GPU tests, gradcheck on CUDA, side-by-side benchmarks
#   OUT=dir DATA_DIR=dir scripts/gpu_check.sh train   # mini-resnet on Fashion-MNIST on the GPU
# Run from the repository root on a machine with CuPy and a GPU (no install needed; PYTHONPATH=.).
# The device has no Debian package: carry a copy of the four Fashion-MNIST files and pass DATA_DIR.
set -uo pipefail
STAGE=${1:-tests}
OUT=${OUT:-gpu-check-out}
mkdir -p "$OUT"
export PYTHONPATH=.
PY=${PYTHON:-python3}

if [ "$STAGE" = tests ]; then
  nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
  $PY -c "import cupy, numpy; print('cupy', cupy.__version__, 'numpy', numpy.__version__)" > "$OUT/versions.txt" 2>&1
  $PY -c "import torch; print('torch', torch.__version__)" >> "$OUT/versions.txt" 2>&1
  timeout 240 $PY -m pytest -m gpu -q -p no:cacheprovider -o addopts="--benchmark-disable" \
    > "$OUT/pytest-gpu.txt" 2>&1
  echo "pytest gpu exit: $?" >> "$OUT/pytest-gpu.txt"
  timeout 60 $PY -m convnet_gpu gradcheck --device cuda > "$OUT/gradcheck-cuda.txt" 2>&1
  echo "gradcheck exit: $?" >> "$OUT/gradcheck-cuda.txt"
  for batch in 128 1024; do
    timeout 60 $PY -m convnet_gpu bench --device cpu,cuda --peer torch --batch-size $batch \
      --steps 20 --json "$OUT/bench-b$batch.json" > "$OUT/bench-b$batch.txt" 2>&1
  done
  timeout 60 $PY -m convnet_gpu bench --device cuda --peer torch --model mini-resnet \
    --batch-size 128 --steps 20 --json "$OUT/bench-mini-resnet.json" > "$OUT/bench-mini-resnet.txt" 2>&1
  tail -n 3 "$OUT"/pytest-gpu.txt "$OUT"/gradcheck-cuda.txt
  cat "$OUT"/bench-*.txt
elif [ "$STAGE" = train ]; then
  run="$OUT/mini-resnet-gpu-$(date +%s)"
  timeout 540 $PY -m convnet_gpu train --device cuda --model mini-resnet --epochs 10 \
    --batch-size 128 --lr 0.1 --weight-decay 5e-4 --jitter 1 ${DATA_DIR:+--data-dir "$DATA_DIR"} \
    --no-progress --out "$run" 2>&1 | tee "$OUT/train-mini-resnet-gpu.txt"
else
  echo "usage: OUT=dir scripts/gpu_check.sh tests|train" >&2
  exit 2
fi
