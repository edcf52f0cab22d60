"""CuPy (NVIDIA GPU) implementations of the kernels; base.py has checked their arguments.

The kernels live in kernels/*.cu as templates over the element type; they are compiled with
NVRTC (cupy.RawModule) the first time one is needed, once per process and device. Each window
op is one launch of a grid-stride kernel on the current stream: no allocation (unless an input
is a non-contiguous view, which is copied), no host sync, so a step built from these ops can be
captured as a CUDA graph. Semantics match numpy_backend.py exactly (same summation order).

Every piece of work goes to CuPy's *current* stream, as CuPy's own array operations do: kernel
launches, copies, host reads, cuBLAS (whose handle follows the current stream) and graph
replays. One stream for everything keeps every step ordered after the last one and every host
read after the work it reads, whatever stream the caller has made current. Only a capture runs
on a stream of its own (a graph cannot be captured from the default stream); what it records
is then replayed on the current stream. Matrix products go through cuBLAS on a handle of our
own (cublas.py: CuPy refuses its cuBLAS calls during capture). CuPy's CUB reductions are
switched off: they allocate scratch memory per call, which a captured graph cannot hold, and one
plain reduction kernel per call keeps eager and replayed steps on the same summation order.

At ~400 lines it is the CUDA twin of numpy_backend.py plus what only CUDA has (the stream, the
capture, the launch helpers); the kernels themselves, cuBLAS and the host staging are already
modules of their own (kernels/, cublas.py, staging.py).
"""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import NamedTuple

import cupy
import numpy as np
from cupy._core import _accelerator

from .base import Backend, GraphsUnsupported
from .conv_lowering import chunk_bytes_from_env
from .cublas import PRECISIONS, CublasHandle
from .device import require_cuda
from .geometry import WindowGeometry
from .kernels import KERNEL_SOURCES, compile_options, read_source, source_of
from .staging import HostStaging

_CUBLAS_WORKSPACE_BYTES = 32 << 20  # cuBLAS's recommendation for Hopper
_LANES = 32  # threads per channel adding its partial sums (kernels/channel.cu)
_THREADS_PER_BLOCK = 256
_MAX_BLOCKS = 65535 * 4
_CUDA_TYPE = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}

_compile_lock = threading.Lock()
_capture_streams: dict[int, cupy.cuda.Stream] = {}  # device id -> its stream for captures
_modules: dict[tuple[int, str], cupy.RawModule] = {}  # (device id, .cu file) -> module
_functions: dict[tuple[int, str], cupy.RawKernel] = {}  # (device id, name expression) -> kernel


def _capture_stream(device_id: int) -> cupy.cuda.Stream:
    """The non-blocking stream a device's captures are recorded on (one per device)."""
    stream = _capture_streams.get(device_id)
    if stream is None:
        stream = _capture_streams[device_id] = cupy.cuda.Stream(non_blocking=True)
    return stream


def _current_stream() -> cupy.cuda.Stream:
    return cupy.cuda.get_current_stream()


