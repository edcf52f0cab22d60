"""Pick a backend by device name. CuPy is imported lazily, only once a CUDA device is asked for.

Modules: base.py (the Backend interface and the argument checks every backend shares),
numpy_backend.py and cupy_backend.py (the kernels), geometry.py (WindowGeometry), counter_rng.py
(the counter-based random numbers), device.py (device names, the CUDA availability check).
"""

from __future__ import annotations

from .base import Backend
from .device import (
    CUDA_INSTALL_HINT,
    DeviceUnavailable,
    cuda_problem,
    parse_device,
    require_cuda,
)
from .geometry import WindowGeometry
from .numpy_backend import NumpyBackend


def get_backend(device: str = "auto", announce=None) -> Backend:
    """Return the backend for `device`. `auto` takes CUDA when it works, else the CPU.

    `announce`, if given, receives one line saying which device `auto` chose and why.
    Raises DeviceUnavailable (one line: what is missing, how to fix it) for an unusable CUDA device.
    """
    kind, index = parse_device(device)
    if kind == "cpu":
        return NumpyBackend()
    if kind == "cuda":
        require_cuda(index, device)  # before importing cupy_backend: CuPy itself may be missing
        return _cupy_backend(index)
    problem = cuda_problem(index)
    if problem is not None:
        if announce:
            announce(f"device auto: using the CPU ({problem.split(';')[0]})")
        return NumpyBackend()
    backend = _cupy_backend(index)
    if announce:
        announce(f"device auto: using {backend.describe()}")
    return backend


def _cupy_backend(index: int) -> Backend:
    from .cupy_backend import CupyBackend

    return CupyBackend(index)


__all__ = [
    "Backend",
    "WindowGeometry",
    "NumpyBackend",
    "DeviceUnavailable",
    "get_backend",
    "parse_device",
    "cuda_problem",
    "require_cuda",
    "CUDA_INSTALL_HINT",
]
