"""NumPy (CPU) implementations of the kernels; base.py has checked their arguments.

Every kernel loops over the KH*KW window offsets and moves one strided slab per offset with a
single NumPy call, so the Python overhead is KH*KW calls, not one per pixel. No kernel allocates
an array: results go to `out=` views of buffers allocated in setup.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np

from . import updates
from .base import Backend
from .counter_rng import JITTER_DRAWS_PER_IMAGE, UINT32_RANGE, UNIFORM_SCALE, random_stream_key
from .geometry import WindowGeometry


def _window_slabs(geom: WindowGeometry):
    """For each window offset: (k, input slices, output slices) covering the in-image positions.

    Output position (oh, ow) with offset (kh, kw) reads input (oh*s + kh - pad, ow*s + kw - pad).
    """
    s = geom.stride
    for kh in range(geom.kernel_h):
        oh0, oh1 = geom.valid_range(kh, geom.height, geom.out_h)
        for kw in range(geom.kernel_w):
            ow0, ow1 = geom.valid_range(kw, geom.width, geom.out_w)
            if oh0 >= oh1 or ow0 >= ow1:
                in_sl = out_sl = None
            else:
                h0, w0 = oh0 * s + kh - geom.pad, ow0 * s + kw - geom.pad
                in_sl = (
                    slice(h0, h0 + (oh1 - oh0 - 1) * s + 1, s),
                    slice(w0, w0 + (ow1 - ow0 - 1) * s + 1, s),
                )
                out_sl = (slice(oh0, oh1), slice(ow0, ow1))
            yield kh * geom.kernel_w + kw, kh, kw, in_sl, out_sl


class PoolWorkspace(NamedTuple):
    """What NumpyBackend's max pooling writes per call: two arrays of the pooled output's shape.

    Flags and scratch keep the loops branch-free (masked `where=` copies on random masks are ~8x
    slower than arithmetic).
    """

    flags: np.ndarray  # int32: 1 where a window offset is the new maximum / the argmax
    routed: np.ndarray  # the output dtype: the share of dy routed to one window offset


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
    """NumPy on the CPU. With threads > 1 a Net's steps run on that many worker threads (one
    slice of the batch each, see workers.py), the optimizers' updates are split over them, and
    BLAS is held to one thread so the two kinds of threads do not compete."""

    name = "cpu"
    xp = np

    def __init__(self, threads: int = 1):
        if isinstance(threads, bool) or int(threads) != threads or threads < 1:
            raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
        self.device = "cpu"
        self.threads = int(threads)
        self.pool = None
        if self.threads > 1:
            self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="convnet-cpu")
            _single_threaded_blas()

    def in_chunks(self, size: int, job) -> None:
        """job(chunk) for `threads` contiguous slices of range(size), at once; waits for all."""
        if self.pool is None or size < 2 * self.threads:
            job(slice(0, size))
            return
        bounds = [size * k // self.threads for k in range(self.threads + 1)]
        chunks = [slice(lo, hi) for lo, hi in zip(bounds, bounds[1:])]
        for future in [self.pool.submit(job, chunk) for chunk in chunks]:
            future.result()

    # ---- the optimizers' updates, split over the threads (elementwise: the same bits) ----------
    def sgd_update(self, w, grad, velocity, decay_mask, lr, momentum, weight_decay, nesterov,
                   scratch, decayed) -> None:  # fmt: skip
        def chunk(part):
            updates.sgd_update(np, w[part], grad[part], velocity[part], decay_mask[part], lr,
                               momentum, weight_decay, nesterov, scratch[part],
                               None if decayed is None else decayed[part])  # fmt: skip

        self.in_chunks(w.size, chunk)

    def adam_update(self, w, grad, exp_avg, exp_avg_sq, decay_mask, lr, steps, betas, eps,
                    weight_decay, decoupled, scratch, decayed) -> None:  # fmt: skip
        def chunk(part):
            decayed_part = None if decayed is None else decayed[part]
            updates.adam_update(np, w[part], grad[part], exp_avg[part], exp_avg_sq[part],
                                decay_mask[part], lr, steps, betas, eps, weight_decay, decoupled,
                                scratch[part], decayed_part)  # fmt: skip

        self.in_chunks(w.size, chunk)

    def copy_from_host(self, host_array, out):
        np.copyto(out, host_array, casting="same_kind")

    def memory_in_use(self) -> int:
        return 0  # NumPy has no pool; tests use tracemalloc instead

    def describe(self) -> str:
        threads = f", {self.threads} threads" if self.threads > 1 else ""
        return f"cpu (NumPy {np.__version__}, {os.cpu_count()} cores{threads})"

    # ---- convolution lowering -------------------------------------------------------------
    def _im2col(self, x, col, geom: WindowGeometry) -> None:
        n = x.shape[0]
        # col rows are (c, kh, kw), columns (image, oh, ow): view it as 6-D to write slabs.
        col6 = col.reshape(geom.channels, geom.kernel_h, geom.kernel_w, n, geom.out_h, geom.out_w)
        x_cn = x.transpose(1, 0, 2, 3)  # (C, n, H, W) view, matches col6[:, kh, kw]
        for _, kh, kw, in_sl, out_sl in _window_slabs(geom):
            slab = col6[:, kh, kw]
            if in_sl is None:
                slab.fill(0)
                continue
            _zero_outside(slab, out_sl, geom)
            np.copyto(slab[:, :, out_sl[0], out_sl[1]], x_cn[:, :, in_sl[0], in_sl[1]])

    def _col2im(self, col, dx, geom: WindowGeometry) -> None:
        n = dx.shape[0]
        col6 = col.reshape(geom.channels, geom.kernel_h, geom.kernel_w, n, geom.out_h, geom.out_w)
        dx.fill(0)
        dx_cn = dx.transpose(1, 0, 2, 3)
        for _, kh, kw, in_sl, out_sl in _window_slabs(geom):
            if in_sl is None:
                continue
            target = dx_cn[:, :, in_sl[0], in_sl[1]]
            np.add(target, col6[:, kh, kw, :, out_sl[0], out_sl[1]], out=target)

    # ---- pooling ---------------------------------------------------------------------------
    def _pool_workspace(self, out_shape: tuple, dtype: np.dtype) -> PoolWorkspace:
        return PoolWorkspace(np.empty(out_shape, np.int32), np.empty(out_shape, dtype))

    def _maxpool_forward(self, x, y, argmax, workspace, geom: WindowGeometry) -> None:
        n = x.shape[0]
        flags = workspace.flags[:n]
        slabs = list(_window_slabs(geom))
        if geom.pad == 0:  # offset (0, 0) reads every window: start from it
            first_in = slabs.pop(0)[3]
            np.copyto(y, x[:, :, first_in[0], first_in[1]])
        else:
            y.fill(-np.inf)
        argmax.fill(0)
        for k, _, _, in_sl, out_sl in slabs:
            if in_sl is None:
                continue
            src = x[:, :, in_sl[0], in_sl[1]]
            best = y[:, :, out_sl[0], out_sl[1]]
            is_new_max = flags[:, :, out_sl[0], out_sl[1]]
            np.greater(src, best, out=is_new_max)  # strict: the first maximum wins ties
            np.maximum(best, src, out=best)
            # Offsets come in increasing k, so "k where new, else keep" is max(argmax, k * new).
            np.multiply(is_new_max, k, out=is_new_max)
            np.maximum(
                argmax[:, :, out_sl[0], out_sl[1]],
                is_new_max,
                out=argmax[:, :, out_sl[0], out_sl[1]],
            )

    def _maxpool_backward(self, dy, argmax, dx, workspace, geom: WindowGeometry) -> None:
        n = dy.shape[0]
        came_from_k, routed = workspace.flags[:n], workspace.routed[:n]
        if _windows_tile_exactly(geom):
            # Each pixel is in exactly one window: one write per slab, no zero fill, no adds.
            for k, _, _, in_sl, _ in _window_slabs(geom):
                np.equal(argmax, k, out=came_from_k)
                np.multiply(dy, came_from_k, out=dx[:, :, in_sl[0], in_sl[1]])
            return
        dx.fill(0)
        for k, _, _, in_sl, out_sl in _window_slabs(geom):
            if in_sl is None:
                continue
            from_k = came_from_k[:, :, out_sl[0], out_sl[1]]
            share = routed[:, :, out_sl[0], out_sl[1]]
            np.equal(argmax[:, :, out_sl[0], out_sl[1]], k, out=from_k)
            np.multiply(dy[:, :, out_sl[0], out_sl[1]], from_k, out=share)
            target = dx[:, :, in_sl[0], in_sl[1]]
            np.add(target, share, out=target)

    def _avgpool_forward(self, x, y, geom: WindowGeometry) -> None:
        y.fill(0)
        for _, _, _, in_sl, out_sl in _window_slabs(geom):
            if in_sl is None:
                continue
            acc = y[:, :, out_sl[0], out_sl[1]]
            np.add(acc, x[:, :, in_sl[0], in_sl[1]], out=acc)
        np.multiply(y, 1.0 / (geom.kernel_h * geom.kernel_w), out=y)

    def _avgpool_backward(self, dy, dx, geom: WindowGeometry) -> None:
        dx.fill(0)
        for _, _, _, in_sl, out_sl in _window_slabs(geom):
            if in_sl is None:
                continue
            target = dx[:, :, in_sl[0], in_sl[1]]
            np.add(target, dy[:, :, out_sl[0], out_sl[1]], out=target)
        np.multiply(dx, 1.0 / (geom.kernel_h * geom.kernel_w), out=dx)

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


def _windows_tile_exactly(geom: WindowGeometry) -> bool:
    """Windows side by side with no gap, overlap or padding (the common 2x2 stride-2 pool)."""
    return (
        geom.pad == 0
        and geom.stride == geom.kernel_h == geom.kernel_w
        and geom.height == geom.out_h * geom.stride
        and geom.width == geom.out_w * geom.stride
    )


def _zero_outside(slab, out_sl, geom: WindowGeometry) -> None:
    """Zero the border of a (C, n, OH, OW) slab that falls outside out_sl (the padding reads)."""
    rows, cols = out_sl
    if rows.start > 0:
        slab[:, :, : rows.start].fill(0)
    if rows.stop < geom.out_h:
        slab[:, :, rows.stop :].fill(0)
    if cols.start > 0:
        slab[:, :, rows, : cols.start].fill(0)
    if cols.stop < geom.out_w:
        slab[:, :, rows, cols.stop :].fill(0)


def _single_threaded_blas() -> None:
    """Hold BLAS (OpenBLAS, MKL, ...) to one thread for the rest of the process: the workers
    are the parallelism, and a second pool of spinning BLAS threads beside them only competes."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # without threadpoolctl, BLAS keeps its own threads (slower, correct)
        return
    threadpool_limits(limits=1, user_api="blas")
