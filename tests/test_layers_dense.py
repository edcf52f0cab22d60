"""Dense and Bias (layers/dense.py, layers/bias.py) against torch, and Dense's input check."""

from __future__ import annotations

import numpy as np
import pytest
from layer_helpers import CPU, conv_problem, run_layers, torch_run

from convnet_gpu import Bias, Conv2D, Dense, Net


def test_dense_bias_agrees_with_torch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(8)
    x, weight, bias = (
        rng.standard_normal((5, 7)),
        rng.standard_normal((7, 4)),
        rng.standard_normal(4),
    )
    dy = rng.standard_normal((5, 4))
    dense, bias_layer = Dense(4), Bias()
    _, y, dx = run_layers(
        [dense, bias_layer], x, dy=dy, params={0: {"weight": weight}, 1: {"bias": bias}}
    )
    # ours: y = x @ W (W is (in, out)); torch's linear takes (out, in)
    out, (tx, tw_t, tb) = torch_run(lambda a, w, b: F.linear(a, w, b), x, weight.T.copy(), bias)
    out.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(y, out.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dense.grads["weight"], tw_t.grad.numpy().T, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(bias_layer.grads["bias"], tb.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_conv_bias_agrees_with_torch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x, weight, dy, conv, stride, pad = conv_problem("3x3_pad1_nonsquare_7x9", seed=9)
    bias = np.random.default_rng(9).standard_normal(weight.shape[0])
    bias_layer = Bias()
    _, y, dx = run_layers(
        [conv, bias_layer], x, dy=dy, params={0: {"weight": weight}, 1: {"bias": bias}}
    )
    out, (tx, tw, tb) = torch_run(
        lambda a, w, b: F.conv2d(a, w, b, stride=stride, padding=pad), x, weight, bias
    )
    out.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(y, out.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(bias_layer.grads["bias"], tb.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_dense_without_flatten_raises():
    net = Net([Conv2D(2, 3), Dense(4)], None, CPU)
    with pytest.raises(ValueError, match="Flatten"):
        net.setup(2, (1, 5, 5))
