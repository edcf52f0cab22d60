"""Convolution as matrix products ("lowering"), for the whole batch at once or in blocks.

Each output pixel is the dot product of the weight (F, C, KH, KW) with the KH x KW x C input
pixels its window covers, so copying every window's pixels into a row of a "lowered" matrix
turns the convolution into one matrix product (im2col), and its gradients into two more:
    y = lowered(x) @ weight.T,  d_weight = dy.T @ lowered(x),  d_lowered = dy @ weight,
d_lowered's entries then added back onto the pixels they were read from (col2im) for dx.

Whole batch (the default, what a GPU wants: one GEMM of n*OH*OW columns): lowered channels-first
(a row per (c, kh, kw), a column per pixel, as cpu_windows.im2col), kept from forward for
backward, the GEMM's (F, n, OH*OW) output transposed into y's (n, F, OH, OW). Or the same in
chunks of images sized to stay in cache (Caffe's way at large batches; CUDA: the
CONVNET_GPU_CONV_CHUNK_MIB setting, cupy_backend.py), each lowered again in backward.

Blocks (the CPU's): a few images at a time, their lowered matrix small enough to stay in the
core's cache between the copy and the GEMM that reads it (the whole batch's is tens of MB,
written to memory and read back); recomputed in backward instead of kept. Each block is first
turned channels-last (a small transpose, in cache), so that a window's pixels are KH runs of
KW*C contiguous values: lowering channels-first copies runs of OW values, a dozen in a small
image, and was 6-7x slower. dx: d_col = dy @ weight^T (a GEMM with KH*KW*C columns), added
back onto the pixels channels-last, window offset by window offset: by a compiled kernel in one
pass where numba is (cpu_jit.conv_add_back), else by KH*KW NumPy adds over a padded copy, in
the same order, so both give the same bits. (Taking a stride-1 dx as the correlation of dy
with the flipped weight instead, lowered like x, needs no add-back but a GEMM with only C
columns and a lowered dy twice the size of x's: 8-15% slower than the compiled add-back for
simple-cnn's second conv, and it would give other bits than the NumPy kernels.)
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..errors import UserError
from .geometry import WindowGeometry

CHUNK_ENV_VAR = "CONVNET_GPU_CONV_CHUNK_MIB"  # the CUDA backend's chunks (cupy_backend.py)


def flat_view(buffer, shape):
    """The first prod(shape) values of a flat buffer, viewed as `shape` (no copy)."""
    size = 1
    for dim in shape:
        size *= dim
    return buffer[:size].reshape(shape)


# ---- the batch lowered channels-first, whole or in chunks ----------------------------------------
class LoweredWorkspace(NamedTuple):
    col: object  # flat, holds (C*KH*KW, b*OH*OW) for a chunk of b images; d_col in backward
    out_t: object  # flat, holds (F, b*OH*OW): the GEMM's output, then dy transposed
    images: int  # images per chunk: the whole batch unless chunk_bytes was given
    d_weight_share: object | None  # (F, C*KH*KW): a chunk's share of d_weight, when chunked


def images_per_chunk(geom: WindowGeometry, out_channels, itemsize, chunk_bytes, batch_size):
    """Images whose lowered matrix and GEMM output each fit in chunk_bytes (at least one): a
    chunk's two buffers together take up to twice that."""
    per_image = max(geom.col_rows, out_channels) * geom.out_h * geom.out_w * itemsize
    return max(1, min(batch_size, chunk_bytes // per_image))


def lowered_workspace(backend, geom, out_channels, batch_size, dtype, chunk_bytes=None):
    """chunk_bytes None: the whole batch lowered at once and kept for backward (one GEMM of
    n*OH*OW columns, what a GPU wants at small batches); else chunks of images_per_chunk images,
    each lowered again in backward (Caffe's way: a large batch's lowered matrix, hundreds of MB,
    is written to memory and read back, a chunk's can stay in cache)."""
    images = batch_size
    if chunk_bytes is not None:
        images = images_per_chunk(geom, out_channels, dtype.itemsize, chunk_bytes, batch_size)
    chunked = images < batch_size
    return LoweredWorkspace(
        col=backend.empty(geom.col_rows * geom.col_cols(images), dtype),
        out_t=backend.empty(out_channels * geom.col_cols(images), dtype),
        images=images,
        d_weight_share=backend.empty((out_channels, geom.col_rows), dtype) if chunked else None,
    )


def chunk_bytes_from_env() -> int | None:
    """$CONVNET_GPU_CONV_CHUNK_MIB in bytes; unset or 0: None, the whole batch at once."""
    text = os.environ.get(CHUNK_ENV_VAR, "").strip() or "0"
    mib = int(text) if text.isdigit() else -1
    if mib < 0 or mib > 1 << 20:
        raise UserError(f"{CHUNK_ENV_VAR}={text!r} is not a size in MiB (0 to {1 << 20}); "
                        f"unset it (the whole batch at once) or give one, e.g. 16")  # fmt: skip
    return mib << 20 if mib else None


def _chunks(n: int, images: int) -> list[slice]:
    return [slice(start, min(n, start + images)) for start in range(0, n, images)]


def _lowered_views(workspace: LoweredWorkspace, geom: WindowGeometry, out_channels, images):
    """col (C*KH*KW, b*OH*OW) and out_t (F, b*OH*OW) for a chunk of b images."""
    columns = geom.col_cols(images)
    col = flat_view(workspace.col, (geom.col_rows, columns))
    return col, flat_view(workspace.out_t, (out_channels, columns))


def lowered_forward(backend, x, weight, y, workspace, geom: WindowGeometry) -> None:
    out_channels, spatial = weight.shape[0], geom.out_h * geom.out_w
    for rows in _chunks(x.shape[0], workspace.images):
        b = rows.stop - rows.start
        col, out_t = _lowered_views(workspace, geom, out_channels, b)
        backend.im2col(x[rows], col, geom)
        backend.matmul(weight.reshape(out_channels, -1), col, out_t)  # (F, CKK) @ (CKK, b*L)
        backend.xp.copyto(
            y[rows].reshape(b, out_channels, spatial),  # (F, b, L) -> (b, F, L)
            out_t.reshape(out_channels, b, spatial).transpose(1, 0, 2),
        )


def lowered_backward(backend, x, weight, dy, d_weight, dx, workspace, geom) -> None:
    """Chunks in reverse order: the last one's lowered x is still in the workspace from
    forward (with one chunk, the whole batch's), the others are lowered again."""
    out_channels, spatial = weight.shape[0], geom.out_h * geom.out_w
    d_weight = d_weight.reshape(out_channels, -1)
    if x.shape[0] == 0:  # no rows (a rank's share of a short batch): no GEMM of k = 0 needed
        d_weight.fill(0)
        return
    chunks = _chunks(x.shape[0], workspace.images)
    last = len(chunks) - 1
    for index in reversed(range(len(chunks))):
        rows = chunks[index]
        b = rows.stop - rows.start
        col, dy_t = _lowered_views(workspace, geom, out_channels, b)
        if index != last:
            backend.im2col(x[rows], col, geom)
        backend.xp.copyto(
            dy_t.reshape(out_channels, b, spatial),
            dy[rows].reshape(b, out_channels, spatial).transpose(1, 0, 2),
        )
        if index == last:  # (F, b*L) @ (b*L, CKK)
            backend.matmul(dy_t, col.T, d_weight)
        else:
            backend.matmul(dy_t, col.T, workspace.d_weight_share)
            backend.xp.add(d_weight, workspace.d_weight_share, out=d_weight)
        if dx is not None:
            backend.matmul(weight.reshape(out_channels, -1).T, dy_t, col)  # d_col overwrites col
            backend.col2im(col, dx[rows], geom)


# ---- the CPU's: blocks of images, lowered channels-last ------------------------------------------
class BlockWorkspace(NamedTuple):
    """Buffers for a block of B images, lowered channels-last (see the module docstring)."""

    x_pad: np.ndarray  # (B, H+2p, W+2p, C): the block's images, zero border written once
    col: np.ndarray  # (B, OH, OW, KH, KW, C): a row per output pixel; d_col in backward
    out: np.ndarray  # (B, OH, OW, F): the GEMM's output, then dy channels-last
    weight: np.ndarray  # (KH, KW, C, F): the weight in the lowered rows' order
    d_weight: np.ndarray  # (KH, KW, C, F): the sum of the blocks' shares
    d_weight_share: np.ndarray  # (KH, KW, C, F): one block's share
    dx_t: np.ndarray  # (B, H, W, C) compiled add-back, or (B, H+2p, W+2p, C) NumPy's (padded)


def images_per_block(geom: WindowGeometry, out_channels, itemsize, block_bytes, batch_size):
    """Images per block: KH*KW*max(C, F) values per input pixel each in block_bytes (the size
    the block sizes of numpy_backend.LOWERED_BLOCK_BYTES were measured with)."""
    channels = max(geom.channels, out_channels)
    image_bytes = channels * geom.kernel_h * geom.kernel_w * geom.height * geom.width * itemsize
    return max(1, min(batch_size, block_bytes // image_bytes))


def block_workspace(geom, out_channels, batch_size, dtype, block_bytes, compiled_add_back=False):
    """compiled_add_back: dx_t for blocked_backward's add_back (cpu_jit.conv_add_back), which
    leaves the padding out; else padded, for NumPy's adds."""
    dtype = np.dtype(dtype)
    block = images_per_block(geom, out_channels, dtype.itemsize, block_bytes, batch_size)
    c, f, kh, kw = geom.channels, out_channels, geom.kernel_h, geom.kernel_w
    h, w, oh, ow = geom.height, geom.width, geom.out_h, geom.out_w
    padded = (block, h + 2 * geom.pad, w + 2 * geom.pad, c)
    weight_shape = (kh, kw, c, f)
    return BlockWorkspace(
        x_pad=np.zeros(padded, dtype),
        col=np.empty((block, oh, ow, kh, kw, c), dtype),
        out=np.empty((block, oh, ow, f), dtype),
        weight=np.empty(weight_shape, dtype),
        d_weight=np.empty(weight_shape, dtype),
        d_weight_share=np.empty(weight_shape, dtype),
        dx_t=np.empty((block, h, w, c) if compiled_add_back else padded, dtype),
    )


def image_blocks(n: int, block: int):
    """Slices of `block` images (the last may be short) covering n."""
    for start in range(0, n, block):
        yield slice(start, min(n, start + block))


def _lower(padded, col, stride: int):
    """Copy every window of the channels-last `padded` (b, H', W', C) into col (b, OH, OW, KH,
    KW, C), one row of KH*KW*C values per output pixel, in runs of KW*C contiguous values
    (lowering channels-first copies runs of OW, a dozen values in a small image). Returns col as
    the matrix (b*OH*OW, KH*KW*C)."""
    s_b, s_h, s_w, s_c = padded.strides
    windows = as_strided(
        padded,
        shape=col.shape,
        strides=(s_b, s_h * stride, s_w * stride, s_h, s_w, s_c),
        writeable=False,
    )
    np.copyto(col, windows)
    b, oh, ow, kh, kw, c = col.shape
    return col.reshape(b * oh * ow, kh * kw * c)


def _lower_x(x_block, ws: BlockWorkspace, geom: WindowGeometry):
    """The block of x lowered: (b*OH*OW, KH*KW*C), in ws.col."""
    b = len(x_block)
    into_interior(ws.x_pad[:b], x_block, geom.pad, geom.pad)
    return _lower(ws.x_pad[:b], ws.col[:b], geom.stride)


def into_interior(padded, block, border_h: int, border_w: int) -> None:
    """block (b, C, H, W) channels-last into the middle of padded (b, H+2bh, W+2bw, C)."""
    _, _, height, width = block.shape
    interior = padded[:, border_h : border_h + height, border_w : border_w + width]
    np.copyto(interior, block.transpose(0, 2, 3, 1))


def blocked_forward(x, weight, y, workspace: BlockWorkspace, geom: WindowGeometry) -> None:
    out_channels = weight.shape[0]
    weight_t = workspace.weight.reshape(geom.col_rows, out_channels)  # (KH*KW*C, F)
    np.copyto(workspace.weight, weight.transpose(2, 3, 1, 0))
    for rows in image_blocks(len(x), len(workspace.col)):
        col = _lower_x(x[rows], workspace, geom)
        out = workspace.out[: rows.stop - rows.start]
        np.matmul(col, weight_t, out=out.reshape(len(col), out_channels))
        np.copyto(y[rows], out.transpose(0, 3, 1, 2))  # (b, OH, OW, F) -> (b, F, OH, OW)


def blocked_backward(x, weight, dy, d_weight, dx, workspace: BlockWorkspace, geom,
                     add_back=None) -> None:  # fmt: skip
    """add_back(d_col, dx_t, pad, stride): the compiled add-back (cpu_jit.conv_add_back), for a
    workspace made with compiled_add_back; None: NumPy's (_add_back), the same bits."""
    out_channels, ws = weight.shape[0], workspace
    weight_t = ws.weight.reshape(geom.col_rows, out_channels)  # (KH*KW*C, F)
    if dx is not None:
        np.copyto(ws.weight, weight.transpose(2, 3, 1, 0))
    total = ws.d_weight.reshape(geom.col_rows, out_channels)
    share = ws.d_weight_share.reshape(geom.col_rows, out_channels)
    total.fill(0)
    for rows in image_blocks(len(x), len(ws.col)):
        b = rows.stop - rows.start
        dy_t = ws.out[:b]
        np.copyto(dy_t, dy[rows].transpose(0, 2, 3, 1))
        dy_t = dy_t.reshape(-1, out_channels)  # (b*OH*OW, F)
        col = _lower_x(x[rows], ws, geom)  # recomputed: cheaper than kept
        np.matmul(col.T, dy_t, out=share)  # (KH*KW*C, b*OH*OW) @ (b*OH*OW, F)
        np.add(total, share, out=total)
        if dx is None:
            continue
        np.matmul(dy_t, weight_t.T, out=col)  # d_col (b*OH*OW, KH*KW*C), over the lowered x
        if add_back is not None:
            add_back(ws.col[:b], ws.dx_t[:b], geom.pad, geom.stride)
            interior = ws.dx_t[:b]
        else:
            _add_back(ws, b, geom)
            pad = geom.pad
            interior = ws.dx_t[:b, pad : pad + geom.height, pad : pad + geom.width]
        np.copyto(dx[rows], interior.transpose(0, 3, 1, 2))
    np.copyto(d_weight, ws.d_weight.transpose(3, 2, 0, 1))


def _add_back(workspace: BlockWorkspace, b: int, geom: WindowGeometry) -> None:
    """col2im, channels-last: each window offset's (b, OH, OW, C) slab of d_col added onto the
    pixels it read, offset by offset (runs of C contiguous values)."""
    dx_pad, d_col, s = workspace.dx_t[:b], workspace.col[:b], geom.stride
    dx_pad.fill(0)
    rows_span, cols_span = (geom.out_h - 1) * s + 1, (geom.out_w - 1) * s + 1
    for kh in range(geom.kernel_h):
        for kw in range(geom.kernel_w):
            target = dx_pad[:, kh : kh + rows_span : s, kw : kw + cols_span : s]
            np.add(target, d_col[:, :, :, kh, kw], out=target)
