"""Host -> device copies that let the host run ahead of the GPU safely.

A copy from pageable host memory may read that memory later than the call returns (the driver
is free to stage it whenever it likes, and with HMM the GPU can read pageable memory itself).
When steps are replayed from a CUDA graph the host runs ahead and refills the loader's batch
buffer for the next step while the GPU has not yet copied the current one: the step would read
the next batch's images with this batch's labels. So a batch is first copied into a pinned
buffer of ours and sent from there, asynchronously, on the backend's stream; there are two
buffers per size, used in turn, and a buffer is refilled only after the GPU has finished the
copy that last read it (its event). The host can thus run up to two steps ahead.
"""

from __future__ import annotations

import ctypes

import cupy
import numpy as np

SLOTS = 2  # buffers per size: the host refills one while the GPU copies from the other


class HostStaging:
    def __init__(self):
        self._slots: dict[int, list] = {}  # bytes -> [[pinned array, event or None], ...]
        self._turn: dict[int, int] = {}

    def copy(self, host: np.ndarray, out, stream) -> None:
        """out (C-contiguous device array) <- host (same dtype and shape), in stream order."""
        size = host.nbytes
        if size == 0:
            return
        slots = self._slots.get(size)
        if slots is None:
            slots = self._slots[size] = [[_pinned(size), None] for _ in range(SLOTS)]
            self._turn[size] = 0
        turn = self._turn[size]
        self._turn[size] = (turn + 1) % SLOTS
        buffer, event = slots[turn]
        if event is not None:
            event.synchronize()  # the GPU has copied what this buffer held last time
        staged = buffer[:size].view(host.dtype).reshape(host.shape)
        np.copyto(staged, host)
        out.data.copy_from_host_async(ctypes.c_void_p(staged.ctypes.data), size, stream)
        if event is None:
            event = slots[turn][1] = cupy.cuda.Event(disable_timing=True)
        event.record(stream)


def _pinned(size: int) -> np.ndarray:
    """A page-locked host byte array of `size` bytes (kept alive by the array's base)."""
    memory = cupy.cuda.alloc_pinned_memory(size)
    return np.frombuffer(memory, dtype=np.uint8, count=size)
