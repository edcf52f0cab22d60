"""The CPU backend: NumPy arrays; base.py has checked the kernels' arguments.

The window kernels are in cpu_windows.py, with compiled ones (cpu_jit.py, numba, where installed)
for 2x2 max pooling, the fused Bias -> ReLU -> MaxPool2D stage, the SGD and Adam updates and
BatchNorm's elementwise passes; convolution runs a few images at a time, lowered channels-last
(inputs of 4 channels or more; conv_lowering.py), or with numba, where enough channels make it
pay, as Winograd's minimal filtering (winograd.py); a Net's step may run on several threads
(workers.py). No kernel allocates an array: results go to `out=` views of buffers allocated in
setup.
"""

from __future__ import annotations

import importlib
import os
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np

from . import conv_lowering, cpu_windows, updates, winograd
from .base import Backend
from .counter_rng import JITTER_DRAWS_PER_IMAGE, UINT32_RANGE, UNIFORM_SCALE, random_stream_key
from .geometry import WindowGeometry

# A block of images' lowered matrix: small enough to stay in a core's cache (measured on a
# Zen 3 core: blocks of 1-3 images (1-4 MiB) run conv2 of simple-cnn fastest).
LOWERED_BLOCK_BYTES = 4 << 20
# Fewer input channels than this: the whole batch lowered channels-first. Channels-last, a
# window of a one-channel image is KH runs of only KW values, and the output's transpose back to
# channels-first costs more than it saves (simple-cnn's first conv: 20 against 13 ms a step).
CHANNELS_LAST_MIN = 4
# Winograd convolution's blocks (winograd.py): V and M of 4 images of simple-cnn's second conv
# (2.7 MB) ran fastest on a Zen 3 core, against 8 (5.4 MB: forward 26 against 24 ms).
WINOGRAD_BLOCK_BYTES = 3 << 20


class UniformWorkspace(NamedTuple):
    """What NumpyBackend.uniform() writes per call, allocated once for up to S elements."""

    index: np.ndarray  # (S,) uint32: the element indices 0..S-1
    bits: np.ndarray  # (S,) uint32: the hash state, then the 24-bit draws
    scratch: np.ndarray  # (S,) uint32: fmix32's shift scratch


class JitterWorkspace(NamedTuple):
    """What NumpyBackend.jitter() writes per call, allocated once for batches of up to B images."""

    index: np.ndarray  # (B, 3) uint32: the draw indices 3i + k
    bits: np.ndarray  # (B, 3) uint32: the hash state, then the 24-bit draws
    scratch: np.ndarray  # (B, 3) uint32: fmix32's shift scratch
    shifts: np.ndarray  # (B, 2) int64: (dy, dx) per image
    flipped: np.ndarray  # (B,) uint32: 1 where the image is mirrored


