"""CuPy (NVIDIA GPU) implementations of the kernels; base.py has checked their arguments.

The kernels live in kernels/*.cu as templates over the element type; they are compiled with
NVRTC (cupy.RawModule) the first time one is needed, once per process and device. Each window
op is one launch of a grid-stride kernel on the current stream: no allocation (unless an input
is a non-contiguous view, which is copied), no host sync, so a step built from these ops can be
captured as a CUDA graph. Semantics match numpy_backend.py exactly (same summation order).
"""

from __future__ import annotations

import threading
from functools import lru_cache

import cupy
import numpy as np

from .base import Backend
from .device import require_cuda
from .geometry import WindowGeometry
from .kernels import KERNEL_SOURCES, read_source, source_of

_THREADS_PER_BLOCK = 256
_MAX_BLOCKS = 65535 * 4
_CUDA_TYPE = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}

_compile_lock = threading.Lock()
_modules: dict[tuple[int, str], cupy.RawModule] = {}  # (device id, .cu file) -> module
_functions: dict[tuple[int, str], cupy.RawKernel] = {}  # (device id, name expression) -> kernel


def _module(device_id: int, file_name: str) -> cupy.RawModule:
    key = (device_id, file_name)
    module = _modules.get(key)
    if module is None:
        module = cupy.RawModule(
            code=read_source(file_name),
            options=("--std=c++17",),
            name_expressions=list(KERNEL_SOURCES[file_name]),
        )
        _modules[key] = module
    return module


def _function(device_id: int, name_expression: str) -> cupy.RawKernel:
    key = (device_id, name_expression)
    kernel = _functions.get(key)
    if kernel is None:
        with _compile_lock, cupy.cuda.Device(device_id):
            kernel = _functions.get(key)
            if kernel is None:
                module = _module(device_id, source_of(name_expression))
                kernel = module.get_function(name_expression)
                _functions[key] = kernel
    return kernel


@lru_cache(maxsize=512)
def _geometry_args(n: int, geom: WindowGeometry) -> tuple:
    """The trailing scalar arguments every window kernel takes, as the exact C types (long long)."""
    values = (
        n,
        geom.channels,
        geom.height,
        geom.width,
        geom.kernel_h,
        geom.kernel_w,
        geom.stride,
        geom.pad,
        geom.out_h,
        geom.out_w,
    )
    return tuple(np.int64(v) for v in values)


