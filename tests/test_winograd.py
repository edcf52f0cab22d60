"""Winograd's convolution (backends/winograd.py) computes what lowering computes: its matrices
compute a correlation exactly, forward and backward equal the whole-batch lowering to 1e-12 of
the largest value in float64 (partial tiles, padding wider than the window, short batches,
blocks), and within the "net" tolerance in float32; the CPU backend picks it where it applies."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from helpers import TOLERANCE

from convnet_gpu.backends import NumpyBackend, conv_lowering, winograd
from convnet_gpu.backends.geometry import WindowGeometry
from convnet_gpu.gradcheck_cases import standard_cases
from tests.test_conv_lowering import assert_close, case, run, run_lowered
from tests.test_cpu_kernels import JIT_MISSING, needs_jit

GEOMETRIES = [  # (channels, height, width, kernel, kernel, stride 1, pad)
    (16, 8, 8, 5, 5, 1, 2),  # "same" 5x5, as simple-cnn's second conv
    (16, 9, 11, 3, 3, 1, 1),  # 9 and 11 outputs: a part-filled last tile each way (m = 4)
    (17, 11, 7, 5, 5, 1, 0),  # no padding: 7 x 3 outputs, odd, in tiles of 2
    (16, 5, 5, 3, 3, 1, 2),  # padding wider than the window's half: 7 x 7 outputs
    (16, 3, 3, 5, 5, 1, 2),  # an image smaller than one tile
]
OUT_CHANNELS = 32


def _kernels():
    """The compiled tile transforms, whatever CONVNET_GPU_WINOGRAD says (numba needed)."""
    return importlib.import_module("convnet_gpu.backends.winograd_kernels")


def run_winograd(geom, x, weight, dy, batch_size, block_images, with_dx=True):
    """(y, d_weight, dx) of winograd.forward and backward in blocks of block_images."""
    itemsize = x.dtype.itemsize
    tile = winograd.tiling(geom)
    per_image = tile.n * tile.n * tile.per_image * (geom.channels + len(weight)) * itemsize
    ws = winograd.workspace(geom, len(weight), batch_size, x.dtype, block_images * per_image)
    assert len(ws.x_pad) == min(block_images, batch_size)
    kernels = _kernels()
    return run(
        lambda *a: winograd.forward(*a, kernels),
        lambda *a: winograd.backward(*a, kernels),
        ws, geom, x, weight, dy, with_dx,
    )  # fmt: skip


@pytest.mark.parametrize("m, r", [(2, 5), (4, 3), (2, 3)])
def test_the_matrices_compute_a_correlation(m, r):
    """y[i] = sum_k g[k] d[i + k] = A^T [(G g) * (B^T d)], in 1-D and nested in 2-D."""
    at, g_matrix, bt = winograd.toom_cook_matrices(m, r)
    n = m + r - 1
    assert (at.shape, g_matrix.shape, bt.shape) == ((m, n), (n, r), (n, n))
    for matrix in (at, bt):  # multiples of 1/8: exact in binary
        assert np.array_equal(matrix * 8, np.round(matrix * 8))
    rng = np.random.default_rng(0)
    g, d = rng.standard_normal(r), rng.standard_normal(n)
    expected = np.array([g @ d[i : i + r] for i in range(m)])
    np.testing.assert_allclose(at @ ((g_matrix @ g) * (bt @ d)), expected, rtol=1e-12, atol=1e-12)
    g2, d2 = rng.standard_normal((r, r)), rng.standard_normal((n, n))
    expected2 = np.array([[np.sum(g2 * d2[i : i + r, j : j + r]) for j in range(m)]
                          for i in range(m)])  # fmt: skip
    u, v = g_matrix @ g2 @ g_matrix.T, bt @ d2 @ bt.T
    np.testing.assert_allclose(at @ (u * v) @ at.T, expected2, rtol=1e-12, atol=1e-12)


def test_too_few_points_is_refused():
    with pytest.raises(ValueError, match="F\\(4, 5\\) needs 7 points"):
        winograd.toom_cook_matrices(4, 5)


@needs_jit
@pytest.mark.parametrize("window", GEOMETRIES)
@pytest.mark.parametrize("with_dx", [True, False])
def test_forward_and_backward_equal_lowering(window, with_dx):
    """5 images in blocks of 2, 2 and 1, against the whole batch lowered."""
    n = 5
    geom, x, weight, dy = case(window, n, OUT_CHANNELS)
    expected = run_lowered(NumpyBackend(), geom, x, weight, dy, None, n, with_dx)
    assert_close(run_winograd(geom, x, weight, dy, n, 2, with_dx), expected)


@needs_jit
@pytest.mark.parametrize("n", [0, 1, 3])
def test_a_short_batch(n):
    """Set up for 8 images in blocks of 4: fewer rows than a block, or none (d_weight zero)."""
    geom, x, weight, dy = case(GEOMETRIES[1], n, OUT_CHANNELS)
    got = run_winograd(geom, x, weight, dy, 8, 4)
    if n == 0:
        assert np.array_equal(got[1], np.zeros_like(weight)) and got[2].shape == x.shape
    else:
        assert_close(got, run_lowered(NumpyBackend(), geom, x, weight, dy, None, n))


@needs_jit
@pytest.mark.parametrize("kernel", [5, 3])
def test_float32_is_within_the_net_tolerance(kernel):
    """simple-cnn's second convolution (32 -> 64 channels, 5x5 on 14x14) and its 3x3 twin (as
    mini-resnet's), float32 against the float64 lowering: Winograd's transforms round to a few
    1e-6 of the largest value, lowering to ~1e-7 (the module docstring of winograd.py)."""
    geom, x, weight, dy = case((32, 14, 14, kernel, kernel, 1, kernel // 2), 8, 64)
    weight *= 0.05  # about a trained net's scale: outputs of order 1
    expected = run_lowered(NumpyBackend(), geom, x, weight, dy, None, 8)
    as32 = [a.astype(np.float32) for a in (x, weight, dy)]
    got = run_winograd(geom, *as32, 8, 4)
    bounds = TOLERANCE["net"][np.dtype(np.float32)]
    for name, have, want in zip(("y", "d_weight", "dx"), got, expected):
        error = np.abs(have - want).max() / np.abs(want).max()
        assert error < bounds["atol"], (name, error)
        assert error > 1e-7, (name, error)  # not lowering's rounding: Winograd really ran


@needs_jit
def test_backward_needs_no_forward_of_the_same_weight():
    """Backward takes U from the weight it is given, not from the last forward's."""
    geom, x, weight, dy = case(GEOMETRIES[0], 3, OUT_CHANNELS)
    expected = run_lowered(NumpyBackend(), geom, x, weight, dy, None, 3)
    ws = winograd.workspace(geom, OUT_CHANNELS, 3, np.float64, 1)
    kernels, y = _kernels(), np.empty_like(dy)
    winograd.forward(x, -2 * weight, y, ws, geom, kernels)  # another weight's U left behind
    d_weight, dx = np.empty_like(weight), np.empty_like(x)
    winograd.backward(x, weight, dy, d_weight, dx, ws, geom, kernels)
    assert_close((expected[0], d_weight, dx), expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_workspace_holds_the_matrices_in_the_datas_dtype(dtype):
    """float32 data with float64 matrices would run the kernels in float64 (slower, other
    roundings) without any test of values noticing."""
    ws = winograd.workspace(WindowGeometry(16, 8, 8, 5, 5, 1, 2), 32, 4, dtype, 1 << 20)
    for name in ("at", "at6", "g", "bt", "v", "products", "u", "x_pad", "scratch_in"):
        assert getattr(ws, name).dtype == dtype, name


def test_where_it_applies():
    def applies(channels, out_channels, kernel=3, stride=1, size=14):
        geom = WindowGeometry(channels, size, size, kernel, kernel, stride, kernel // 2)
        return winograd.applies(geom, out_channels)

    assert applies(32, 64, 5) and applies(16, 32, 3) and applies(64, 16, 3)
    assert not applies(32, 64, 5, stride=2)
    assert not applies(32, 64, 7) and not applies(32, 64, 1)
    assert not applies(8, 128) and not applies(16, 16)  # too few channels
    assert not applies(32, 32, size=7) and applies(32, 64, size=7)  # small outputs need more
    assert not winograd.applies(WindowGeometry(32, 12, 12, 3, 5, 1, 1), 64)  # not square


@needs_jit
def test_the_gradchecks_winograd_cases_run_it():
    """The two gradcheck cases meant for it (convnet_gpu/gradcheck_cases.py) really get it."""
    cpu = NumpyBackend(jit=True, winograd=True)
    cases = [case.build() for case in standard_cases() if "16 -> 32" in case.name]
    assert len(cases) == 2
    for layers, shape, _ in cases:
        layers[0].setup(cpu, shape, 2, np.float64)
        assert isinstance(layers[0].workspace, winograd.WinogradWorkspace), layers[0].describe()


@pytest.mark.parametrize("jit", [True, False])
def test_the_cpu_backend_picks_it_with_numba(jit, monkeypatch):
    if jit and JIT_MISSING is not None:
        pytest.skip(JIT_MISSING)
    monkeypatch.delenv("CONVNET_GPU_WINOGRAD", raising=False)  # the default: on
    backend = NumpyBackend(jit=jit)
    workspace = backend.conv_workspace(WindowGeometry(32, 14, 14, 5, 5, 1, 2), 64, 8, np.float32)
    assert isinstance(workspace, winograd.WinogradWorkspace) == jit
    stride_2 = backend.conv_workspace(WindowGeometry(32, 14, 14, 5, 5, 2, 2), 64, 8, np.float32)
    assert isinstance(stride_2, conv_lowering.BlockWorkspace)
    off = NumpyBackend(jit=jit, winograd=False)
    assert isinstance(off.conv_workspace(WindowGeometry(32, 14, 14, 5, 5, 1, 2), 64, 8,
                                         np.float32), conv_lowering.BlockWorkspace)  # fmt: skip


@needs_jit
def test_the_backends_convolution_runs_it():
    """Through conv_forward / conv_backward of the backend, against lowering."""
    geom, x, weight, dy = case((16, 14, 14, 5, 5, 1, 2), 3, OUT_CHANNELS)
    cpu = NumpyBackend(jit=True, winograd=True)
    workspace = cpu.conv_workspace(geom, OUT_CHANNELS, 3, np.float64)
    assert isinstance(workspace, winograd.WinogradWorkspace)
    got = run(cpu.conv_forward, cpu.conv_backward, workspace, geom, x, weight, dy)
    assert_close(got, run_lowered(cpu, geom, x, weight, dy, None, 3))
