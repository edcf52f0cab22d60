"""MaxPool2D, AvgPool2D and GlobalAvgPool (layers/pool.py) against naive loops, numpy and torch."""

from __future__ import annotations

import numpy as np
import pytest
from layer_helpers import CPU, EXACT, forward_backward, layer_net, out_size, run_layers, torch_run

from convnet_gpu import AvgPool2D, GlobalAvgPool, MaxPool2D, Net


def distinct_values(rng, shape):
    """All different (max pooling has one unambiguous maximum per window), order random."""
    size = int(np.prod(shape))
    return (rng.permutation(size).reshape(shape) - size / 2.0) / 7.0


# ---- pooling against naive loops ----------------------------------------------------------------
def naive_maxpool(x, k, stride, pad):
    n, c, h, w = x.shape
    oh, ow = out_size(h, k, stride, pad), out_size(w, k, stride, pad)
    y = np.empty((n, c, oh, ow))
    source = np.empty((n, c, oh, ow, 2), dtype=int)  # (row, col) of the maximum in x
    for b in range(n):
        for ch in range(c):
            for i in range(oh):
                for j in range(ow):
                    best, where = -np.inf, None
                    for p in range(k):
                        for q in range(k):
                            r, s = i * stride + p - pad, j * stride + q - pad
                            if 0 <= r < h and 0 <= s < w and x[b, ch, r, s] > best:
                                best, where = x[b, ch, r, s], (r, s)
                    y[b, ch, i, j] = best
                    source[b, ch, i, j] = where
    return y, source


def naive_maxpool_backward(x_shape, source, dy):
    dx = np.zeros(x_shape)
    n, c, oh, ow = dy.shape
    for b in range(n):
        for ch in range(c):
            for i in range(oh):
                for j in range(ow):
                    r, s = source[b, ch, i, j]
                    dx[b, ch, r, s] += dy[b, ch, i, j]
    return dx


def naive_avgpool(x, k, stride, pad):
    n, c, h, w = x.shape
    oh, ow = out_size(h, k, stride, pad), out_size(w, k, stride, pad)
    y = np.zeros((n, c, oh, ow))
    for b in range(n):
        for ch in range(c):
            for i in range(oh):
                for j in range(ow):
                    for p in range(k):
                        for q in range(k):
                            r, s = i * stride + p - pad, j * stride + q - pad
                            if 0 <= r < h and 0 <= s < w:  # padding counts as zero
                                y[b, ch, i, j] += x[b, ch, r, s]
                    y[b, ch, i, j] /= k * k
    return y


def naive_avgpool_backward(x_shape, dy, k, stride, pad):
    n, c, h, w = x_shape
    dx = np.zeros(x_shape)
    for b in range(n):
        for ch in range(c):
            for i in range(dy.shape[2]):
                for j in range(dy.shape[3]):
                    for p in range(k):
                        for q in range(k):
                            r, s = i * stride + p - pad, j * stride + q - pad
                            if 0 <= r < h and 0 <= s < w:
                                dx[b, ch, r, s] += dy[b, ch, i, j] / (k * k)
    return dx


# (kernel, stride, pad, input shape)
POOL_GEOMETRIES = {
    "2x2_stride2": (2, 2, 0, (2, 3, 6, 6)),
    "2x2_stride2_odd_7x9": (2, 2, 0, (2, 2, 7, 9)),
    "3x3_stride2_pad1": (3, 2, 1, (2, 2, 7, 7)),
    "3x3_stride1_overlapping": (3, 1, 0, (2, 2, 5, 6)),
    "3x3_stride1_pad1_overlapping": (3, 1, 1, (1, 2, 5, 5)),
}


@pytest.mark.parametrize("geometry", list(POOL_GEOMETRIES))
def test_maxpool_forward_backward_match_naive_loop(geometry):
    k, stride, pad, shape = POOL_GEOMETRIES[geometry]
    rng = np.random.default_rng(3)
    x = distinct_values(rng, shape)
    y_ref, source = naive_maxpool(x, k, stride, pad)
    dy = rng.standard_normal(y_ref.shape)
    _, y, dx = run_layers([MaxPool2D(k, stride, pad)], x, dy=dy)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_allclose(
        dx, naive_maxpool_backward(shape, source, dy), rtol=1e-14, atol=1e-14
    )


@pytest.mark.parametrize("geometry", list(POOL_GEOMETRIES))
def test_avgpool_forward_backward_match_naive_loop(geometry):
    k, stride, pad, shape = POOL_GEOMETRIES[geometry]
    rng = np.random.default_rng(4)
    x = rng.standard_normal(shape)
    y_ref = naive_avgpool(x, k, stride, pad)
    dy = rng.standard_normal(y_ref.shape)
    _, y, dx = run_layers([AvgPool2D(k, stride, pad)], x, dy=dy)
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(
        dx, naive_avgpool_backward(shape, dy, k, stride, pad), rtol=1e-12, atol=1e-14
    )


def test_maxpool_with_all_negative_inputs_ignores_padding():
    """Padding is not a zero: with all inputs < 0 the border windows still pick an input."""
    x = -1.0 - distinct_values(np.random.default_rng(5), (1, 1, 4, 4)) ** 2
    _, y, _ = run_layers([MaxPool2D(3, 2, 1)], x)
    y_ref, _ = naive_maxpool(x, 3, 2, 1)
    assert np.all(y < 0)
    np.testing.assert_array_equal(y, y_ref)


@pytest.mark.parametrize(
    "k,stride,pad,shape",
    [(2, 2, 0, (2, 3, 6, 6)), (3, 2, 1, (2, 2, 7, 7)), (3, 1, 1, (1, 2, 5, 6))],
)
def test_pooling_agrees_with_torch(k, stride, pad, shape):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(7)
    x = distinct_values(rng, shape)
    for layer, fn in (
        (MaxPool2D(k, stride, pad), lambda a: F.max_pool2d(a, k, stride, pad)),
        (
            AvgPool2D(k, stride, pad),
            lambda a: F.avg_pool2d(a, k, stride, pad, count_include_pad=True),
        ),
    ):
        out, (tx,) = torch_run(fn, x)
        dy = rng.standard_normal(tuple(out.shape))
        out.backward(torch.from_numpy(dy))
        _, y, dx = run_layers([layer], x, dy=dy)
        np.testing.assert_allclose(
            y, out.detach().numpy(), rtol=1e-12, atol=1e-14, err_msg=layer.describe()
        )
        np.testing.assert_allclose(
            dx, tx.grad.numpy(), rtol=1e-12, atol=1e-14, err_msg=layer.describe()
        )


def test_pool_window_that_does_not_fit_raises():
    with pytest.raises(ValueError, match="does not fit"):
        Net([MaxPool2D(3)], None, CPU).setup(2, (1, 2, 2))


# ---- GlobalAvgPool ------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_global_avg_pool_is_the_plane_mean(dtype):
    rng = np.random.default_rng(9)
    x, dy = rng.standard_normal((3, 4, 5, 6)), rng.standard_normal((3, 4))
    net = layer_net([GlobalAvgPool()], 3, (4, 5, 6), dtype)
    assert net.output_shape == (4,)
    y, dx = forward_backward(net, x, dy, train=True)
    tol = dict(rtol=1e-6, atol=1e-6) if dtype == np.float32 else EXACT
    np.testing.assert_allclose(y, x.mean(axis=(2, 3)), **tol)
    np.testing.assert_allclose(dx, np.broadcast_to(dy[:, :, None, None] / 30, x.shape), **tol)


def test_global_avg_pool_needs_planes():
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        Net([GlobalAvgPool()], None, CPU).setup(2, (5,))
