"""Compiled kernels (numba) for Winograd convolution (winograd.py): the four tile transforms.

Every kernel works on 6x6 input tiles (TILE) of channels-last images, one tile at a time, and
keeps the channel (or filter) axis innermost so each line of arithmetic is a vector of C values:
    input_transform    V_t = B^T d_t B          (6x6 of x per tile -> 6x6, all channels)
    output_transform   Y_t = A^T M_t A          (6x6 -> m x m outputs, cropped to OH x OW)
    output_adjoint     dM_t = A dY_t A^T        (its adjoint: m x m of dy -> 6x6)
    input_adjoint      dx += B dV_t B^T         (its adjoint: 6x6 -> the tile's 36 pixels)
A product with a 6-wide row of B^T or A^T is written out as six terms (_row6) so that numba
knows the trip count, unrolls it and vectorizes the channel loop around it; a loop with a
runtime length over the terms, innermost, stayed scalar and was 2-3x slower. Serial, nogil and
cached like cpu_jit.py's kernels; fastmath off (contracting to fused multiply-adds made them
slower: they wait on memory, not arithmetic). The first use in float32 on a machine compiles
all four in about 4.5 s (an empty NUMBA_CACHE_DIR, one Zen 3 core); later processes load them
from numba's cache in 0.1-0.3 s. The four kernels repeat one loop shape on purpose: written once
as helpers over each tile's array views, they ran 4-8x slower (the views' unknown strides kept
numba from vectorizing the channel loop).
"""

from __future__ import annotations

import numba

_jit = numba.njit(nogil=True, cache=True, fastmath=False, error_model="numpy")

TILE = 6  # the input tile's side, m + r - 1, for which these kernels are written


@_jit
def _row6(coef, row, v0, v1, v2, v3, v4, v5):
    """coef[row] . (v0..v5), added left to right."""
    return (coef[row, 0] * v0 + coef[row, 1] * v1 + coef[row, 2] * v2
            + coef[row, 3] * v3 + coef[row, 4] * v4 + coef[row, 5] * v5)  # fmt: skip


@_jit
def _col6(coef, col, v0, v1, v2, v3, v4, v5):
    """coef[:, col] . (v0..v5): a product with the transposed matrix."""
    return (coef[0, col] * v0 + coef[1, col] * v1 + coef[2, col] * v2
            + coef[3, col] * v3 + coef[4, col] * v4 + coef[5, col] * v5)  # fmt: skip


@_jit
def input_transform(x_pad, bt, m, tiles_h, tiles_w, v, scratch) -> None:
    """v[p, q, t, c] = (B^T d B)[p, q] for the 6x6 tile d at rows a*m, columns s*m of image i of
    x_pad (b, HP, WP, C), tile t = (i*tiles_h + a)*tiles_w + s. scratch: (6, 6, C)."""
    b, _, _, channels = x_pad.shape
    for i in range(b):
        for a in range(tiles_h):
            for s in range(tiles_w):
                t = (i * tiles_h + a) * tiles_w + s
                r, w = a * m, s * m
                for p in range(TILE):  # scratch = B^T d: down the tile's columns
                    for col in range(TILE):
                        for c in range(channels):
                            scratch[p, col, c] = _row6(
                                bt, p, x_pad[i, r, w + col, c], x_pad[i, r + 1, w + col, c],
                                x_pad[i, r + 2, w + col, c], x_pad[i, r + 3, w + col, c],
                                x_pad[i, r + 4, w + col, c], x_pad[i, r + 5, w + col, c],
                            )  # fmt: skip
                for p in range(TILE):  # v = scratch B: along its rows
                    for q in range(TILE):
                        for c in range(channels):
                            v[p, q, t, c] = _row6(
                                bt, q, scratch[p, 0, c], scratch[p, 1, c], scratch[p, 2, c],
                                scratch[p, 3, c], scratch[p, 4, c], scratch[p, 5, c],
                            )  # fmt: skip