class NumpyBackend(Backend):
    """NumPy on the CPU.

    threads=None (the library's default): a step runs on the calling thread and BLAS uses the
    threads it is configured for. threads=T: a Net's steps run on T worker threads (one slice of
    the batch each, see workers.py), the optimizers' updates are split over them, and BLAS is
    held to one thread, for the whole process, so that the two kinds of threads do not compete.
    jit: whether to run the compiled kernels of cpu_jit.py (numba, the `cpu-jit` extra) where
    they apply; None: where numba imports and CONVNET_GPU_JIT is not 0.
    winograd: whether the convolutions winograd.applies() accepts run as Winograd's (winograd.py;
    it needs the compiled kernels, so never without numba); None: unless CONVNET_GPU_WINOGRAD
    is 0. With it off, a step gives the same bits with and without numba; on, results differ
    from those within float32 rounding (a few 1e-6 of the largest value).
    """

    name = "cpu"
    xp = np

    def __init__(self, threads: int | None = None, jit: bool | None = None,
                 winograd: bool | None = None):  # fmt: skip
        if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool)
                                    or threads < 1):  # fmt: skip
            raise ValueError(f"threads must be a whole number >= 1, got {threads!r}")
        self.device = "cpu"
        self.jit = load_jit(jit)  # compiled kernels (cpu_jit.py), or None: NumPy's alone
        if winograd is None:
            winograd = os.environ.get("CONVNET_GPU_WINOGRAD", "1") != "0"
        # Winograd convolution's compiled tile transforms (winograd_kernels.py), when it runs
        self.winograd_kernels = None
        if winograd and self.jit is not None:
            self.winograd_kernels = importlib.import_module(f"{__package__}.winograd_kernels")
        self.threads = threads or 1
        self.pool = None
        self.blas_single = threads is not None
        if self.blas_single:
            single_threaded_blas()
        if self.threads > 1:
            self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="convnet-cpu")

    def in_chunks(self, size: int, job) -> None:
        """job(chunk) for `threads` contiguous slices of range(size), at once; waits for all."""
        if self.pool is None or size < 2 * self.threads:
            job(slice(0, size))
            return
        chunks = split_evenly(size, self.threads)
        for future in [self.pool.submit(job, chunk) for chunk in chunks]:
            future.result()

    # ---- the optimizers' updates, split over the threads (elementwise: the same bits) ----------
    def sgd_update(self, w, grad, velocity, decay_mask, lr, momentum, weight_decay, nesterov,
                   scratch, decayed) -> None:  # fmt: skip
        def chunk(part):
            updates.sgd_update(np, w[part], grad[part], velocity[part], decay_mask[part], lr,
                               momentum, weight_decay, nesterov, scratch[part],
                               None if decayed is None else decayed[part])  # fmt: skip

        def compiled_chunk(part):  # the same roundings in one pass (cpu_jit.py)
            as_w = w.dtype.type  # what NumPy rounds the Python floats to
            self.jit.sgd_update(w[part], grad[part], velocity[part], decay_mask[part], lr,
                                as_w(momentum), as_w(weight_decay), nesterov, bool(momentum),
                                bool(weight_decay))  # fmt: skip

        self.in_chunks(w.size, chunk if self.jit is None else compiled_chunk)

    def adam_update(self, w, grad, exp_avg, exp_avg_sq, decay_mask, lr, steps, betas, eps,
                    weight_decay, decoupled, scratch, decayed) -> None:  # fmt: skip
        def chunk(part):
            decayed_part = None if decayed is None else decayed[part]
            updates.adam_update(np, w[part], grad[part], exp_avg[part], exp_avg_sq[part],
                                decay_mask[part], lr, steps, betas, eps, weight_decay, decoupled,
                                scratch[part], decayed_part)  # fmt: skip

        if self.jit is None:
            self.in_chunks(w.size, chunk)
            return
        scalars = updates.adam_scalars(betas, int(steps), eps, weight_decay, w.dtype)

        def compiled_chunk(part):  # the same roundings in one pass (cpu_jit.py)
            self.jit.adam_update(w[part], grad[part], exp_avg[part], exp_avg_sq[part],
                                 decay_mask[part], lr, scalars, bool(weight_decay),
                                 bool(decoupled))  # fmt: skip

        self.in_chunks(w.size, compiled_chunk)

    # ---- BatchNorm's elementwise passes: one compiled pass each, where the arrays allow -------
    def _batchnorm_normalize(self, x, mean, inv_std, gamma, beta, x_hat, y) -> None:
        if not _one_pass_fits(self.jit, x, x_hat, y):
            return super()._batchnorm_normalize(x, mean, inv_std, gamma, beta, x_hat, y)
        x3, x_hat3, y3 = _by_channel(x, x_hat, y)
        self.jit.batchnorm_normalize(x3, mean, inv_std, gamma, beta, x_hat3, y3)

    def _batchnorm_input_grad(self, dy, x_hat, scale, d_beta, d_gamma, count, dx) -> None:
        if not _one_pass_fits(self.jit, dy, x_hat, dx):
            return super()._batchnorm_input_grad(dy, x_hat, scale, d_beta, d_gamma, count, dx)
        dy3, x_hat3, dx3 = _by_channel(dy, x_hat, dx)
        inv_count = dy.dtype.type(1.0 / count)  # as NumPy rounds the Python float
        self.jit.batchnorm_input_grad(dy3, x_hat3, scale, d_beta, d_gamma, inv_count, dx3)

    def copy_from_host(self, host_array, out):
        np.copyto(out, host_array, casting="same_kind")

    def memory_in_use(self) -> int:
        return 0  # NumPy has no pool; tests use tracemalloc instead

    def describe(self) -> str:
        threads = f", {self.threads} thread{'s' if self.threads > 1 else ''}"
        if not self.blas_single:  # threads=None: one thread, BLAS as configured
            threads = ""
        jit = "" if self.jit is None else f", numba {self.jit.numba.__version__}"
        if self.winograd_kernels is not None:  # rows measured with and without it differ
            jit += ", Winograd"
        return f"cpu (NumPy {np.__version__}{jit}, {os.cpu_count()} cores{threads})"

    # ---- convolution: Winograd's (winograd.py) where it applies and numba is there, else
    # blocks of images lowered channels-last, in cache (conv_lowering.py), or for inputs of few
    # channels the whole batch lowered channels-first (base.py's default) ----------------------
    def _conv_workspace(self, geom, out_channels: int, batch_size: int, dtype: np.dtype):
        if self.winograd_kernels and winograd.applies(geom, out_channels):
            return winograd.workspace(geom, out_channels, batch_size, dtype, WINOGRAD_BLOCK_BYTES)
        if geom.channels < CHANNELS_LAST_MIN:
            return super()._conv_workspace(geom, out_channels, batch_size, dtype)
        return conv_lowering.block_workspace(
            geom, out_channels, batch_size, dtype, LOWERED_BLOCK_BYTES, self.jit is not None
        )

    def _conv_forward(self, x, weight, y, workspace, geom: WindowGeometry) -> None:
        if isinstance(workspace, winograd.WinogradWorkspace):
            return winograd.forward(x, weight, y, workspace, geom, self.winograd_kernels)
        if not isinstance(workspace, conv_lowering.BlockWorkspace):
            return super()._conv_forward(x, weight, y, workspace, geom)
        conv_lowering.blocked_forward(x, weight, y, workspace, geom)

    def _conv_backward(self, x, weight, dy, d_weight, dx, workspace, geom) -> None:
        if isinstance(workspace, winograd.WinogradWorkspace):
            return winograd.backward(x, weight, dy, d_weight, dx, workspace, geom,
                                     self.winograd_kernels)  # fmt: skip
        if not isinstance(workspace, conv_lowering.BlockWorkspace):
            return super()._conv_backward(x, weight, dy, d_weight, dx, workspace, geom)
        # the workspace was made for the compiled add-back exactly where there is one
        add_back = self.jit.conv_add_back if self.jit is not None else None
        conv_lowering.blocked_backward(x, weight, dy, d_weight, dx, workspace, geom, add_back)

    # ---- windows: the kernels in cpu_windows.py ------------------------------------------------
    def _im2col(self, x, col, geom: WindowGeometry) -> None:
        cpu_windows.im2col(x, col, geom)

    def _col2im(self, col, dx, geom: WindowGeometry) -> None:
        cpu_windows.col2im(col, dx, geom)

    def _pool_workspace(self, out_shape: tuple, dtype: np.dtype):
        return cpu_windows.pool_workspace(out_shape, dtype)

    def _maxpool_forward(self, x, y, argmax, workspace, geom: WindowGeometry) -> None:
        if self.jit is not None and geom.kernel_h == 2 and cpu_windows.windows_tile_exactly(geom):
            self.jit.maxpool2x2_forward(x, y, argmax)
        else:
            cpu_windows.maxpool_forward(x, y, argmax, workspace, geom)

    def _maxpool_backward(self, dy, argmax, dx, workspace, geom: WindowGeometry) -> None:
        if self.jit is not None and cpu_windows.windows_tile_exactly(geom):
            self.jit.maxpool_tiled_backward(dy, argmax, dx, geom.kernel_h)
        else:
            cpu_windows.maxpool_backward(dy, argmax, dx, workspace, geom)

    # ---- fused: the compiled 2x2 kernels of cpu_jit.py ------------------------------------------
    def fuses_bias_relu_maxpool(self, geom: WindowGeometry) -> bool:
        return (
            self.jit is not None and geom.kernel_h == 2 and cpu_windows.windows_tile_exactly(geom)
        )

    def _bias_relu_maxpool_forward(self, x, bias, y, argmax, geom: WindowGeometry) -> bool:
        return not self.jit.bias_relu_maxpool2x2_forward(x, bias, y, argmax)

    def _bias_relu_maxpool_backward(self, dy, y, argmax, dx, geom: WindowGeometry) -> None:
        self.jit.bias_relu_maxpool2x2_backward(dy, y, argmax, dx)

    def _avgpool_forward(self, x, y, geom: WindowGeometry) -> None:
        cpu_windows.avgpool_forward(x, y, geom)

    def _avgpool_backward(self, dy, dx, geom: WindowGeometry) -> None:
        cpu_windows.avgpool_backward(dy, dx, geom)

    # ---- random numbers --------------------------------------------------------------------
    def _uniform_workspace(self, size: int) -> UniformWorkspace:
        return UniformWorkspace(
            np.arange(size, dtype=np.uint32), np.empty(size, np.uint32), np.empty(size, np.uint32)
        )

    def _uniform(self, out, seed: int, counter: int, workspace, first: int) -> None:
        if workspace is None:
            workspace = self.uniform_workspace(out.shape)
        size = out.size
        if size > workspace.index.size:
            raise ValueError(
                f"the uniform workspace holds {workspace.index.size} elements, out has {size}"
            )
        index, bits, scratch = (
            workspace.index[:size],
            workspace.bits[:size],
            workspace.scratch[:size],
        )
        if first:  # element i draws as element first + i
            index = np.add(index, first, out=bits)
        _counter_hash(index, random_stream_key(seed, int(counter) % UINT32_RANGE), bits, scratch)
        np.right_shift(bits, 8, out=bits)  # the top 24 bits
        np.copyto(out, bits.reshape(out.shape), casting="same_kind")  # exact: < 2**24
        np.multiply(out, UNIFORM_SCALE, out=out)

    # ---- data augmentation ------------------------------------------------------------------
    def _jitter_workspace(self, batch_size: int) -> JitterWorkspace:
        draws = (batch_size, JITTER_DRAWS_PER_IMAGE)
        index = np.arange(batch_size * JITTER_DRAWS_PER_IMAGE, dtype=np.uint32).reshape(draws)
        return JitterWorkspace(
            index,
            np.empty(draws, np.uint32),
            np.empty(draws, np.uint32),
            np.empty((batch_size, 2), np.int64),
            np.empty(batch_size, np.uint32),
        )

    def _jitter(self, x, out, pad, flip, seed, counter, workspace, first: int) -> None:
        n, _, height, width = x.shape
        if workspace is None:
            workspace = self.jitter_workspace(n)
        if n > len(workspace.index):
            raise ValueError(
                f"the jitter workspace holds draws for {len(workspace.index)} images, x has {n}"
            )
        key = random_stream_key(seed, int(counter) % UINT32_RANGE)
        shifts, flipped = _jitter_draws(n, pad, flip, key, workspace, first)
        if pad:
            out.fill(0)  # the border the shift uncovers; the copies below write the rest
        for i, ((dy, dx), mirrored) in enumerate(zip(shifts.tolist(), flipped.tolist())):
            # Mirroring the output's columns turns the flipped case into the plain shift:
            # out[..., W-1-w] = x[..., w + dx]  is  mirrored_out[..., w] = x[..., w + dx].
            target = out[i, :, :, ::-1] if mirrored else out[i]
            (rows_out, rows_in), (cols_out, cols_in) = _shift(dy, height), _shift(dx, width)
            np.copyto(target[:, rows_out, cols_out], x[i, :, rows_in, cols_in])


