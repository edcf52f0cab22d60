"""Device names and the one check of whether a CUDA device can be used.

cuda_problem() is the only place that asks CuPy whether a GPU exists; get_backend() and
CupyBackend() both refuse through require_cuda(), so an unusable device reads the same either way.
"""

from __future__ import annotations

import re

from ..errors import UserError

CUDA_INSTALL_HINT = 'install CuPy with: pip install "convnet-gpu[cuda12]" (or [cuda13] for CUDA 13)'


class DeviceUnavailable(UserError):
    """The requested device cannot be used here; the message says what is missing."""


def parse_device(device: str) -> tuple[str, int]:
    """'cpu' | 'auto' | 'cuda' | 'cuda:N' -> (kind, index)."""
    match = re.fullmatch(r"(cpu|auto|cuda)(?::(\d+))?", device.strip().lower())
    if not match or (match.group(2) is not None and match.group(1) != "cuda"):
        raise UserError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")
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
        return "no NVIDIA GPU is visible to CuPy (no device or no driver); use `device` cpu"
    if not 0 <= index < count:
        return (
            f"cuda:{index} does not exist: this machine has {count} GPU(s) "
            f"(cuda:0..cuda:{count - 1})"
        )
    return None


def require_cuda(index: int, device: str | None = None) -> None:
    """Raise DeviceUnavailable (one line: what is missing, how to fix it) unless cuda:`index`
    can be used. `device` is the name it was asked for (default "cuda:<index>")."""
    problem = cuda_problem(index)
    if problem is not None:
        raise DeviceUnavailable(f"`device` {device or f'cuda:{index}'}: {problem}")
