#!/usr/bin/env bash
# The device check, one script: GPU tests, gradcheck on CUDA, and the side-by-side benchmark.
# Run from the repository root on a machine with CuPy and a GPU (no install needed):
#   OUT=/some/dir scripts/gpu_check.sh
# Results land in $OUT: pytest-gpu.txt, gradcheck-cuda.txt, bench-*.json/.txt, nvidia-smi.txt.
set -uo pipefail
OUT=${OUT:-gpu-check-out}
mkdir -p "$OUT"
export PYTHONPATH=.
PY=${PYTHON:-python3}
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
$PY -c "import cupy, numpy; print('cupy', cupy.__version__, 'numpy', numpy.__version__)" > "$OUT/versions.txt" 2>&1
$PY -c "import torch; print('torch', torch.__version__)" >> "$OUT/versions.txt" 2>&1
timeout 300 $PY -m pytest -m gpu -q -p no:cacheprovider -o addopts="" > "$OUT/pytest-gpu.txt" 2>&1
echo "pytest gpu exit: $?" >> "$OUT/pytest-gpu.txt"
timeout 120 $PY -m convnet_gpu gradcheck --device cuda > "$OUT/gradcheck-cuda.txt" 2>&1
echo "gradcheck exit: $?" >> "$OUT/gradcheck-cuda.txt"
for batch in 128 1024; do
  timeout 180 $PY -m convnet_gpu bench --device cpu,cuda --peer torch --batch-size $batch --steps 30 \
    --json "$OUT/bench-b$batch.json" > "$OUT/bench-b$batch.txt" 2>&1
done
tail -n 3 "$OUT"/pytest-gpu.txt "$OUT"/gradcheck-cuda.txt; cat "$OUT"/bench-*.txt
