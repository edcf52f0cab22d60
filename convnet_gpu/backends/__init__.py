"""Pick a backend by device name. CuPy is imported here, lazily, and nowhere else."""

from __future__ import annotations

import re

from .base import Backend, WindowGeometry
from .numpy_backend import NumpyBackend

CUDA_INSTALL_HINT = 'install CuPy with: pip install "convnet-gpu[cuda12]" (or [cuda13] for CUDA 13)'


class DeviceUnavailable(RuntimeError):
    """The requested device cannot be used here; the message says what is missing."""


def parse_device(device: str) -> tuple[str, int]:
    """'cpu' | 'auto' | 'cuda' | 'cuda:N' -> (kind, index)."""
    match = re.fullmatch(r"(cpu|auto|cuda)(?::(\d+))?", device.strip().lower())
    if not match or (match.group(2) is not None and match.group(1) != "cuda"):
        raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")
    return match.group(1), int(match.group(2) or 0)


def cuda_problem(index: int = 0) -> str | None:
    """Why CUDA device `index` cannot be used, or None when it can."""
    try:
        import cupy
    except ImportError:
        return f"CuPy is not installed; {CUDA_INSTALL_HINT}"
    except Exception as exc:  # a broken CuPy install raises more than ImportError
        return f"CuPy failed to import ({exc.__class__.__name__}: {exc}); {CUDA_INSTALL_HINT}"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception:
        count = 0
    if count == 0:
        return "no NVIDIA GPU is visible to CuPy (no device or no driver); use --device cpu"
    if index >= count:
        return (
            f"cuda:{index} does not exist: this machine has {count} GPU(s) "
            f"(cuda:0..cuda:{count - 1})"
        )
    return None


def get_backend(device: str = "auto", announce=None) -> Backend:
    """Return the backend for `device`. `auto` takes CUDA when it works, else the CPU.

    `announce`, if given, receives one line saying which device `auto` chose and why.
    Raises DeviceUnavailable (one line: what is missing, how to fix it) for an unusable CUDA device.
    """
    kind, index = parse_device(device)
    if kind == "cpu":
        return NumpyBackend()
    problem = cuda_problem(index)
    if kind == "auto":
        if problem is None:
            backend = _cupy_backend(index)
            if announce:
                announce(f"device auto: using {backend.describe()}")
            return backend
        if announce:
            announce(f"device auto: using the CPU ({problem.split(';')[0]})")
        return NumpyBackend()
    if problem is not None:
        raise DeviceUnavailable(f"--device {device}: {problem}")
    return _cupy_backend(index)


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
    "CUDA_INSTALL_HINT",
]
