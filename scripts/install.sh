#!/usr/bin/env bash
# Quick-start installer: Fashion-MNIST (Debian package) + a virtualenv in .venv with convnet-gpu,
# its test tools, its compiled CPU kernels (the cpu-jit extra: numba) and MPI for the distributed
# tests (the mpi extra: mpi4py and the MPICH wheel).
# Extra pip arguments are passed on, e.g.: scripts/install.sh cupy-cuda12x
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

need_apt=()
[ -d /usr/share/datasets/fashion-mnist ] || need_apt+=(dataset-fashion-mnist)
python3 -c "import ensurepip, venv" 2>/dev/null || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need_apt[*]}"
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_apt[@]}"
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test,cpu-jit,mpi]" "$@"
echo "installed: $(.venv/bin/convnet-gpu --version) in .venv"
