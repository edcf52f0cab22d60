#!/usr/bin/env bash
# Builds gpu-carry/ (git-ignored) for a device machine that has CuPy but no package registry:
#   gpu-carry/fashion-mnist/  the four IDX files of the Debian package
#   gpu-carry/pylib/          pure-Python test and progress packages copied from .venv
# scripts/gpu_check.sh puts a package from pylib on the path only where the device lacks it.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA_SRC:-/usr/share/datasets/fashion-mnist}
SITE=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
rm -rf gpu-carry
mkdir -p gpu-carry/fashion-mnist gpu-carry/pylib
cp "$DATA"/*-ubyte.gz gpu-carry/fashion-mnist/
for name in pytest _pytest pluggy iniconfig packaging pytest_benchmark cpuinfo tqdm py.py; do
  cp -r "$SITE/$name" gpu-carry/pylib/
done
# the metadata too: pytest finds the pytest-benchmark plugin through its entry points
for dist in pytest pluggy iniconfig packaging pytest_benchmark py_cpuinfo2 tqdm; do
  cp -r "$SITE/$dist"-[0-9]*.dist-info gpu-carry/pylib/
done
rm -rf /tmp/tomli-wheel  # the pure-Python wheel, for a device Python older than 3.11
.venv/bin/pip download --quiet --no-deps --only-binary=:all: --platform any --implementation py \
  --python-version 3.10 --dest /tmp/tomli-wheel tomli
.venv/bin/python -m zipfile -e /tmp/tomli-wheel/tomli-*.whl gpu-carry/pylib/
find gpu-carry/pylib -name __pycache__ -prune -exec rm -rf {} +
du -sh gpu-carry