def _jitter_draws(n: int, pad: int, flip: bool, key: int, workspace: JitterWorkspace, first=0):
    """The (n, 2) int64 shifts (dy, dx) and (n,) flip flags of counter_rng.py's layout (views),
    of images first .. first + n - 1."""
    index, bits, scratch = workspace.index[:n], workspace.bits[:n], workspace.scratch[:n]
    shifts, flipped = workspace.shifts[:n], workspace.flipped[:n]
    if first:
        index = np.add(index, JITTER_DRAWS_PER_IMAGE * first, out=bits)
    _counter_hash(index, key, bits, scratch)
    np.right_shift(bits, 8, out=bits)  # u: the top 24 bits of each draw
    np.copyto(shifts, bits[:, :2])  # int64: u * (2*pad + 1) < 2**55 fits
    np.multiply(shifts, 2 * pad + 1, out=shifts)
    np.right_shift(shifts, 24, out=shifts)  # floor(u * (2*pad + 1) / 2**24) in [0, 2*pad]
    np.subtract(shifts, pad, out=shifts)
    if flip:
        np.right_shift(bits[:, 2], 23, out=flipped)  # the top bit of u: u >= 2**23
    else:
        flipped.fill(0)
    return shifts, flipped


def _shift(offset: int, size: int) -> tuple[slice, slice]:
    """(output slice, input slice) along one axis of out[j] = x[j + offset], both in [0, size)."""
    lo, hi = max(0, -offset), max(0, min(size, size - offset))  # j with 0 <= j + offset < size
    if lo >= hi:
        return slice(0, 0), slice(0, 0)  # shifted out entirely: the zero fill stays
    return slice(lo, hi), slice(lo + offset, hi + offset)


