"""Convolution by Winograd's minimal filtering (Lavin and Gray, 2016): the CPU's way for
stride-1 5x5 and 3x3 windows, about 2.8 and 4 times fewer multiplications than lowering.

One-dimensional F(m, r) computes m outputs of an r-tap correlation from n = m + r - 1 inputs d
with n multiplications instead of m*r: y = A^T [(G g) * (B^T d)], where G (n x r), B^T (n x n)
and A^T (m x n) come from evaluating polynomials at n - 1 points and infinity (Toom-Cook; here
0, 1, -1, 1/2, -2: see POINTS). Nested, a 2-D tile of m x m outputs from an n x n tile of input:
    Y = A^T [ (G g G^T) * (B^T d B) ] A          (* elementwise)
Summed over the C input channels, the elementwise product at each of the n*n tile positions
(p, q) becomes a matrix product over all the tiles of the batch at once:
    M[p, q] (tiles, F) = V[p, q] (tiles, C) @ U[p, q] (C, F)
with V = B^T d B per tile and channel and U = G g G^T per filter and channel: n*n = 36 GEMMs of
C columns, against lowering's one GEMM of C*r*r. Backward is the adjoint of each linear step:
    dM = A dY A^T,  dU[p, q] = V[p, q]^T @ dM[p, q],  dV[p, q] = dM[p, q] @ U[p, q]^T,
    d_weight = G^T dU G,  dx = the sum over tiles of B dV B^T (tiles overlap: added).
The tile transforms are the compiled kernels of winograd_kernels.py (written for n = 6: F(2, 5)
and F(4, 3)); the GEMMs and the filter transforms are BLAS calls. A batch goes through in blocks
of a few images whose V and M stay in cache; V is computed again in backward.

Numerics: B^T and A^T hold multiples of 1/8 (exact in binary), G fractions such as 1/3; float32
results differ from lowering's by a few 1e-6 of the largest value (the transforms add several
neighbouring values times up to 8), against ~1e-7 for lowering: within the "net" tolerance of
the agreement tests; float64 stays within 1e-13 (tests/test_winograd.py). Where the input holds
an inf or NaN, Winograd spreads it over every output tile whose 6x6 input tile holds it (0 *
inf is NaN; tiles step by m, so up to ceil(6/m)^2 tiles: nine for 5x5, four for 3x3), lowering
only over the outputs whose window reads it.
"""

from __future__ import annotations

from fractions import Fraction
from typing import NamedTuple

import numpy as np

from .conv_lowering import flat_view, image_blocks, into_interior
from .geometry import WindowGeometry

# kernel size r -> output tile side m, so that m + r - 1 = 6 (winograd_kernels.TILE)
OUTPUT_TILE = {5: 2, 3: 4}
# Where the polynomials are evaluated, besides infinity. Among the 5-point sets of 0 and
# +-{1, 2, 3, 4, 1/2, 1/3, 1/4, 3/2, 2/3}, this one's float32 error on simple-cnn's second conv and
# its 3x3 twin was within 1.4x of the best, with simple fractions, and 2.7x below the usual
# 0, +-1, +-2's (4.8e-6 against 1.3e-5 of the largest weight gradient value, which is over the
# agreement tests' tolerance: `scripts/conv_algorithms.py --errors [--points 0,1,-1,2,-2]`).
POINTS = (0, 1, -1, Fraction(1, 2), -2)
# Below these, lowering is faster: the 36 GEMMs of C or F columns get thin, and the transforms
# and the part-filled edge tiles cost more than the multiplications saved. From
# `scripts/conv_algorithms.py --batch 64` (a Zen 3 core, forward + backward; its table in
# docs/bench/conv_algorithms.txt): Winograd over lowering 0.93-1.33x at C x F = 16 x 32 on 14x14
# and 28x28 outputs, 1.2-1.6x at 32 x 32, up to 2.4x at 128 x 128; 0.87-0.95x at 16 x 16 on
# 14x14 and 28x28 for 5x5 (1.2x for 3x3 on 28x28), 0.93x at most with 8 or 4 channels. On 7x7
# outputs (a 5x5 window's 2x2 tiles leave a part-filled row and column) it took C x F = 2048 to
# win (5x5: 0.69-0.73x at 16 x 32, 0.89-0.95x at 32 x 32, 1.10-1.12x at 32 x 64).
MIN_CHANNELS = 16
MIN_CHANNEL_PRODUCT = 512  # C * F, on outputs of SMALL_OUTPUT pixels or more
SMALL_OUTPUT = 14 * 14
MIN_CHANNEL_PRODUCT_SMALL = 2048  # C * F, on smaller outputs


