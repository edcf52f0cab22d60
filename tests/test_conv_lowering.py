"""The CPU's blocked, channels-last convolution (conv_lowering.py) computes what the whole-batch
lowering computes, up to the order of float sums: 1e-12 of the largest value in float64."""

from __future__ import annotations

import numpy as np
import pytest

from convnet_gpu.backends import NumpyBackend, conv_lowering
from convnet_gpu.backends.geometry import WindowGeometry

GEOMETRIES = [  # (channels, height, width, kernel_h, kernel_w, stride, pad)
    (1, 8, 8, 3, 3, 1, 1),  # dx by correlation (stride 1)
    (3, 7, 9, 5, 3, 1, 2),  # a non-square kernel, pad = KW - 1
    (3, 7, 9, 5, 3, 2, 2),  # stride 2: dx by adding d_col back
    (4, 5, 5, 3, 3, 2, 0),
    (2, 4, 6, 1, 1, 1, 0),
    (1, 3, 3, 3, 3, 1, 3),  # pad > K - 1: some windows read only padding; added back
]


def case(window, n, out_channels=3, seed=0):
    geom = WindowGeometry(*window)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, geom.channels, geom.height, geom.width))
    weight = rng.standard_normal((out_channels, geom.channels, geom.kernel_h, geom.kernel_w))
    dy = rng.standard_normal((n, out_channels, geom.out_h, geom.out_w))
    return geom, x, weight, dy


def run(forward, backward, workspace, geom, x, weight, dy, with_dx=True):
    y, d_weight = np.full_like(dy, np.nan), np.full_like(weight, np.nan)
    dx = np.full_like(x, np.nan) if with_dx else None
    forward(x, weight, y, workspace, geom)
    backward(x, weight, dy, d_weight, dx, workspace, geom)
    return y, d_weight, dx


@pytest.mark.parametrize("window", GEOMETRIES)
def test_blocks_compute_the_whole_batch_lowering(window):
    n = 5
    geom, x, weight, dy = case(window, n)
    cpu = NumpyBackend()
    image_bytes = max(geom.channels, 3) * geom.kernel_h * geom.kernel_w * geom.height * geom.width
    blocked = conv_lowering.block_workspace(geom, 3, n, np.float64, 2 * image_bytes * 8)
    assert len(blocked.col) == 2  # blocks of 2, 2 and 1 images
    whole = conv_lowering.whole_batch_workspace(cpu, geom, 3, n, np.dtype(np.float64))
    expected = run(
        lambda *a: conv_lowering.whole_batch_forward(cpu, *a),
        lambda *a: conv_lowering.whole_batch_backward(cpu, *a),
        whole, geom, x, weight, dy,
    )  # fmt: skip
    got = run(conv_lowering.blocked_forward, conv_lowering.blocked_backward, blocked, geom,
              x, weight, dy)  # fmt: skip
    for name, want, have in zip(("y", "d_weight", "dx"), expected, got):
        assert np.abs(have - want).max() <= 1e-12 * np.abs(want).max(), name


def test_the_direct_sum_agrees():
    """Against the definition, not another lowering: y[i, f, oh, ow] = sum over c, kh, kw."""
    geom, x, weight, dy = case((2, 5, 6, 3, 2, 2, 1), 3)
    workspace = conv_lowering.block_workspace(geom, 3, 3, np.float64, 1)
    y, _, _ = run(conv_lowering.blocked_forward, conv_lowering.blocked_backward, workspace, geom,
                  x, weight, dy)  # fmt: skip
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    for oh in range(geom.out_h):
        for ow in range(geom.out_w):
            window = padded[:, :, 2 * oh : 2 * oh + 3, 2 * ow : 2 * ow + 2]
            expected = np.einsum("ichw,fchw->if", window, weight)
            assert np.allclose(y[:, :, oh, ow], expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("window", [GEOMETRIES[0], GEOMETRIES[2]])
def test_d_weight_is_the_same_without_dx(window):
    geom, x, weight, dy = case(window, 4)
    cpu = NumpyBackend()
    workspace = cpu.conv_workspace(geom, 3, 4, np.float64)
    forward, backward = cpu.conv_forward, cpu.conv_backward
    _, with_dx, _ = run(forward, backward, workspace, geom, x, weight, dy)
    _, without_dx, _ = run(forward, backward, workspace, geom, x, weight, dy, with_dx=False)
    assert np.array_equal(with_dx, without_dx)


def test_a_worker_with_no_rows_gets_a_zero_weight_gradient():
    geom, x, weight, dy = case(GEOMETRIES[0], 0)
    cpu = NumpyBackend()
    workspace = cpu.conv_workspace(geom, 3, 4, np.float64)
    _, d_weight, dx = run(cpu.conv_forward, cpu.conv_backward, workspace, geom, x, weight, dy)
    assert dx.shape == (0, 1, 8, 8) and np.array_equal(d_weight, np.zeros_like(weight))


def test_conv_forward_names_a_wrong_shape():
    geom = WindowGeometry(2, 6, 6, 3, 3, 1, 1)
    cpu = NumpyBackend()
    workspace = cpu.conv_workspace(geom, 3, 4, np.float32)
    x, weight = np.zeros((4, 2, 6, 6), np.float32), np.zeros((3, 2, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"conv_forward: y has shape \(4, 3, 5, 6\), expected"):
        cpu.conv_forward(x, weight, np.zeros((4, 3, 5, 6), np.float32), workspace, geom)
