"""CuPy (NVIDIA GPU) implementations of the window kernels.

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

from .base import (
    UINT32_RANGE,
    Backend,
    WindowGeometry,
    check_jitter_batch_size,
    check_seed_and_counter,
)
from .kernels import KERNEL_SOURCES, read_source, source_of

_THREADS_PER_BLOCK = 256
_MAX_BLOCKS = 65535 * 4
_CUDA_TYPE = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
_ARGMAX_DTYPE = np.dtype(np.int32)

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
        if not cupy.cuda.is_available():
            raise RuntimeError(
                "the CUDA backend was asked for, but CuPy finds no usable NVIDIA GPU "
                "(cupy.cuda.is_available() is False); use the 'cpu' backend instead"
            )
        device_count = cupy.cuda.runtime.getDeviceCount()
        if not 0 <= device_id < device_count:
            raise ValueError(
                f"no CUDA device {device_id}: this machine has {device_count} "
                f"(valid ids 0..{device_count - 1})"
            )
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
    def im2col(self, x, col, geom: WindowGeometry) -> None:
        n = x.shape[0]
        dtype = self._float_dtype(x, "x")
        x = self._input(x, "x", (n, geom.channels, geom.height, geom.width), dtype)
        self._output(col, "col", (geom.col_rows, geom.col_cols(n)), dtype)
        self._launch("im2col_kernel", dtype, col.size, (x, col) + _geometry_args(n, geom))

    def col2im(self, col, dx, geom: WindowGeometry) -> None:
        n = dx.shape[0]
        dtype = self._float_dtype(dx, "dx")
        col = self._input(col, "col", (geom.col_rows, geom.col_cols(n)), dtype)
        self._output(dx, "dx", (n, geom.channels, geom.height, geom.width), dtype)
        self._launch("col2im_kernel", dtype, dx.size, (col, dx) + _geometry_args(n, geom))

    # ---- pooling ---------------------------------------------------------------------------
    def pool_workspace(self, out_shape, dtype):
        return None  # the kernels need no scratch

    def maxpool_forward(self, x, y, argmax, workspace, geom: WindowGeometry) -> None:
        n = x.shape[0]
        dtype = self._float_dtype(x, "x")
        x = self._input(x, "x", (n, geom.channels, geom.height, geom.width), dtype)
        out_shape = (n, geom.channels, geom.out_h, geom.out_w)
        self._output(y, "y", out_shape, dtype)
        self._output(argmax, "argmax", out_shape, _ARGMAX_DTYPE)
        self._launch(
            "maxpool_forward_kernel", dtype, y.size, (x, y, argmax) + _geometry_args(n, geom)
        )

    def maxpool_backward(self, dy, argmax, dx, workspace, geom: WindowGeometry) -> None:
        n = dy.shape[0]
        dtype = self._float_dtype(dy, "dy")
        out_shape = (n, geom.channels, geom.out_h, geom.out_w)
        dy = self._input(dy, "dy", out_shape, dtype)
        argmax = self._input(argmax, "argmax", out_shape, _ARGMAX_DTYPE)
        self._output(dx, "dx", (n, geom.channels, geom.height, geom.width), dtype)
        self._launch(
            "maxpool_backward_kernel", dtype, dx.size, (dy, argmax, dx) + _geometry_args(n, geom)
        )

    def avgpool_forward(self, x, y, geom: WindowGeometry) -> None:
        n = x.shape[0]
        dtype = self._float_dtype(x, "x")
        x = self._input(x, "x", (n, geom.channels, geom.height, geom.width), dtype)
        self._output(y, "y", (n, geom.channels, geom.out_h, geom.out_w), dtype)
        self._launch("avgpool_forward_kernel", dtype, y.size, (x, y) + _geometry_args(n, geom))

    def avgpool_backward(self, dy, dx, geom: WindowGeometry) -> None:
        n = dy.shape[0]
        dtype = self._float_dtype(dy, "dy")
        dy = self._input(dy, "dy", (n, geom.channels, geom.out_h, geom.out_w), dtype)
        self._output(dx, "dx", (n, geom.channels, geom.height, geom.width), dtype)
        self._launch("avgpool_backward_kernel", dtype, dx.size, (dy, dx) + _geometry_args(n, geom))

    # ---- random numbers --------------------------------------------------------------------
    def uniform_workspace(self, shape):
        return None  # the kernel hashes its own element index

    def uniform(self, out, seed: int, counter: int, workspace=None) -> None:
        dtype = self._float_dtype(out, "out")
        self._output(out, "out", out.shape, dtype)
        check_seed_and_counter(seed, counter)
        if out.size >= UINT32_RANGE:
            raise ValueError(f"uniform() indexes elements with 32 bits; {out.size} is too many")
        self._launch(
            "uniform_kernel",
            dtype,
            out.size,
            (out, np.int64(out.size), np.uint32(seed), np.uint32(counter)),
        )

    # ---- data augmentation ------------------------------------------------------------------
    def jitter_workspace(self, batch_size: int):
        check_jitter_batch_size(batch_size)
        return None  # each thread hashes its own image's draws

    def jitter(self, x, out, pad: int, flip: bool, seed: int, counter: int, workspace=None) -> None:
        dtype = self._float_dtype(x, "x")
        self._check_device_array(out, "out")
        self._check_jitter_args(x, out, pad, seed, counter)  # before _input may copy x
        n, channels, height, width = x.shape
        x = self._input(x, "x", x.shape, dtype)
        self._output(out, "out", x.shape, dtype)
        self._launch(
            "jitter_kernel",
            dtype,
            out.size,
            (
                x,
                out,
                np.int64(n),
                np.int64(channels),
                np.int64(height),
                np.int64(width),
                np.int64(pad),
                np.int32(bool(flip)),
                np.uint32(seed),
                np.uint32(counter),
            ),
        )

    # ---- helpers ---------------------------------------------------------------------------
    def _launch(self, kernel_name: str, dtype, total: int, args: tuple) -> None:
        if total == 0:
            return
        kernel = _function(self.device_id, f"{kernel_name}<{_CUDA_TYPE[dtype]}>")
        blocks = min((total + _THREADS_PER_BLOCK - 1) // _THREADS_PER_BLOCK, _MAX_BLOCKS)
        kernel((blocks,), (_THREADS_PER_BLOCK,), args)

    def _float_dtype(self, array, name: str):
        self._check_device_array(array, name)
        if array.dtype not in _CUDA_TYPE:
            raise TypeError(
                f"{name} has dtype {array.dtype}; the CUDA kernels support float32 and float64"
            )
        return array.dtype

    def _check_device_array(self, array, name: str) -> None:
        if not isinstance(array, cupy.ndarray):
            raise TypeError(
                f"{name} must be a cupy.ndarray on {self.device}, got "
                f"{type(array).__name__}; host data enters through asarray() or "
                f"copy_from_host()"
            )
        if array.device.id != self.device_id:
            raise ValueError(
                f"{name} lives on cuda:{array.device.id}, but this backend runs on {self.device}"
            )

    def _check_array(self, array, name: str, shape: tuple, dtype) -> None:
        self._check_device_array(array, name)
        if tuple(array.shape) != tuple(shape):
            raise ValueError(f"{name} has shape {tuple(array.shape)}, expected {tuple(shape)}")
        if array.dtype != dtype:
            raise TypeError(f"{name} has dtype {array.dtype}, expected {np.dtype(dtype)}")

    def _input(self, array, name: str, shape: tuple, dtype):
        """Check an input and return it C-contiguous (a copy only when it is a strided view)."""
        self._check_array(array, name, shape, dtype)
        return cupy.ascontiguousarray(array)

    def _output(self, array, name: str, shape: tuple, dtype) -> None:
        """Outputs are written in place, so they must already be C-contiguous."""
        self._check_array(array, name, shape, dtype)
        if not array.flags.c_contiguous:
            raise ValueError(
                f"{name} must be C-contiguous: the CUDA kernels write it in place "
                f"(got strides {array.strides} for shape {array.shape})"
            )