def applies(geom: WindowGeometry, out_channels: int) -> bool:
    """Whether a convolution runs as Winograd's: stride 1, a square 3x3 or 5x5 window, enough
    channels in and out for its output's size."""
    small = geom.out_h * geom.out_w < SMALL_OUTPUT
    return (
        geom.stride == 1
        and geom.kernel_h == geom.kernel_w
        and geom.kernel_h in OUTPUT_TILE
        and min(geom.channels, out_channels) >= MIN_CHANNELS
        and geom.channels * out_channels
        >= (MIN_CHANNEL_PRODUCT_SMALL if small else MIN_CHANNEL_PRODUCT)
    )


# ---- the transforms' matrices --------------------------------------------------------------------
def toom_cook_matrices(m: int, r: int, points=POINTS) -> tuple[np.ndarray, ...]:
    """(A^T (m x n), G (n x r), B^T (n x n)) of F(m, r), exactly (Fractions) then as float64.

    With M(x) = prod_j (x - a_j) over the n - 1 finite points and M_j(x) = M(x) / (x - a_j):
    row j of B^T holds M_j's coefficients (ascending powers), row j of G holds a_j^k / M_j(a_j),
    column j of A^T holds a_j^i; the point at infinity adds B^T's row of M's own coefficients,
    a G row picking g's last tap and an A^T column picking the last output."""
    n = m + r - 1
    a = [Fraction(p) for p in points[: n - 1]]
    if len(a) != n - 1:
        raise ValueError(f"F({m}, {r}) needs {n - 1} points, got {len(points)}")
    at = [[a_j**i for a_j in a] + [Fraction(int(i == m - 1))] for i in range(m)]
    g, bt = [], []
    for j, a_j in enumerate(a):
        m_j = _poly_from_roots([x for k, x in enumerate(a) if k != j])
        value = sum(coef * a_j**power for power, coef in enumerate(m_j))
        g.append([a_j**k / value for k in range(r)])
        bt.append(m_j + [Fraction(0)])
    g.append([Fraction(int(k == r - 1)) for k in range(r)])
    bt.append(_poly_from_roots(a))
    return tuple(np.array(rows, dtype=np.float64) for rows in (at, g, bt))


def _poly_from_roots(roots) -> list[Fraction]:
    """The coefficients, lowest power first, of prod (x - root)."""
    coefs = [Fraction(1)]
    for root in roots:
        shifted = [Fraction(0)] + coefs  # x * p(x)
        coefs = [s - root * c for s, c in zip(shifted, coefs + [Fraction(0)])]
    return coefs


# ---- buffers -------------------------------------------------------------------------------------
class Tiling(NamedTuple):
    m: int  # output tile side
    n: int  # input tile side, m + r - 1
    tiles_h: int  # tiles down an image: ceil(OH / m)
    tiles_w: int
    padded_h: int  # rows of an image padded for its tiles: tiles_h*m + r - 1 >= H + 2*pad
    padded_w: int

    @property
    def per_image(self) -> int:
        return self.tiles_h * self.tiles_w


