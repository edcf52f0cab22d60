"""The CPU's window kernels: convolution lowering and pooling in NumPy, one slab per offset.

Every kernel loops over the KH*KW window offsets and moves one strided slab per offset with a
single NumPy call, so the Python overhead is KH*KW calls, not one per pixel. No kernel allocates
an array: results go to `out=` views of buffers allocated in setup.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .geometry import WindowGeometry


def window_slabs(geom: WindowGeometry):
    """For each window offset: (k, kh, kw, input slices, output slices) covering the in-image
    positions (None, None where the offset reads only padding).

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


# ---- convolution lowering, the whole batch (conv_lowering.py lowers blocks channels-last) --------
def im2col(x, col, geom: WindowGeometry) -> None:
    """col (C*KH*KW, n*OH*OW), a row per (c, kh, kw), a column per output pixel."""
    n = x.shape[0]
    # View col as (C, KH, KW, n, OH, OW) to write one slab per window offset.
    col6 = col.reshape(geom.channels, geom.kernel_h, geom.kernel_w, n, geom.out_h, geom.out_w)
    x_cn = x.transpose(1, 0, 2, 3)  # (C, n, H, W) view, matches col6[:, kh, kw]
    for _, kh, kw, in_sl, out_sl in window_slabs(geom):
        slab = col6[:, kh, kw]
        if in_sl is None:
            slab.fill(0)
            continue
        _zero_outside(slab, out_sl, geom)
        np.copyto(slab[:, :, out_sl[0], out_sl[1]], x_cn[:, :, in_sl[0], in_sl[1]])


def col2im(col, dx, geom: WindowGeometry) -> None:
    """The adjoint of im2col: dx (n, C, H, W) = the sum of the entries read from each pixel."""
    n = dx.shape[0]
    col6 = col.reshape(geom.channels, geom.kernel_h, geom.kernel_w, n, geom.out_h, geom.out_w)
    dx.fill(0)
    dx_cn = dx.transpose(1, 0, 2, 3)
    for _, kh, kw, in_sl, out_sl in window_slabs(geom):
        if in_sl is None:
            continue
        target = dx_cn[:, :, in_sl[0], in_sl[1]]
        np.add(target, col6[:, kh, kw, :, out_sl[0], out_sl[1]], out=target)


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


# ---- pooling ------------------------------------------------------------------------------------
class PoolWorkspace(NamedTuple):
    """What max pooling writes per call: two arrays of the pooled output's shape.

    Flags and scratch keep the loops branch-free (masked `where=` copies on random masks are ~8x
    slower than arithmetic).
    """

    flags: np.ndarray  # int32: 1 where a window offset is the new maximum / the argmax
    routed: np.ndarray  # the output dtype: the share of dy routed to one window offset


def pool_workspace(out_shape: tuple, dtype) -> PoolWorkspace:
    return PoolWorkspace(np.empty(out_shape, np.int32), np.empty(out_shape, dtype))


def maxpool_forward(x, y, argmax, workspace: PoolWorkspace, geom: WindowGeometry) -> None:
    n = x.shape[0]
    flags = workspace.flags[:n]
    slabs = list(window_slabs(geom))
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
            argmax[:, :, out_sl[0], out_sl[1]], is_new_max, out=argmax[:, :, out_sl[0], out_sl[1]]
        )


def maxpool_backward(dy, argmax, dx, workspace: PoolWorkspace, geom: WindowGeometry) -> None:
    n = dy.shape[0]
    came_from_k, routed = workspace.flags[:n], workspace.routed[:n]
    if windows_tile_exactly(geom):
        # Each pixel is in exactly one window: one write per slab, no zero fill, no adds.
        for k, _, _, in_sl, _ in window_slabs(geom):
            np.equal(argmax, k, out=came_from_k)
            np.multiply(dy, came_from_k, out=dx[:, :, in_sl[0], in_sl[1]])
        return
    dx.fill(0)
    for k, _, _, in_sl, out_sl in window_slabs(geom):
        if in_sl is None:
            continue
        from_k = came_from_k[:, :, out_sl[0], out_sl[1]]
        share = routed[:, :, out_sl[0], out_sl[1]]
        np.equal(argmax[:, :, out_sl[0], out_sl[1]], k, out=from_k)
        np.multiply(dy[:, :, out_sl[0], out_sl[1]], from_k, out=share)
        target = dx[:, :, in_sl[0], in_sl[1]]
        np.add(target, share, out=target)


def avgpool_forward(x, y, geom: WindowGeometry) -> None:
    y.fill(0)
    for _, _, _, in_sl, out_sl in window_slabs(geom):
        if in_sl is None:
            continue
        acc = y[:, :, out_sl[0], out_sl[1]]
        np.add(acc, x[:, :, in_sl[0], in_sl[1]], out=acc)
    np.multiply(y, 1.0 / (geom.kernel_h * geom.kernel_w), out=y)


def avgpool_backward(dy, dx, geom: WindowGeometry) -> None:
    dx.fill(0)
    for _, _, _, in_sl, out_sl in window_slabs(geom):
        if in_sl is None:
            continue
        target = dx[:, :, in_sl[0], in_sl[1]]
        np.add(target, dy[:, :, out_sl[0], out_sl[1]], out=target)
    np.multiply(dx, 1.0 / (geom.kernel_h * geom.kernel_w), out=dx)


def windows_tile_exactly(geom: WindowGeometry) -> bool:
    """Windows side by side with no gap, overlap or padding (the common 2x2 stride-2 pool)."""
    return (
        geom.pad == 0
        and geom.stride == geom.kernel_h == geom.kernel_w
        and geom.height == geom.out_h * geom.stride
        and geom.width == geom.out_w * geom.stride
    )
