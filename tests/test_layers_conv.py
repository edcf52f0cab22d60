"""Conv2D (layers/conv.py) against a naive loop convolution, its adjoint and torch."""

from __future__ import annotations

import numpy as np
import pytest
from layer_helpers import CONV_GEOMETRIES, CPU, conv_problem, out_size, run_layers, torch_run

from convnet_gpu import Conv2D, Net


# ---- naive loop convolution and its adjoint (the independent oracle) ---------------------------
def naive_conv_forward(x, w, stride, pad):
    n, c, h, wd = x.shape
    f, _, kh, kw = w.shape
    oh, ow = out_size(h, kh, stride, pad), out_size(wd, kw, stride, pad)
    y = np.zeros((n, f, oh, ow))
    for b in range(n):
        for o in range(f):
            for i in range(oh):
                for j in range(ow):
                    acc = 0.0
                    for ch in range(c):
                        for p in range(kh):
                            for q in range(kw):
                                r, s = i * stride + p - pad, j * stride + q - pad
                                if 0 <= r < h and 0 <= s < wd:
                                    acc += x[b, ch, r, s] * w[o, ch, p, q]
                    y[b, o, i, j] = acc
    return y


def naive_conv_backward(x, w, dy, stride, pad):
    """(dx, dW) of L = sum(y * dy), by walking the same loops as the forward and scattering."""
    n, c, h, wd = x.shape
    f, _, kh, kw = w.shape
    _, _, oh, ow = dy.shape
    dx, dw = np.zeros_like(x), np.zeros_like(w)
    for b in range(n):
        for o in range(f):
            for i in range(oh):
                for j in range(ow):
                    g = dy[b, o, i, j]
                    for ch in range(c):
                        for p in range(kh):
                            for q in range(kw):
                                r, s = i * stride + p - pad, j * stride + q - pad
                                if 0 <= r < h and 0 <= s < wd:
                                    dx[b, ch, r, s] += w[o, ch, p, q] * g
                                    dw[o, ch, p, q] += x[b, ch, r, s] * g
    return dx, dw


@pytest.mark.parametrize("geometry", list(CONV_GEOMETRIES))
def test_conv2d_forward_matches_naive_loop(geometry):
    x, weight, _, conv, stride, pad = conv_problem(geometry)
    _, y, _ = run_layers([conv], x, params={0: {"weight": weight}})
    expected = naive_conv_forward(x, weight, stride, pad)
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("geometry", list(CONV_GEOMETRIES))
def test_conv2d_backward_matches_naive_adjoint(geometry):
    x, weight, dy, conv, stride, pad = conv_problem(geometry, seed=1)
    net, _, dx = run_layers([conv], x, dy=dy, params={0: {"weight": weight}})
    expected_dx, expected_dw = naive_conv_backward(x, weight, dy, stride, pad)
    np.testing.assert_allclose(dx, expected_dx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(conv.grads["weight"], expected_dw, rtol=1e-12, atol=1e-12)


def test_conv2d_overwrites_stale_gradients():
    """Backward writes dx and dW (no accumulation across steps): a second run gives the same."""
    x, weight, dy, conv, stride, pad = conv_problem("3x3_stride2_pad1", seed=2)
    net, _, dx = run_layers([conv], x, dy=dy, params={0: {"weight": weight}})
    net.blobs[0].grad.fill(123.0)
    net.params.grad.fill(-5.0)
    net.forward(len(x))
    net.backward(len(x))
    expected_dx, expected_dw = naive_conv_backward(x, weight, dy, stride, pad)
    np.testing.assert_allclose(net.blobs[0].grad, expected_dx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(conv.grads["weight"], expected_dw, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "geometry", ["5x5_pad2", "3x3_stride2_pad1", "2x3_kernel_stride2_pad1_7x9"]
)
def test_conv2d_agrees_with_torch(geometry):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x, weight, dy, conv, stride, pad = conv_problem(geometry, seed=6)
    _, y, dx = run_layers([conv], x, dy=dy, params={0: {"weight": weight}})
    out, (tx, tw) = torch_run(lambda a, w: F.conv2d(a, w, stride=stride, padding=pad), x, weight)
    out.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(y, out.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(conv.grads["weight"], tw.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_conv_on_flat_input_raises():
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        Net([Conv2D(2, 3)], None, CPU).setup(2, (25,))
