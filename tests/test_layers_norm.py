"""BatchNorm (layers/norm.py) against torch.nn.functional.batch_norm and numpy formulas."""

from __future__ import annotations

import numpy as np
import pytest
from layer_helpers import CPU, EXACT, forward_backward, layer_net

from convnet_gpu import BatchNorm, Dense, Net
from convnet_gpu.layers import Layer

# ---- BatchNorm against torch -------------------------------------------------------------------
BN_SHAPES = {"2d": (4, 3, 5, 6), "1d": (6, 7)}  # (n, C, H, W) and (n, F)


def _bn_problem(kind, seed):
    rng = np.random.default_rng(seed)
    shape = BN_SHAPES[kind]
    channels = shape[1]
    x = rng.standard_normal(shape) * 2.0 + 0.7
    dy = rng.standard_normal(shape)
    gamma, beta = rng.uniform(0.5, 1.5, channels), rng.standard_normal(channels)
    return x, dy, gamma, beta


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("kind", list(BN_SHAPES))
def test_batchnorm_agrees_with_torch(kind, train):
    torch = pytest.importorskip("torch")
    x, dy, gamma, beta = _bn_problem(kind, seed=1 if train else 2)
    channels = gamma.size
    rng = np.random.default_rng(3)
    running_mean, running_var = rng.standard_normal(channels), rng.uniform(0.5, 2.0, channels)

    bn = BatchNorm(momentum=0.2, eps=1e-4)
    net = layer_net([bn], len(x), x.shape[1:])
    bn.params["gamma"][...], bn.params["beta"][...] = gamma, beta
    bn.buffers["running_mean"][...], bn.buffers["running_var"][...] = running_mean, running_var
    y, dx = forward_backward(net, x, dy, train)

    tx, tgamma, tbeta = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
    t_mean, t_var = torch.tensor(running_mean), torch.tensor(running_var)
    out = torch.nn.functional.batch_norm(
        tx, t_mean, t_var, tgamma, tbeta, training=train, momentum=0.2, eps=1e-4
    )
    out.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(y, out.detach().numpy(), **EXACT)
    np.testing.assert_allclose(dx, tx.grad.numpy(), **EXACT)
    np.testing.assert_allclose(bn.grads["gamma"], tgamma.grad.numpy(), **EXACT)
    np.testing.assert_allclose(bn.grads["beta"], tbeta.grad.numpy(), **EXACT)
    np.testing.assert_allclose(bn.buffers["running_mean"], t_mean.numpy(), **EXACT)
    np.testing.assert_allclose(bn.buffers["running_var"], t_var.numpy(), **EXACT)
    moved = not np.allclose(bn.buffers["running_mean"], running_mean)
    assert moved == train  # training moves the running statistics, evaluation does not


@pytest.mark.parametrize("kind", list(BN_SHAPES))
def test_batchnorm_running_stats_follow_torch_over_steps(kind):
    torch = pytest.importorskip("torch")
    shape = BN_SHAPES[kind]
    batch, channels = shape[0], shape[1]
    bn = BatchNorm()  # momentum 0.1, eps 1e-5: PyTorch's defaults
    net = layer_net([bn], batch, shape[1:])
    np.testing.assert_array_equal(bn.buffers["running_mean"], np.zeros(channels))
    np.testing.assert_array_equal(bn.buffers["running_var"], np.ones(channels))
    t_mean, t_var = (
        torch.zeros(channels, dtype=torch.float64),
        torch.ones(channels, dtype=torch.float64),
    )
    rng = np.random.default_rng(4)
    for step in range(5):
        n = batch - 1 if step == 4 else batch  # a smaller last batch divides by its own count
        x = rng.standard_normal((n,) + shape[1:]) * (1 + step) + step
        net.load_batch(x)
        net.forward(n, train=True)
        torch.nn.functional.batch_norm(torch.from_numpy(x), t_mean, t_var, training=True)
        np.testing.assert_allclose(bn.buffers["running_mean"], t_mean.numpy(), **EXACT)
        np.testing.assert_allclose(bn.buffers["running_var"], t_var.numpy(), **EXACT)
    assert np.all(bn.buffers["running_var"] > 1.5)  # really moved towards var ~ 16


def test_batchnorm_buffers_are_state_not_parameters():
    bn, dense = BatchNorm(), Dense(3)
    net = Net([Dense(4), bn, dense], None, CPU, dtype=np.float64).setup(2, (5,))
    assert net.parameter_count() == 5 * 4 + 2 * 4 + 4 * 3  # gamma and beta only
    assert set(bn.buffers) == {"running_mean", "running_var"}
    assert set(bn.params) == {"gamma", "beta"}
    np.testing.assert_array_equal(bn.params["gamma"], 1.0)
    np.testing.assert_array_equal(bn.params["beta"], 0.0)
    mask = net.params.decay_mask
    assert mask.sum() == 5 * 4 + 4 * 3  # no weight decay on gamma, beta
    assert dense.buffers == {} and Layer().buffers == {}  # every layer has (empty) buffers


def test_batchnorm_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match=r"\(C, H, W\) or \(features,\)"):
        Net([BatchNorm()], None, CPU).setup(2, (3, 4))
    with pytest.raises(ValueError, match="momentum"):
        BatchNorm(momentum=1.5)
    net = layer_net([BatchNorm()], 4, (3,))
    net.load_batch(np.ones((1, 3)))
    with pytest.raises(ValueError, match="more than one value per channel"):
        net.forward(1, train=True)
    net.forward(1, train=False)  # evaluation needs no batch statistics


def test_batchnorm_backward_without_input_gradient_still_gives_parameter_gradients():
    x, dy, gamma, beta = _bn_problem("2d", seed=5)
    bn = BatchNorm()
    net = Net([bn], None, CPU, dtype=np.float64).setup(len(x), x.shape[1:])  # no input grad
    n = net.load_batch(x)
    net.forward(n, train=True)
    net.blobs[-1].grad[:n] = dy
    net.backward(n)
    x_hat = (x - x.mean(axis=(0, 2, 3), keepdims=True)) / np.sqrt(
        x.var(axis=(0, 2, 3), keepdims=True) + 1e-5
    )
    np.testing.assert_allclose(bn.grads["gamma"], (dy * x_hat).sum(axis=(0, 2, 3)), **EXACT)
    np.testing.assert_allclose(bn.grads["beta"], dy.sum(axis=(0, 2, 3)), **EXACT)