def tiling(geom: WindowGeometry) -> Tiling:
    m, r = OUTPUT_TILE[geom.kernel_h], geom.kernel_h
    tiles_h, tiles_w = -(-geom.out_h // m), -(-geom.out_w // m)
    return Tiling(m, m + r - 1, tiles_h, tiles_w, tiles_h * m + r - 1, tiles_w * m + r - 1)


class WinogradWorkspace(NamedTuple):
    """Buffers for blocks of B images; T = B * tiles per image, n*n tile positions."""

    tiling: Tiling
    at: np.ndarray  # (m, n) in the data's dtype: at6's first m rows
    at6: np.ndarray  # (n, n): at, then zero rows (output_adjoint's)
    g: np.ndarray  # (n, r)
    bt: np.ndarray  # (n, n)
    x_pad: np.ndarray  # (B, HP, WP, C): the block channels-last, zero border written once
    dx_pad: np.ndarray  # (B, HP, WP, C): the block's dx, before the border is cut off
    v: np.ndarray  # flat, (n, n, T, C): B^T d B per tile; dV in backward
    products: np.ndarray  # flat, (n, n, T, F): the products M; dM in backward
    y_t: np.ndarray  # (B, OH, OW, F): the block's y channels-last; dy in backward
    u: np.ndarray  # (n, n, C, F): G g G^T
    du: np.ndarray  # (n, n, C, F): the sum of the blocks' dU
    du_share: np.ndarray  # (n, n, C, F): one block's
    half: np.ndarray  # flat, n*r*C*F: a filter transform halfway
    weight_t: np.ndarray  # (KH, KW, C, F): the weight, or d_weight, in U's axis order
    scratch_in: np.ndarray  # (n, n, C): the input transforms' per-tile scratch
    tile_in: np.ndarray  # (n, n, C): input_adjoint's tile
    scratch_out: np.ndarray  # (n, n, F): the output transforms' per-tile scratch
    tile_out: np.ndarray  # (n, n, F): output_adjoint's tile


def images_per_block(tile: Tiling, channels: int, out_channels: int, itemsize: int,
                     block_bytes: int, batch_size: int) -> int:  # fmt: skip
    """Images whose V and M together fit in block_bytes (at least one)."""
    per_image = tile.n * tile.n * tile.per_image * (channels + out_channels) * itemsize
    return max(1, min(batch_size, block_bytes // per_image))


def workspace(geom: WindowGeometry, out_channels: int, batch_size: int, dtype,
              block_bytes: int) -> WinogradWorkspace:  # fmt: skip
    dtype = np.dtype(dtype)
    tile = tiling(geom)
    c, f, r, n = geom.channels, out_channels, geom.kernel_h, tile.n
    block = images_per_block(tile, c, f, dtype.itemsize, block_bytes, batch_size)
    at, g, bt = (matrix.astype(dtype) for matrix in toom_cook_matrices(tile.m, r))
    tiles = block * tile.per_image
    padded = (block, tile.padded_h, tile.padded_w, c)
    at6 = np.zeros((n, n), dtype)
    at6[: tile.m] = at
    return WinogradWorkspace(
        tiling=tile, at=at6[: tile.m], at6=at6, g=g, bt=bt,
        x_pad=np.zeros(padded, dtype),
        dx_pad=np.empty(padded, dtype),
        v=np.empty(n * n * tiles * c, dtype),
        products=np.empty(n * n * tiles * f, dtype),
        y_t=np.empty((block, geom.out_h, geom.out_w, f), dtype),
        u=np.empty((n, n, c, f), dtype),
        du=np.empty((n, n, c, f), dtype),
        du_share=np.empty((n, n, c, f), dtype),
        half=np.empty(n * r * c * f, dtype),
        weight_t=np.empty((r, r, c, f), dtype),
        scratch_in=np.empty((n, n, c), dtype),
        tile_in=np.empty((n, n, c), dtype),
        scratch_out=np.empty((n, n, f), dtype),
        tile_out=np.empty((n, n, f), dtype),
    )  # fmt: skip


def _block_views(ws: WinogradWorkspace, b: int, channels: int, out_channels: int):
    """v (n*n, T, C) and products (n*n, T, F) for a block of b images: contiguous, for the
    stacked GEMMs."""
    n, tiles = ws.tiling.n, b * ws.tiling.per_image
    return (flat_view(ws.v, (n * n, tiles, channels)),
            flat_view(ws.products, (n * n, tiles, out_channels)))  # fmt: skip


# ---- the filter transforms: U = G g G^T and d_weight = G^T dU G, as BLAS calls -------------------
def _filter_transform(weight, ws: WinogradWorkspace) -> None:
    """ws.u[p, q, c, f] = sum_kh sum_kw G[p, kh] weight[f, c, kh, kw] G[q, kw]."""
    r, n = ws.g.shape[1], ws.tiling.n
    np.copyto(ws.weight_t, weight.transpose(2, 3, 1, 0))  # (KH, KW, C, F)
    half = ws.half.reshape(n, r, -1)  # half[p, kw] = sum_kh G[p, kh] weight_t[kh, kw]
    np.matmul(ws.g, ws.weight_t.reshape(r, -1), out=half.reshape(n, -1))
    for p in range(n):  # u[p, q] = sum_kw G[q, kw] half[p, kw]
        np.matmul(ws.g, half[p], out=ws.u[p].reshape(n, -1))


def _filter_gradient(d_weight, ws: WinogradWorkspace) -> None:
    """d_weight[f, c, kh, kw] = sum_p sum_q G[p, kh] du[p, q, c, f] G[q, kw] (the adjoint)."""
    r, n = ws.g.shape[1], ws.tiling.n
    half = ws.half.reshape(r, n, -1)  # half[kh, q] = sum_p G[p, kh] du[p, q]
    np.matmul(ws.g.T, ws.du.reshape(n, -1), out=half.reshape(r, -1))
    for kh in range(r):  # weight_t[kh, kw] = sum_q G[q, kw] half[kh, q]
        np.matmul(ws.g.T, half[kh], out=ws.weight_t[kh].reshape(r, -1))
    np.copyto(d_weight, ws.weight_t.transpose(3, 2, 0, 1))


# ---- forward and backward ------------------------------------------------------------------------
def _load_block(x_block, ws: WinogradWorkspace, geom: WindowGeometry) -> None:
    """x_block (b, C, H, W) channels-last into x_pad's interior (its border stays zero)."""
    into_interior(ws.x_pad[: len(x_block)], x_block, geom.pad, geom.pad)


def forward(x, weight, y, ws: WinogradWorkspace, geom: WindowGeometry, kernels) -> None:
    """kernels: the winograd_kernels module (numba's; passed in so that this module imports
    without numba)."""
    c, f, tile = geom.channels, weight.shape[0], ws.tiling
    _filter_transform(weight, ws)
    u = ws.u.reshape(tile.n * tile.n, c, f)
    for rows in image_blocks(len(x), len(ws.x_pad)):
        b = rows.stop - rows.start
        v, products = _block_views(ws, b, c, f)
        _load_block(x[rows], ws, geom)
        kernels.input_transform(ws.x_pad[:b], ws.bt, tile.m, tile.tiles_h, tile.tiles_w,
                                v.reshape(tile.n, tile.n, -1, c), ws.scratch_in)  # fmt: skip
        np.matmul(v, u, out=products)  # n*n GEMMs (T, C) @ (C, F)
        kernels.output_transform(products.reshape(tile.n, tile.n, -1, f), ws.at, tile.tiles_h,
                                 tile.tiles_w, ws.y_t[:b], ws.scratch_out)  # fmt: skip
        np.copyto(y[rows], ws.y_t[:b].transpose(0, 3, 1, 2))


def backward(x, weight, dy, d_weight, dx, ws: WinogradWorkspace, geom, kernels) -> None:
    """d_weight and, unless dx is None, dx."""
    c, f, tile, pad = geom.channels, weight.shape[0], ws.tiling, geom.pad
    nn = tile.n * tile.n
    if dx is not None:
        _filter_transform(weight, ws)  # U, as forward made it: backward needs no forward's state
    u = ws.u.reshape(nn, c, f)
    ws.du.fill(0)
    for rows in image_blocks(len(x), len(ws.x_pad)):
        b = rows.stop - rows.start
        v, d_products = _block_views(ws, b, c, f)  # dM, then V
        np.copyto(ws.y_t[:b], dy[rows].transpose(0, 2, 3, 1))
        kernels.output_adjoint(ws.y_t[:b], ws.at6, tile.m, tile.tiles_h, tile.tiles_w,
                               d_products.reshape(tile.n, tile.n, -1, f), ws.tile_out,
                               ws.scratch_out)  # fmt: skip
        _load_block(x[rows], ws, geom)  # V again: cheaper than keeping the batch's
        kernels.input_transform(ws.x_pad[:b], ws.bt, tile.m, tile.tiles_h, tile.tiles_w,
                                v.reshape(tile.n, tile.n, -1, c), ws.scratch_in)  # fmt: skip
        share = ws.du_share.reshape(nn, c, f)
        np.matmul(v.transpose(0, 2, 1), d_products, out=share)  # dU: (C, T) @ (T, F) per position
        np.add(ws.du, ws.du_share, out=ws.du)
        if dx is None:
            continue
        np.matmul(d_products, u.transpose(0, 2, 1), out=v)  # dV (T, C) = dM (T, F) @ U^T, over V
        kernels.input_adjoint(v.reshape(tile.n, tile.n, -1, c), ws.bt, tile.m, tile.tiles_h,
                              tile.tiles_w, ws.dx_pad[:b], ws.scratch_in, ws.tile_in)  # fmt: skip
        interior = ws.dx_pad[:b, pad : pad + geom.height, pad : pad + geom.width]
        np.copyto(dx[rows], interior.transpose(0, 3, 1, 2))
    _filter_gradient(d_weight, ws)