@_jit
def output_transform(products, at, tiles_h, tiles_w, y_t, scratch) -> None:
    """y_t[i, a*m + u, s*m + w, f] = (A^T M A)[u, w] for tile t's M = products[:, :, t, :], the
    outputs past y_t's (b, OH, OW, F) edge dropped. scratch: (6, 6, F), its first m rows used."""
    b, out_h, out_w, filters = y_t.shape
    m = at.shape[0]
    for i in range(b):
        for a in range(tiles_h):
            for s in range(tiles_w):
                t = (i * tiles_h + a) * tiles_w + s
                for u in range(m):  # scratch = A^T M
                    for col in range(TILE):
                        for f in range(filters):
                            scratch[u, col, f] = _row6(
                                at, u, products[0, col, t, f], products[1, col, t, f],
                                products[2, col, t, f], products[3, col, t, f],
                                products[4, col, t, f], products[5, col, t, f],
                            )  # fmt: skip
                for u in range(min(m, out_h - a * m)):  # y = scratch A, inside the image
                    for w in range(min(m, out_w - s * m)):
                        for f in range(filters):
                            y_t[i, a * m + u, s * m + w, f] = _row6(
                                at, w, scratch[u, 0, f], scratch[u, 1, f], scratch[u, 2, f],
                                scratch[u, 3, f], scratch[u, 4, f], scratch[u, 5, f],
                            )  # fmt: skip


@_jit
def output_adjoint(dy_t, at6, m, tiles_h, tiles_w, d_products, tile, scratch) -> None:
    """d_products[:, :, t, :] = A dY A^T for tile t's m x m outputs dY of dy_t (b, OH, OW, F), zero
    past its edge (the adjoint of output_transform). at6: (6, 6), A^T's m rows then zero rows,
    so that each sum has six terms; tile and scratch: (6, 6, F), zero but where written here."""
    b, out_h, out_w, filters = dy_t.shape
    tile[:] = 0
    scratch[:] = 0
    for i in range(b):
        for a in range(tiles_h):
            for s in range(tiles_w):
                t = (i * tiles_h + a) * tiles_w + s
                rows, cols = min(m, out_h - a * m), min(m, out_w - s * m)
                for u in range(m):  # the tile's dY, zero past the edge
                    for w in range(m):
                        if u < rows and w < cols:
                            for f in range(filters):
                                tile[u, w, f] = dy_t[i, a * m + u, s * m + w, f]
                        else:
                            for f in range(filters):
                                tile[u, w, f] = 0
                for k in range(TILE):  # scratch = A dY: sum_u at[u, k] dY[u, w]
                    for w in range(m):
                        for f in range(filters):
                            scratch[k, w, f] = _col6(
                                at6, k, tile[0, w, f], tile[1, w, f], tile[2, w, f],
                                tile[3, w, f], tile[4, w, f], tile[5, w, f],
                            )  # fmt: skip
                for k in range(TILE):  # d_products = scratch A^T: sum_w scratch[k, w] at[w, l]
                    for col in range(TILE):
                        for f in range(filters):
                            d_products[k, col, t, f] = _col6(
                                at6, col, scratch[k, 0, f], scratch[k, 1, f], scratch[k, 2, f],
                                scratch[k, 3, f], scratch[k, 4, f], scratch[k, 5, f],
                            )  # fmt: skip


@_jit
def input_adjoint(dv, bt, m, tiles_h, tiles_w, dx_pad, scratch, tile) -> None:
    """dx_pad (b, HP, WP, C) = the sum over tiles of B dV B^T at each tile's 36 pixels (the
    adjoint of input_transform; tiles overlap by 6 - m pixels, added in tile order).
    scratch, tile: (6, 6, C)."""
    b, _, _, channels = dx_pad.shape
    dx_pad[:] = 0
    for i in range(b):
        for a in range(tiles_h):
            for s in range(tiles_w):
                t = (i * tiles_h + a) * tiles_w + s
                for p in range(TILE):  # scratch = dV B^T: scratch[p, l] = sum_q dV[p, q] bt[q, l]
                    for col in range(TILE):
                        for c in range(channels):
                            scratch[p, col, c] = _col6(
                                bt, col, dv[p, 0, t, c], dv[p, 1, t, c], dv[p, 2, t, c],
                                dv[p, 3, t, c], dv[p, 4, t, c], dv[p, 5, t, c],
                            )  # fmt: skip
                for k in range(TILE):  # tile = B scratch: sum_p bt[p, k] scratch[p, l]
                    for col in range(TILE):
                        for c in range(channels):
                            tile[k, col, c] = _col6(
                                bt, k, scratch[0, col, c], scratch[1, col, c], scratch[2, col, c],
                                scratch[3, col, c], scratch[4, col, c], scratch[5, col, c],
                            )  # fmt: skip
                # added apart from the sums above: stores into dx_pad, which numba cannot tell
                # from scratch, kept those loops from keeping values in registers (20% slower)
                for k in range(TILE):
                    for col in range(TILE):
                        for c in range(channels):
                            dx_pad[i, a * m + k, s * m + col, c] += tile[k, col, c]
