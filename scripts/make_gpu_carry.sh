#!/usr/bin/env bash
# Builds gpu-carry/ (git-ignored) for a device machine without a package registry or the data:
#   gpu-carry/fashion-mnist/  the four IDX files of the Debian package
# The device image brings CuPy, PyTorch, pytest and pytest-benchmark; scripts/gpu_check.sh reads
# the data from here (the device call names gpu-carry in its `carry` list).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA_SRC:-/usr/share/datasets/fashion-mnist}
rm -rf gpu-carry
mkdir -p gpu-carry/fashion-mnist
cp "$DATA"/*-ubyte.gz gpu-carry/fashion-mnist/
du -sh gpu-carry