def _module(device_id: int, file_name: str) -> cupy.RawModule:
    key = (device_id, file_name)
    module = _modules.get(key)
    if module is None:
        module = cupy.RawModule(
            code=read_source(file_name),
            options=compile_options(file_name),
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


INT_INDEX_LIMIT = 2**30  # arrays below it are indexed with 32-bit ints (see kernels/window.cuh)


@lru_cache(maxsize=512)
def _geometry_args(n: int, geom: WindowGeometry, index_type) -> tuple:
    """The trailing scalar arguments every window kernel takes, as the exact C type I."""
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
    return tuple(index_type(v) for v in values)


class CupyBackend(Backend):
    name = "cuda"
    xp = cupy
    supports_graphs = True

    def __init__(self, device_id: int = 0, precision: str = "fp32"):
        require_cuda(device_id)  # DeviceUnavailable, worded as get_backend() words it
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; use one of {PRECISIONS}")
        cupy.cuda.Device(device_id).use()
        _accelerator.set_routine_accelerators([])  # no CUB: see the module docstring
        _accelerator.set_reduction_accelerators([])
        self.xp = cupy
        self.device_id = device_id
        self.device = f"cuda:{device_id}"
        self.precision = precision
        # The whole batch lowered at once unless CONVNET_GPU_CONV_CHUNK_MIB says otherwise: the
        # default until an H200 says which wins at batch 1024 (scripts/gpu_bench.py runs both).
        self.conv_chunk_bytes = chunk_bytes_from_env()
        self.capture_stream = _capture_stream(device_id)
        self._blas = None  # created at the first matmul, outside any capture
        self._counter_value = None  # where an int counter is written for the kernels to read
        self._staging = HostStaging()  # host -> device copies through pinned buffers

    # ---- memory -------------------------------------------------------------------------
    def to_host(self, array) -> np.ndarray:
        return cupy.asnumpy(array, blocking=True)  # on the current stream, after its work

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
        self._staging.copy(np.ascontiguousarray(host), out, _current_stream())

    def synchronize(self) -> None:
        _current_stream().synchronize()

    def memory_in_use(self) -> int:
        return cupy.get_default_memory_pool().used_bytes()

    def describe(self) -> str:
        gpu_name = cupy.cuda.runtime.getDeviceProperties(self.device_id)["name"]
        if isinstance(gpu_name, bytes):
            gpu_name = gpu_name.decode(errors="replace")
        tf32 = ", tf32" if self.precision == "tf32" else ""
        chunks = f", conv chunks {self.conv_chunk_bytes >> 20} MiB" if self.conv_chunk_bytes else ""
        return f"{self.device} ({gpu_name}, CuPy {cupy.__version__}{tf32}{chunks})"

    # ---- matrix products and graphs -----------------------------------------------------------
    def matmul(self, a, b, out):
        for name, array in (("a", a), ("b", b), ("out", out)):
            self._check_device("matmul", name, array)
        if self._blas is None:
            workspace = cupy.empty(_CUBLAS_WORKSPACE_BYTES, dtype=np.uint8)
            self._blas = CublasHandle(workspace, self.precision)
        self._blas.matmul(a, b, out, _current_stream().ptr)
        return out

    def capture(self, step):
        """Record step() as a CUDA graph (on the capture stream, made current meanwhile). Run it
        eagerly once first (it compiles kernels and creates the cuBLAS handle); an allocation
        during capture is refused (GraphsUnsupported), since the graph would keep using memory
        the pool hands out again. The graph replays on whatever stream is current then."""
        stream = self.capture_stream
        previous = cupy.cuda.get_allocator()
        cupy.cuda.set_allocator(_refuse_allocation)
        try:
            with stream:  # every array operation of the step goes to the captured stream
                stream.begin_capture()
                try:
                    step()
                finally:
                    graph = stream.end_capture()
        except GraphsUnsupported:
            raise
        except Exception as exc:  # CuPy refusing a call inside capture, ...
            raise GraphsUnsupported(f"the step cannot be captured ({exc})") from exc
        finally:
            cupy.cuda.set_allocator(previous)
        return CapturedStep(graph)

    def select(self, table, index, out) -> None:
        args = (out, table, index, np.int64(table.shape[0]))
        self._launch("select_kernel", out.dtype, 1, args)

    # ---- per-channel sums and BatchNorm's passes (kernels/channel.cu) ----------------------------
    def _channel_workspace(self, shape: tuple, dtype: np.dtype, weighted: bool):
        n, channels = shape[0], shape[1]
        spatial = int(np.prod(shape[2:], dtype=np.int64))
        parts = _channel_parts(n * spatial, channels)
        partials = (cupy.empty(channels * parts, dtype), cupy.empty(channels * parts, dtype))
        groups = (cupy.empty(channels * _LANES, dtype), cupy.empty(channels * _LANES, dtype))
        return ChannelWorkspace(*partials, *groups, parts)

    def _channel_sums(self, x, out, workspace, weight, weighted_out) -> None:
        mode = 0 if weight is None else 1
        self._channel_partials(x, x if weight is None else weight, out, workspace, mode)
        self._channel_finish(out, out if weighted_out is None else weighted_out, workspace, mode)

    def _channel_centered_squares(self, x, center, out, workspace) -> None:
        self._channel_partials(x, x, center, workspace, mode=2)
        self._channel_finish(out, out, workspace, mode=2)

    def _channel_partials(self, a, b, center, workspace, mode: int) -> None:
        """Each (channel, part) thread's partial sum (see kernels/channel.cu)."""
        n, channels = a.shape[0], a.shape[1]
        spatial = a.size // max(n * channels, 1)
        index_type, index_name = _index_type(a.size)
        sizes = tuple(index_type(v) for v in (n, channels, spatial, workspace.parts))
        args = (a, b, center, workspace.partial, workspace.partial_b, *sizes, np.int32(mode))
        self._launch("channel_partials_kernel", a.dtype, channels * workspace.parts, args,
                     index_name)  # fmt: skip

    def _channel_finish(self, out, out_b, workspace, mode: int) -> None:
        """Each channel's partials added in `_LANES` strided groups, then the groups in order."""
        ws, with_b, channels = workspace, np.int32(mode == 1), np.int64(out.size)
        regroup = (ws.partial, ws.partial_b, ws.group, ws.group_b, channels, np.int64(ws.parts),
                   np.int64(_LANES), with_b)  # fmt: skip
        self._launch("channel_regroup_kernel", out.dtype, out.size * _LANES, regroup)
        finish = (ws.group, ws.group_b, out, out_b, channels, np.int64(_LANES), with_b)
        self._launch("channel_finish_kernel", out.dtype, out.size, finish)

    def _batchnorm_statistics(self, var, eps, inv_std, count, running, mean, momentum) -> None:
        mode = 0 if count is None else 1 if running is None else 2
        count = 2 if count is None else count  # unused by mode 0; keeps the factors finite
        running_mean, running_var = running if running is not None else (var, var)  # unused
        factors = (1.0 / count, 1.0 - momentum, 1.0 * momentum, count / (count - 1.0) * momentum)
        args = (var if mean is None else mean, var, inv_std, running_mean, running_var,
                *(np.float64(f) for f in factors), np.float64(eps), np.int64(var.size),
                np.int32(mode))  # fmt: skip
        self._launch("batchnorm_statistics_kernel", var.dtype, var.size, args)

    def _batchnorm_normalize(self, x, mean, inv_std, gamma, beta, x_hat, y) -> None:
        self._launch_channelwise(
            "batchnorm_normalize_kernel", x, (x, mean, inv_std, gamma, beta, x_hat, y)
        )

    def _batchnorm_input_grad(self, dy, x_hat, scale, d_beta, d_gamma, count, dx) -> None:
        args = (dy, x_hat, scale, d_beta, d_gamma, np.float64(1.0 / count), dx)
        self._launch_channelwise("batchnorm_input_grad_kernel", dy, args)

    def _launch_channelwise(self, kernel_name: str, x, args: tuple) -> None:
        """One thread per element of the (n, C, ...) x; the sizes follow the arrays."""
        channels = x.shape[1]
        spatial = x.size // max(x.shape[0] * channels, 1)
        index_type, index_name = _index_type(x.size)
        sizes = tuple(index_type(v) for v in (x.size, channels, spatial))
        self._launch(kernel_name, x.dtype, x.size, args + sizes, index_name)

    # ---- the optimizers' updates: one kernel each (kernels/update.cu) ---------------------------
    def sgd_update(self, w, grad, velocity, decay_mask, lr, momentum, weight_decay, nesterov,
                   scratch, decayed) -> None:  # fmt: skip
        args = (w, grad, velocity, decay_mask, lr, np.int64(w.size), np.float64(momentum),
                np.float64(weight_decay), np.int32(bool(nesterov)))  # fmt: skip
        self._launch("sgd_update_kernel", w.dtype, w.size, args)

    def adam_update(self, w, grad, exp_avg, exp_avg_sq, decay_mask, lr, steps, betas, eps,
                    weight_decay, decoupled, scratch, decayed) -> None:  # fmt: skip
        args = (w, grad, exp_avg, exp_avg_sq, decay_mask, lr, steps, np.int64(w.size),
                np.float64(betas[0]), np.float64(betas[1]), np.float64(eps),
                np.float64(weight_decay), np.int32(bool(decoupled)))  # fmt: skip
        self._launch("adam_update_kernel", w.dtype, w.size, args)

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

    # ---- Bias, ReLU and max pooling fused (pooling.cu): any windows, the unfused NaN rules ----
    def fuses_bias_relu_maxpool(self, geom: WindowGeometry) -> bool:
        return True

    def _bias_relu_maxpool_forward(self, x, bias, y, argmax, geom: WindowGeometry) -> bool:
        self._launch_window("bias_relu_maxpool_forward_kernel", y, (x, bias, y, argmax),
                            x.shape[0], geom)  # fmt: skip
        return True  # NaNs follow the unfused kernels' rules in the kernel: no host check

    def _bias_relu_maxpool_backward(self, dy, y, argmax, dx, geom: WindowGeometry) -> None:
        self._launch_window("bias_relu_maxpool_backward_kernel", dx, (dy, y, argmax, dx),
                            dy.shape[0], geom)  # fmt: skip

    def _avgpool_backward(self, dy, dx, geom: WindowGeometry) -> None:
        self._launch_window("avgpool_backward_kernel", dx, (dy, dx), dy.shape[0], geom)

    # ---- random numbers (the kernel hashes its own element index: no workspace) ----------------
    def _uniform(self, out, seed: int, counter, workspace, first: int) -> None:
        counter = self._device_counter(counter)
        args = (out, np.int64(out.size), np.uint32(seed), counter, np.uint32(first))
        self._launch("uniform_kernel", out.dtype, out.size, args)

    # ---- data augmentation (each thread hashes its own image's draws: no workspace) ------------
    def _jitter(self, x, out, pad, flip, seed, counter, workspace, first: int) -> None:
        n, channels, height, width = x.shape
        sizes = tuple(np.int64(v) for v in (n, channels, height, width, pad))
        counter = self._device_counter(counter)
        args = (x, out, *sizes, np.int32(bool(flip)), np.uint32(seed), counter, np.int64(first))
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

    def _device_counter(self, counter):
        """The kernels read counters from device memory; an int is written there first (eager
        use only: a captured step must pass a counter() array, which replays then read)."""
        if isinstance(counter, cupy.ndarray):
            return counter
        if _current_stream().is_capturing():
            raise GraphsUnsupported("a random-number counter given as an int would be frozen "
                                    "into the graph; pass a device counter()")  # fmt: skip
        if self._counter_value is None:
            self._counter_value = cupy.zeros((), dtype=np.int64)
        self._counter_value.fill(int(counter))
        return self._counter_value

    # ---- launching ---------------------------------------------------------------------------
    def _launch_window(self, kernel_name: str, output, args: tuple, n: int, geom) -> None:
        """One thread per output element; the geometry follows the arrays as scalar arguments,
        in 32-bit ints when every array is small enough, else 64-bit."""
        index_type, index_name = _index_type(max(array.size for array in args))
        self._launch(kernel_name, output.dtype, output.size,
                     args + _geometry_args(n, geom, index_type), index_name)  # fmt: skip

    def _launch(self, kernel_name: str, dtype, total: int, args: tuple, index=None) -> None:
        if total == 0:
            return
        types = _CUDA_TYPE[dtype] + (f", {index}" if index else "")
        kernel = _function(self.device_id, f"{kernel_name}<{types}>")
        blocks = min((total + _THREADS_PER_BLOCK - 1) // _THREADS_PER_BLOCK, _MAX_BLOCKS)
        kernel((blocks,), (_THREADS_PER_BLOCK,), args)  # on the current stream


class ChannelWorkspace(NamedTuple):
    """The partial sums of the channel kernels: `parts` per channel (kernels/channel.cu)."""

    partial: cupy.ndarray
    partial_b: cupy.ndarray
    group: cupy.ndarray  # the partials added in _LANES groups per channel
    group_b: cupy.ndarray
    parts: int


def _channel_parts(values_per_channel: int, channels: int) -> int:
    """Threads per channel for a channel sum: about 2^16 threads in all (enough loads in
    flight to keep the memory busy), a multiple of 32, no more than there are values."""
    parts = max(32, min(4096, (65536 // max(channels, 1)) // 32 * 32))
    return max(1, min(parts, -(-values_per_channel // 32) * 32))


def _index_type(largest: int):
    """(numpy type, CUDA spelling) of the kernel index for arrays of up to `largest` elements."""
    return (np.int32, "int") if largest < INT_INDEX_LIMIT else (np.int64, "long long")


class CapturedStep:
    """A step recorded as a CUDA graph: replay() launches all of it at once, on the current
    stream (after whatever work is queued there: the batch's copy, an eager step)."""

    def __init__(self, graph):
        self.graph = graph

    def replay(self) -> None:
        self.graph.launch(_current_stream())


def _refuse_allocation(size: int):
    raise GraphsUnsupported(
        f"the step allocated {size} bytes of device memory while it was being captured; every "
        f"buffer must come from setup"
    )
