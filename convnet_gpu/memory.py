"""Peak memory of a measurement, per device: what a benchmark row reports as its memory.

A meter is started before the net is built and read after its last timed step:

* NumPy (and PyTorch on the CPU): the growth of the process's resident set, its peak (Linux's
  VmHWM, reset at the start through /proc/self/clear_refs) less the resident set at the start,
  after the heap's free memory went back to the OS (so the row's own allocations are seen, not
  hidden in memory an earlier row freed); the worker threads share the process, so they are in it.
* CuPy: the growth of the default memory pool's held bytes. The pool keeps every block it ever
  got from the driver until told to free them, so what it holds is its high-water mark.
* PyTorch on CUDA: torch.cuda.max_memory_allocated, its peak reset at the start.

`read()` returns None where a meter cannot measure (no /proc: not Linux).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import re

_STATUS = "/proc/self/status"


def _status_kib(field: str) -> int | None:
    try:
        with open(_STATUS, encoding="ascii", errors="replace") as status:
            match = re.search(rf"^{field}:\s+(\d+) kB", status.read(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def _trim_heap() -> None:
    """Hand the C heap's free memory back to the OS (glibc's malloc_trim), so that memory an
    earlier row freed is not reused unseen by the next; nothing where there is no glibc."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _reset_peak_rss() -> bool:
    """Make the peak resident set (VmHWM) the current one; False where the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear_refs:
            clear_refs.write("5")  # 5: reset the peak RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


class HostRssGrowth:
    what = "host RSS growth"

    def start(self) -> None:
        gc.collect()  # what an earlier row left behind is not this one's
        _trim_heap()
        self.reset = _reset_peak_rss()
        self.before = _status_kib("VmRSS")

    def read(self) -> int | None:
        peak = _status_kib("VmHWM")
        if not self.reset or peak is None or self.before is None:
            return None
        return max(peak - self.before, 0) * 1024


class CupyPoolHighWater:
    what = "CuPy pool high-water growth"

    def start(self) -> None:
        import cupy

        gc.collect()
        self.pool = cupy.get_default_memory_pool()
        self.pool.free_all_blocks()  # blocks an earlier row freed would hide this one's growth
        self.before = self.pool.total_bytes()

    def read(self) -> int:
        return max(self.pool.total_bytes() - self.before, 0)


class TorchCudaPeak:
    what = "torch.cuda.max_memory_allocated"

    def __init__(self, device):
        self.device = device

    def start(self) -> None:
        import torch

        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(self.device)
        self.before = torch.cuda.memory_allocated(self.device)

    def read(self) -> int:
        import torch

        return max(torch.cuda.max_memory_allocated(self.device) - self.before, 0)


def meter_for(engine: str, device_kind: str, torch_device=None):
    """The meter of an engine ("convnet_gpu" or "torch") on a device kind ("cpu" or "cuda")."""
    if device_kind == "cpu":
        return HostRssGrowth()
    if engine == "torch":
        return TorchCudaPeak(torch_device)
    return CupyPoolHighWater()


def memory_fields(meter) -> dict:
    """A row's memory columns: the peak in bytes (None: not measurable here) and how it was read."""
    return {"peak_memory_bytes": meter.read(), "memory_measure": meter.what}