def _counter_hash(index, key: int, bits, scratch) -> None:
    """bits = fmix32(fmix32(index ^ key) + key), counter_rng.py's counter_hash on uint32 arrays."""
    np.bitwise_xor(index, key, out=bits)
    _fmix32(bits, scratch)
    np.add(bits, key, out=bits)  # uint32: wraps mod 2**32
    _fmix32(bits, scratch)


def _fmix32(h, scratch) -> None:
    """MurmurHash3's 32-bit finalizer, in place on a uint32 array (see counter_rng.py)."""
    for shift, multiplier in ((16, 0x85EBCA6B), (13, 0xC2B2AE35)):
        np.right_shift(h, shift, out=scratch)
        np.bitwise_xor(h, scratch, out=h)
        np.multiply(h, multiplier, out=h)  # wraps mod 2**32
    np.right_shift(h, 16, out=scratch)
    np.bitwise_xor(h, scratch, out=h)


def _one_pass_fits(jit, *arrays) -> bool:
    """Whether the compiled per-channel passes can take these (n, C, ...) arrays: numba is
    there, and every array is C-contiguous (a view of its (n, C, S) shape, no copy) and not
    empty (a worker past a short batch's end: NumPy's passes do nothing as well)."""
    return jit is not None and all(a.flags.c_contiguous and a.size for a in arrays)


