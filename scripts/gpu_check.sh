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
for model in simple-cnn-bn mini-resnet; do
  timeout 120 $PY -m convnet_gpu bench --device cpu,cuda --peer none --model $model --batch-size 128 \
    --steps 20 --json "$OUT/bench-$model.json" > "$OUT/bench-$model.txt" 2>&1
done
# Issue 3's GPU recipe: mini-resnet on full Fashion-MNIST (needs /usr/share/datasets/fashion-mnist
# or DATA_DIR); its metrics.jsonl and summary.json land in $OUT/mini-resnet-gpu.
timeout 420 $PY -m convnet_gpu train --device cuda --model mini-resnet --epochs 10 --batch-size 128 \
  --lr 0.1 --weight-decay 5e-4 --jitter 2 ${DATA_DIR:+--data-dir "$DATA_DIR"} --no-progress \
  --out "$OUT/mini-resnet-gpu" > "$OUT/train-mini-resnet-gpu.txt" 2>&1
echo "train exit: $?" >> "$OUT/train-mini-resnet-gpu.txt"
tail -n 3 "$OUT"/pytest-gpu.txt "$OUT"/gradcheck-cuda.txt "$OUT"/train-mini-resnet-gpu.txt
cat "$OUT"/bench-*.txt