class CupyBackend(Backend):
    name = "cuda"
    xp = cupy

    def __init__(self, device_id: int = 0):
        require_cuda(device_id)  # DeviceUnavailable, worded as get_backend() words it
        cupy.cuda.Device(device_id).use()
        self.xp = cupy
        self.device_id = device_id
        self.device = f"cuda:{device_id}"

    # ---- memory -------------------------------------------------------------------------
    def to_host(self, array) -> np.ndarray:
        return cupy.asnumpy(array)

    def copy_from_host(self, host_array, out):
        if not isinstance(out, cupy.ndarray):
            raise TypeError(
                f"copy_from_host writes into a cupy.ndarray on {self.device}, "
                f"got {type(out).__name__}"
            )
        if isinstance(host_array, cupy.ndarray):
            cupy.copyto(out, host_array, casting="same_kind")
            return
        if not out.flags.c_contiguous:
            raise ValueError("copy_from_host needs a C-contiguous destination on the device")
        host = np.asarray(host_array)
        if host.dtype != out.dtype:
            if not np.can_cast(host.dtype, out.dtype, casting="same_kind"):
                raise TypeError(
                    f"cannot copy {host.dtype} host data into a {out.dtype} device "
                    f"array under the 'same_kind' casting rule"
                )
            host = host.astype(out.dtype)
        if host.shape != out.shape:
            host = np.broadcast_to(host, out.shape)
        out.set(np.ascontiguousarray(host))

    def synchronize(self) -> None:
        cupy.cuda.get_current_stream().synchronize()

    def memory_in_use(self) -> int:
        return cupy.get_default_memory_pool().used_bytes()

    def describe(self) -> str:
        gpu_name = cupy.cuda.runtime.getDeviceProperties(self.device_id)["name"]
        if isinstance(gpu_name, bytes):
            gpu_name = gpu_name.decode(errors="replace")
        return f"{self.device} ({gpu_name}, CuPy {cupy.__version__})"

    def compile_kernels(self) -> None:
        """Compile and load every window kernel now (e.g. before capturing a CUDA graph)."""
        for expressions in KERNEL_SOURCES.values():
            for expression in expressions:
                _function(self.device_id, expression)

    # ---- convolution lowering -------------------------------------------------------------
    def _im2col(self, x, col, geom: WindowGeometry) -> None:
        self._launch_window("im2col_kernel", col, (x, col), x.shape[0], geom)

    def _col2im(self, col, dx, geom: WindowGeometry) -> None:
        self._launch_window("col2im_kernel", dx, (col, dx), dx.shape[0], geom)

    # ---- pooling (the kernels need no workspace) ----------------------------------------------
    def _maxpool_forward(self, x, y, argmax, workspace, geom: WindowGeometry) -> None:
        self._launch_window("maxpool_forward_kernel", y, (x, y, argmax), x.shape[0], geom)

    def _maxpool_backward(self, dy, argmax, dx, workspace, geom: WindowGeometry) -> None:
        self._launch_window("maxpool_backward_kernel", dx, (dy, argmax, dx), dy.shape[0], geom)

    def _avgpool_forward(self, x, y, geom: WindowGeometry) -> None:
        self._launch_window("avgpool_forward_kernel", y, (x, y), x.shape[0], geom)

    def _avgpool_backward(self, dy, dx, geom: WindowGeometry) -> None:
        self._launch_window("avgpool_backward_kernel", dx, (dy, dx), dy.shape[0], geom)

    # ---- random numbers (the kernel hashes its own element index: no workspace) ----------------
    def _uniform(self, out, seed: int, counter: int, workspace) -> None:
        args = (out, np.int64(out.size), np.uint32(seed), np.uint32(counter))
        self._launch("uniform_kernel", out.dtype, out.size, args)

    # ---- data augmentation (each thread hashes its own image's draws: no workspace) ------------
    def _jitter(self, x, out, pad: int, flip: bool, seed: int, counter: int, workspace) -> None:
        n, channels, height, width = x.shape
        sizes = tuple(np.int64(v) for v in (n, channels, height, width, pad))
        args = (x, out) + sizes + (np.int32(bool(flip)), np.uint32(seed), np.uint32(counter))
        self._launch("jitter_kernel", x.dtype, out.size, args)

    # ---- hooks: device residency, in-place outputs, contiguous inputs ---------------------------
    def _check_device(self, op: str, name: str, array) -> None:
        if not isinstance(array, cupy.ndarray):
            raise TypeError(
                f"{op}: {name} must be a cupy.ndarray on {self.device}, got "
                f"{type(array).__name__}; host data enters through asarray() or "
                f"copy_from_host()"
            )
        if array.device.id != self.device_id:
            raise ValueError(
                f"{op}: {name} lives on cuda:{array.device.id}, but this backend runs on "
                f"{self.device}"
            )

    def _check_output_layout(self, op: str, name: str, array) -> None:
        if not array.flags.c_contiguous:
            raise ValueError(
                f"{op}: {name} must be C-contiguous: the CUDA kernels write it in place "
                f"(got strides {array.strides} for shape {array.shape})"
            )

    def _kernel_input(self, array):
        """C-contiguous: a copy only when the input is a strided view."""
        return cupy.ascontiguousarray(array)

    # ---- launching ---------------------------------------------------------------------------
    def _launch_window(self, kernel_name: str, output, args: tuple, n: int, geom) -> None:
        """One thread per output element; the geometry follows the arrays as scalar arguments."""
        self._launch(kernel_name, output.dtype, output.size, args + _geometry_args(n, geom))

    def _launch(self, kernel_name: str, dtype, total: int, args: tuple) -> None:
        if total == 0:
            return
        kernel = _function(self.device_id, f"{kernel_name}<{_CUDA_TYPE[dtype]}>")
        blocks = min((total + _THREADS_PER_BLOCK - 1) // _THREADS_PER_BLOCK, _MAX_BLOCKS)
        kernel((blocks,), (_THREADS_PER_BLOCK,), args)