def _by_channel(*arrays):
    """(n, C, ...) C-contiguous arrays as (n, C, S) views."""
    return tuple(array.reshape(array.shape[0], array.shape[1], -1) for array in arrays)


def split_evenly(size: int, parts: int) -> list[slice]:
    """range(size) as `parts` contiguous slices whose lengths differ by at most one."""
    bounds = [size * k // parts for k in range(parts + 1)]
    return [slice(lo, hi) for lo, hi in zip(bounds, bounds[1:])]


def load_jit(jit: bool | None):
    """The compiled kernels (cpu_jit.py) or None. jit=None: where numba imports and
    CONVNET_GPU_JIT is not 0; True: or an ImportError that says how to install them."""
    if jit is False or (jit is None and os.environ.get("CONVNET_GPU_JIT", "1") == "0"):
        return None
    try:  # import_module, not `from . import`: a failed import is retried, not cached as absent
        cpu_jit = importlib.import_module(f"{__package__}.cpu_jit")
    except Exception as exc:  # numba missing, or too old or too new for this NumPy
        if jit:
            raise ImportError(
                f"compiled CPU kernels need numba ({exc}); install them with "
                f"pip install 'convnet-gpu[cpu-jit]'"
            ) from None
        return None
    return cpu_jit


def single_threaded_blas() -> None:
    """Hold BLAS (OpenBLAS, MKL, ...) to one thread for the rest of the process: the workers
    are the parallelism, and a second pool of spinning BLAS threads beside them only competes."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
