"""Pick a backend by device name. CuPy is imported lazily, only once a CUDA device is asked for.

Modules: base.py (the Backend interface and the argument checks every backend shares),
numpy_backend.py and cupy_backend.py (the kernels), geometry.py (WindowGeometry), counter_rng.py
(the counter-based random numbers), device.py (device names, the CUDA availability check).
"""

from __future__ import annotations

from ..settings import PRECISIONS, SettingError
from .base import Backend, GraphsUnsupported
from .device import (
    CUDA_INSTALL_HINT,
    DeviceUnavailable,
    cuda_problem,
    parse_device,
    require_cuda,
)
from .geometry import WindowGeometry
from .numpy_backend import NumpyBackend


def get_backend(
    device: str = "auto", announce=None, precision: str = "fp32", threads: int | None = None
) -> Backend:
    """Return the backend for `device`. `auto` takes CUDA when it works, else the CPU.

    `announce`, if given, receives one line saying which device `auto` chose and why.
    `precision` is how float32 matrix products are computed: "fp32", or "tf32" (tensor cores,
    CUDA only). `threads` is how many CPU threads the NumPy backend runs a step on, BLAS held to
    one (None: the calling thread, BLAS as configured); the CUDA backend ignores it.
    Raises DeviceUnavailable (one line: what is missing, how to fix it) for an
    unusable CUDA device.
    """
    if precision not in PRECISIONS:
        raise SettingError(
            "precision", f"unknown {precision!r}; use one of: {', '.join(PRECISIONS)}"
        )
    kind, index = parse_device(device)
    if kind == "cpu":
        return _numpy_backend(precision, threads)
    if kind == "cuda":
        require_cuda(index, device)  # before importing cupy_backend: CuPy itself may be missing
        return _cupy_backend(index, precision)
    problem = cuda_problem(index)
    if problem is not None:
        if announce:
            announce(f"device auto: using the CPU ({problem.split(';')[0]})")
        return _numpy_backend(precision, threads)
    backend = _cupy_backend(index, precision)
    if announce:
        announce(f"device auto: using {backend.describe()}")
    return backend


def _numpy_backend(precision: str, threads: int | None) -> Backend:
    if precision != "fp32":
        raise SettingError(
            "precision", f"{precision} needs a CUDA device (tensor cores); the CPU computes fp32"
        )
    try:
        return NumpyBackend(threads)
    except ValueError as exc:
        raise SettingError("threads", str(exc).removeprefix("threads ")) from None


def _cupy_backend(index: int, precision: str) -> Backend:
    from .cupy_backend import CupyBackend

    return CupyBackend(index, precision)


__all__ = [
    "Backend",
    "GraphsUnsupported",
    "WindowGeometry",
    "NumpyBackend",
    "DeviceUnavailable",
    "get_backend",
    "parse_device",
    "cuda_problem",
    "require_cuda",
    "CUDA_INSTALL_HINT",
]
