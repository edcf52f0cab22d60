"""Allocation bounds: what a net, a dataset file or a checkpoint array will need, checked before
anything is allocated.

A size comes from shapes and headers (a batch size, a model file's channels, an IDX header, an
npy header inside a checkpoint), which a careless or hostile input can set to anything. Left
unchecked, the allocation fails with a MemoryError after minutes of swapping, or succeeds and
starves the machine. So the bytes are computed first, in Python integers (no int64 overflow),
and refused with one line naming the size and the limit:

- memory: what the device has free; on the CPU the kernel's MemAvailable (the free physical
  pages where the kernel gives none), less where an address space limit (ulimit -v, RLIMIT_AS)
  or the process's cgroup v2 (memory.max) leaves less room; on CUDA the device's free memory
  plus what CuPy's pool holds unused. Where none is known, it is not checked.
- header caps: counts no real file comes near (MAX_CLASSES), refused whatever memory is free.
"""

from __future__ import annotations

import math
import os

from .errors import UserError

_MEMINFO = "/proc/meminfo"
_PROC_CGROUP = "/proc/self/cgroup"
_CGROUP_ROOT = "/sys/fs/cgroup"  # where cgroup v2 is mounted on its own
MAX_CLASSES = 10_000  # class names a dataset may list (CIFAR-10 has 10; ImageNet 21k has 21841)


class TooLarge(UserError):
    """An allocation that cannot fit, refused before it was tried: the problem and its fix.
    `by_settings`: the run's settings asked for it (the fix is to change them)."""

    def __init__(self, problem: str, fix: str, by_settings: bool = False):
        super().__init__(f"{problem}; {fix}")
        self.problem, self.fix, self.by_settings = problem, fix, by_settings

    def in_a_new_run(self) -> TooLarge:
        """The refusal where the settings are a saved run's, which a resume keeps: the fix is
        for a new run."""
        return TooLarge(
            self.problem,
            f"a resumed run keeps its settings: start a new run (`out`) and there {self.fix}",
            self.by_settings,
        )


_PIB = 1 << 50
_UNITS = (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10))


def format_bytes(count: int) -> str:
    """A size for a message, in integers only: a header's claimed size can exceed what a float
    holds (40 dimensions of 2**32), and a 30-digit figure says nothing that "more than" does."""
    if count > _PIB:
        return "more than 1024 TiB"
    for unit, size in _UNITS:
        if count >= size:
            tenths = (count * 10 + size // 2) // size  # rounded to one decimal
            return f"{tenths // 10}.{tenths % 10} {unit}"
    return f"{count} bytes"


def free_host_bytes() -> int | None:
    """Bytes this process can still allocate on the host: MemAvailable, less where an address
    space limit or a cgroup leaves less room; None where none is known."""
    limits = [_mem_available(), _address_space_headroom(), _cgroup_headroom()]
    known = [value for value in limits if value is not None]
    return min(known) if known else None


def free_device_bytes(backend) -> int | None:
    """Bytes free on the backend's device (the host for the NumPy backend)."""
    if backend.xp.__name__ == "numpy":
        return free_host_bytes()
    try:
        free, _ = backend.xp.cuda.runtime.memGetInfo()
        return int(free) + int(backend.xp.get_default_memory_pool().free_bytes())
    except Exception:  # noqa: BLE001 - no figure is no check, never a failure of its own
        return None


def check_fits(
    what: str, needed: int, free: int | None, where: str, fix: str, by_settings: bool = False
) -> None:
    """Refuse `needed` bytes (for `what`) where more than `free` of them: one line with the
    size, the limit and the fix."""
    if free is not None and needed > free:
        raise TooLarge(
            f"{what} needs {format_bytes(needed)}, more than the {format_bytes(free)} of memory "
            f"free on {where}", fix, by_settings,
        )  # fmt: skip


def check_host_fits(what: str, needed: int, fix: str) -> None:
    check_fits(what, needed, free_host_bytes(), "this machine", fix)


def net_setup_bytes(shapes, param_shapes, batch_size: int, itemsize: int) -> int:
    """A lower bound of what Net.setup allocates: every planned blob (data and gradient, the
    input's data only) for the batch, and the flat parameters with their gradient, decay mask
    and float64 initial values. Workspaces and nested blobs come on top."""
    blobs = sum(math.prod(shape) for shape in shapes[1:])
    activations = batch_size * (2 * blobs + math.prod(shapes[0])) * itemsize
    params = sum(math.prod(shape) for shape in param_shapes)
    return activations + params * (3 * itemsize + 8)


def _mem_available() -> int | None:
    """MemAvailable, else (kernels before 3.14, systems without /proc) the free physical pages."""
    try:
        with open(_MEMINFO, encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # a name this platform's sysconf lacks
        return None


def _cgroup_headroom() -> int | None:
    """memory.max less memory.current of this process's cgroup v2, where one sets a limit (a
    container's memory limit: the kernel's MemAvailable is the host's)."""
    try:
        with open(_PROC_CGROUP, encoding="ascii") as cgroups:
            path = next(line[3:].strip() for line in cgroups if line.startswith("0::"))
        folder = os.path.join(_CGROUP_ROOT, path.lstrip("/"))
        with open(os.path.join(folder, "memory.max"), encoding="ascii") as limit:
            text = limit.read().strip()
        if text == "max":
            return None
        with open(os.path.join(folder, "memory.current"), encoding="ascii") as current:
            return max(int(text) - int(current.read()), 0)
    except (OSError, ValueError, StopIteration):
        return None


def _address_space_headroom() -> int | None:
    """RLIMIT_AS less the address space already mapped (VmSize), where a limit is set."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    except (ImportError, OSError, ValueError):
        return None
    if soft == resource.RLIM_INFINITY:
        return None
    return max(soft - (_vm_size() or 0), 0)


def _vm_size() -> int | None:
    try:
        with open(f"/proc/{os.getpid()}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_net_fits(backend, layers, shapes, batch_size: int, dtype) -> None:
    """Refuse a net whose blobs and parameters cannot fit in the device's free memory, before
    Net.setup allocates any of them (a batch of 10**9, a model file's 10**9 channels)."""
    from .layers.base import parameter_owners

    param_shapes = [spec.shape for _, _, spec in parameter_owners(layers, shapes[0])]
    needed = net_setup_bytes(shapes, param_shapes, batch_size, dtype.itemsize)
    where = getattr(backend, "device", "the CPU")
    check_fits(
        f"the net at batch size {batch_size}", needed, free_device_bytes(backend), where,
        "lower `batch_size` or the model's channels, features or padding", by_settings=True,
    )  # fmt: skip
