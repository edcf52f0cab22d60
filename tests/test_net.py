"""Net (net.py): end to end vs torch, a smaller last batch, parameter views, init, load_batch."""

from __future__ import annotations

import numpy as np
import pytest
from layer_helpers import CPU

from convnet_gpu import (
    AvgPool2D,
    Bias,
    Conv2D,
    Dense,
    Flatten,
    LeakyReLU,
    MaxPool2D,
    Net,
    ReLU,
    SoftmaxCrossEntropy,
    Tanh,
)


def test_small_net_with_loss_agrees_with_torch():
    """Conv > Bias > ReLU > MaxPool > Flatten > Dense > Bias > loss, end to end, vs torch."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(11)
    x = rng.standard_normal((3, 2, 6, 6))
    labels = rng.integers(0, 4, size=3).astype(np.int32)
    layers = [Conv2D(3, 3, pad=1), Bias(), ReLU(), MaxPool2D(2), Flatten(), Dense(4), Bias()]
    net = Net(layers, SoftmaxCrossEntropy(), CPU, dtype=np.float64, seed=3)
    net.setup(3, (2, 6, 6), input_grad=True)
    layers[1].params["bias"][...] = rng.standard_normal(3)
    layers[6].params["bias"][...] = rng.standard_normal(4)
    n = net.load_batch(x, labels)
    net.forward(n)
    net.backward(n)

    cw, cb, dw, db = (
        torch.tensor(a, requires_grad=True)
        for a in (
            layers[0].params["weight"].copy(),
            layers[1].params["bias"].copy(),
            layers[5].params["weight"].T.copy(),
            layers[6].params["bias"].copy(),
        )
    )
    tx = torch.tensor(x, requires_grad=True)
    h = F.max_pool2d(F.relu(F.conv2d(tx, cw, cb, padding=1)), 2)
    out = F.cross_entropy(F.linear(h.flatten(1), dw, db), torch.from_numpy(labels.astype(np.int64)))
    out.backward()
    assert float(net.loss.loss) == pytest.approx(out.item(), rel=1e-12)
    np.testing.assert_allclose(net.blobs[0].grad, tx.grad.numpy(), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(layers[0].grads["weight"], cw.grad.numpy(), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(layers[1].grads["bias"], cb.grad.numpy(), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(layers[5].grads["weight"], dw.grad.numpy().T, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(layers[6].grads["bias"], db.grad.numpy(), rtol=1e-10, atol=1e-13)


# ---- a smaller last batch (the views path) -----------------------------------------------------
def _small_conv_net():
    return [
        Conv2D(3, 3, pad=1),
        Bias(),
        ReLU(),
        MaxPool2D(2),
        Conv2D(4, 3, stride=2, pad=1),
        Bias(),
        Tanh(),
        AvgPool2D(2),
        Flatten(),
        Dense(6),
        Bias(),
        LeakyReLU(0.1),
        Dense(5),
        Bias(),
    ]


def test_smaller_last_batch_matches_a_net_of_that_batch_size():
    rng = np.random.default_rng(16)
    input_shape = (2, 8, 8)
    big = Net(_small_conv_net(), SoftmaxCrossEntropy(), CPU, dtype=np.float64, seed=7)
    big.setup(8, input_shape, input_grad=True)
    exact = Net(_small_conv_net(), SoftmaxCrossEntropy(), CPU, dtype=np.float64, seed=7)
    exact.setup(5, input_shape, input_grad=True)
    np.testing.assert_array_equal(big.params.data, exact.params.data)

    # a full batch of other data first, so stale rows 5..7 hold something
    n = big.load_batch(
        rng.standard_normal((8,) + input_shape), rng.integers(0, 5, size=8).astype(np.int32)
    )
    big.forward(n)
    big.backward(n)

    x = rng.standard_normal((5,) + input_shape)
    labels = rng.integers(0, 5, size=5).astype(np.int32)
    results = []
    for net in (big, exact):
        n = net.load_batch(x, labels)
        assert n == 5
        out = net.forward(n).copy()
        assert out.shape == (5, 5)
        net.backward(n)
        results.append(
            (
                out,
                float(net.loss.loss),
                net.params.grad.copy(),
                net.blobs[0].grad[:5].copy(),
                int(net.count_correct(n)),
            )
        )
    (out_b, loss_b, grad_b, dx_b, hits_b), (out_e, loss_e, grad_e, dx_e, hits_e) = results
    np.testing.assert_allclose(out_b, out_e, rtol=1e-12, atol=1e-15)
    assert loss_b == pytest.approx(loss_e, rel=1e-12)
    np.testing.assert_allclose(grad_b, grad_e, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(dx_b, dx_e, rtol=1e-10, atol=1e-14)
    assert hits_b == hits_e


# ---- Net ---------------------------------------------------------------------------------------
def test_parameter_views_share_the_flat_buffer():
    layers = [Conv2D(2, 3, pad=1), Bias(), Flatten(), Dense(3), Bias()]
    net = Net(layers, None, CPU, dtype=np.float64).setup(4, (1, 5, 5))
    expected_size = 2 * 1 * 3 * 3 + 2 + 2 * 5 * 5 * 3 + 3
    assert net.params.size == net.parameter_count() == expected_size
    for layer in layers:
        for name, value in layer.params.items():
            assert np.shares_memory(value, net.params.data), (layer, name)
            assert np.shares_memory(layer.grads[name], net.params.grad), (layer, name)
    net.params.data[:] = np.arange(expected_size, dtype=np.float64)
    np.testing.assert_array_equal(layers[0].params["weight"].ravel(), np.arange(18))
    np.testing.assert_array_equal(layers[1].params["bias"], [18, 19])
    assert layers[4].params["bias"][-1] == expected_size - 1
    net.params.grad.fill(2.5)
    assert np.all(layers[3].grads["weight"] == 2.5)
    layers[3].params["weight"][...] = -1.0  # and the other way round
    assert np.count_nonzero(net.params.data == -1.0) == 50 * 3


def test_weight_decay_mask_is_one_for_weights_zero_for_biases():
    layers = [Conv2D(2, 3, pad=1), Bias(), Flatten(), Dense(3), Bias()]
    net = Net(layers, None, CPU, dtype=np.float64).setup(2, (1, 4, 4))
    mask = CPU.to_host(net.params.decay_mask)
    assert mask.shape == net.params.data.shape
    assert set(np.unique(mask)) <= {0.0, 1.0}
    for layer in layers:
        for name, view in layer.params.items():
            net.params.data[:] = 0.0
            view[...] = 1.0
            selected = net.params.data == 1.0
            expected = 1.0 if name == "weight" else 0.0
            assert np.all(mask[selected] == expected), (layer, name)
    assert mask.sum() == 2 * 9 + 32 * 3


def test_setup_initialises_weights_he_and_biases_zero():
    layers = [Flatten(), Dense(400), Bias()]
    net = Net(layers, None, CPU, dtype=np.float64, seed=1).setup(2, (1, 10, 10))
    weight = layers[1].params["weight"]
    assert np.all(layers[2].params["bias"] == 0)
    assert weight.std() == pytest.approx(np.sqrt(2.0 / 100), rel=0.05)
    again = Net([Flatten(), Dense(400), Bias()], None, CPU, dtype=np.float64, seed=1).setup(
        2, (1, 10, 10)
    )
    np.testing.assert_array_equal(again.params.data, net.params.data)


def test_uniform_init_draws_within_one_over_sqrt_fan_in():
    layers = [Conv2D(50, 3, init="uniform"), Flatten(), Dense(40, init="uniform")]
    Net(layers, None, CPU, dtype=np.float64, seed=2).setup(1, (4, 5, 5))
    for weight, fan_in in ((layers[0].params["weight"], 4 * 9), (layers[2].params["weight"], 450)):
        bound = 1 / np.sqrt(fan_in)
        assert np.abs(weight).max() <= bound and np.abs(weight).max() > 0.95 * bound
        assert weight.std() == pytest.approx(bound / np.sqrt(3), rel=0.05)


@pytest.mark.parametrize(
    "shape",
    [(3, 1, 5, 4), (3, 5, 5), (5, 1, 5, 5), (0, 1, 5, 5)],
    ids=["wrong_width", "missing_channel_axis", "too_many_rows", "no_rows"],
)
def test_load_batch_with_wrong_shape_raises(shape):
    net = Net([Conv2D(2, 3, pad=1)], None, CPU, dtype=np.float64).setup(4, (1, 5, 5))
    with pytest.raises(
        ValueError, match=r"does not fit this net \(at most 4 rows of \(1, 5, 5\)\)"
    ):
        net.load_batch(np.zeros(shape))


def test_load_batch_before_setup_raises():
    net = Net([ReLU()], None, CPU)
    with pytest.raises(RuntimeError, match="setup"):
        net.load_batch(np.zeros((2, 3)))


def test_load_batch_copies_into_the_input_blob():
    net = Net([ReLU()], None, CPU, dtype=np.float32).setup(4, (3,))
    host = np.arange(6, dtype=np.float64).reshape(2, 3)
    assert net.load_batch(host) == 2
    np.testing.assert_array_equal(net.blobs[0].data[:2], host)
    host[0, 0] = 99.0
    assert net.blobs[0].data[0, 0] == 0.0  # a copy, not a view of the host array
