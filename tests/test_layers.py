"""Layers, Net and SGD on the CPU against independent oracles (naive loops, numpy formulas, torch).

Everything is float64 unless a test says otherwise, and every shape is tiny.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from convnet_gpu import (
    SGD,
    AvgPool2D,
    Bias,
    Conv2D,
    Dense,
    Flatten,
    LeakyReLU,
    MaxPool2D,
    Net,
    ReLU,
    Sigmoid,
    SoftmaxCrossEntropy,
    Tanh,
    get_backend,
)

CPU = get_backend("cpu")


# ---- a harness: run layers through a Net with given parameters, input and upstream gradient -----
def run_layers(layers, x, dy=None, params=None, dtype=np.float64, batch=None, seed=0):
    """Forward (and, given dy, backward) `layers` on x inside a float64 Net.

    params: {layer index: {param name: value}} written into the net's parameter views.
    Returns (net, y, dx) with host copies of the output and input gradient (dx None without dy).
    """
    net = Net(layers, None, CPU, dtype=dtype, seed=seed)
    net.setup(batch or len(x), x.shape[1:], input_grad=True)
    for index, values in (params or {}).items():
        for name, value in values.items():
            target = layers[index].params[name]
            assert target.shape == value.shape, (name, target.shape, value.shape)
            target[...] = value
    n = net.load_batch(x)
    y = net.forward(n, train=True).copy()
    dx = None
    if dy is not None:
        net.blobs[-1].grad[:n] = dy
        net.backward(n)
        dx = net.blobs[0].grad[:n].copy()
    return net, y, dx


def distinct_values(rng, shape):
    """All different (max pooling has one unambiguous maximum per window), order random."""
    size = int(np.prod(shape))
    return (rng.permutation(size).reshape(shape) - size / 2.0) / 7.0


# ---- naive loop convolution and its adjoint (the independent oracle) ---------------------------
def out_size(size, k, stride, pad):
    return (size + 2 * pad - k) // stride + 1


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


# (batch, C_in, H, W, F, kernel, stride, pad)
CONV_GEOMETRIES = {
    "5x5_pad2": (2, 2, 6, 6, 3, 5, 1, 2),
    "3x3_stride2_pad1": (2, 3, 7, 7, 2, 3, 2, 1),
    "1x1": (2, 4, 5, 5, 3, 1, 1, 0),
    "3x3_pad1_nonsquare_7x9": (2, 2, 7, 9, 3, 3, 1, 1),
    "3x3_nopad_5x6": (3, 2, 5, 6, 2, 3, 1, 0),
    "2x3_kernel_stride2_pad1_7x9": (2, 3, 7, 9, 2, (2, 3), 2, 1),
    "4x4_stride3_single_channel": (1, 1, 8, 8, 1, 4, 3, 0),
}


def _conv_problem(geometry, seed=0):
    batch, c, h, w, f, k, stride, pad = CONV_GEOMETRIES[geometry]
    kh, kw = (k, k) if isinstance(k, int) else k
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, c, h, w))
    weight = rng.standard_normal((f, c, kh, kw))
    dy_shape = (batch, f, out_size(h, kh, stride, pad), out_size(w, kw, stride, pad))
    dy = rng.standard_normal(dy_shape)
    return x, weight, dy, Conv2D(f, k, stride=stride, pad=pad), stride, pad


@pytest.mark.parametrize("geometry", list(CONV_GEOMETRIES))
def test_conv2d_forward_matches_naive_loop(geometry):
    x, weight, _, conv, stride, pad = _conv_problem(geometry)
    _, y, _ = run_layers([conv], x, params={0: {"weight": weight}})
    expected = naive_conv_forward(x, weight, stride, pad)
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("geometry", list(CONV_GEOMETRIES))
def test_conv2d_backward_matches_naive_adjoint(geometry):
    x, weight, dy, conv, stride, pad = _conv_problem(geometry, seed=1)
    net, _, dx = run_layers([conv], x, dy=dy, params={0: {"weight": weight}})
    expected_dx, expected_dw = naive_conv_backward(x, weight, dy, stride, pad)
    np.testing.assert_allclose(dx, expected_dx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(conv.grads["weight"], expected_dw, rtol=1e-12, atol=1e-12)


def test_conv2d_overwrites_stale_gradients():
    """Backward writes dx and dW (no accumulation across steps): a second run gives the same."""
    x, weight, dy, conv, stride, pad = _conv_problem("3x3_stride2_pad1", seed=2)
    net, _, dx = run_layers([conv], x, dy=dy, params={0: {"weight": weight}})
    net.blobs[0].grad.fill(123.0)
    net.params.grad.fill(-5.0)
    net.forward(len(x))
    net.backward(len(x))
    expected_dx, expected_dw = naive_conv_backward(x, weight, dy, stride, pad)
    np.testing.assert_allclose(net.blobs[0].grad, expected_dx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(conv.grads["weight"], expected_dw, rtol=1e-12, atol=1e-12)


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


# ---- torch as an oracle: forward and backward of each op on the same float64 data -------------
def _torch_run(fn, *arrays):
    """fn(*tensors) on float64 leaves requiring grad; returns (torch output, leaf tensors)."""
    torch = pytest.importorskip("torch")
    leaves = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays]
    return fn(*leaves), leaves


@pytest.mark.parametrize(
    "geometry", ["5x5_pad2", "3x3_stride2_pad1", "2x3_kernel_stride2_pad1_7x9"]
)
def test_conv2d_agrees_with_torch(geometry):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x, weight, dy, conv, stride, pad = _conv_problem(geometry, seed=6)
    _, y, dx = run_layers([conv], x, dy=dy, params={0: {"weight": weight}})
    out, (tx, tw) = _torch_run(lambda a, w: F.conv2d(a, w, stride=stride, padding=pad), x, weight)
    out.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(y, out.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(conv.grads["weight"], tw.grad.numpy(), rtol=1e-12, atol=1e-12)


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
        out, (tx,) = _torch_run(fn, x)
        dy = rng.standard_normal(tuple(out.shape))
        out.backward(torch.from_numpy(dy))
        _, y, dx = run_layers([layer], x, dy=dy)
        np.testing.assert_allclose(
            y, out.detach().numpy(), rtol=1e-12, atol=1e-14, err_msg=layer.describe()
        )
        np.testing.assert_allclose(
            dx, tx.grad.numpy(), rtol=1e-12, atol=1e-14, err_msg=layer.describe()
        )


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
    out, (tx, tw_t, tb) = _torch_run(lambda a, w, b: F.linear(a, w, b), x, weight.T.copy(), bias)
    out.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(y, out.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dense.grads["weight"], tw_t.grad.numpy().T, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(bias_layer.grads["bias"], tb.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_conv_bias_agrees_with_torch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x, weight, dy, conv, stride, pad = _conv_problem("3x3_pad1_nonsquare_7x9", seed=9)
    bias = np.random.default_rng(9).standard_normal(weight.shape[0])
    bias_layer = Bias()
    _, y, dx = run_layers(
        [conv, bias_layer], x, dy=dy, params={0: {"weight": weight}, 1: {"bias": bias}}
    )
    out, (tx, tw, tb) = _torch_run(
        lambda a, w, b: F.conv2d(a, w, b, stride=stride, padding=pad), x, weight, bias
    )
    out.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(y, out.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(bias_layer.grads["bias"], tb.grad.numpy(), rtol=1e-12, atol=1e-12)


def _loss_on(logits, labels, dtype=np.float64, batch=None):
    loss = SoftmaxCrossEntropy()
    loss.setup(CPU, logits.shape[1:], batch or len(logits), dtype)
    logits = np.ascontiguousarray(logits, dtype=dtype)
    value = float(loss.forward(logits, labels.astype(np.int32)))
    d_logits = np.full_like(logits, np.nan)
    loss.backward(d_logits)
    return loss, value, d_logits


def test_softmax_cross_entropy_agrees_with_torch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(10)
    logits = 3 * rng.standard_normal((6, 5))
    labels = rng.integers(0, 5, size=6)
    _, value, d_logits = _loss_on(logits, labels)
    out, (tz,) = _torch_run(lambda z: F.cross_entropy(z, torch.from_numpy(labels)), logits)
    out.backward()
    assert value == pytest.approx(out.item(), rel=1e-12)
    np.testing.assert_allclose(d_logits, tz.grad.numpy(), rtol=1e-12, atol=1e-14)


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


# ---- activations ------------------------------------------------------------------------------
ACTIVATIONS = {
    "ReLU": (ReLU, lambda x: np.maximum(x, 0.0)),
    "LeakyReLU": (lambda: LeakyReLU(0.1), lambda x: np.where(x > 0, x, 0.1 * x)),
    "Tanh": (Tanh, np.tanh),
    "Sigmoid": (Sigmoid, lambda x: 1.0 / (1.0 + np.exp(-x))),
}


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_activation_forward_matches_formula(name):
    make, formula = ACTIVATIONS[name]
    x = np.linspace(-6, 6, 2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    x[0, 0, 0, :] = [-0.0, 0.0, 1e-300, -1e-300, 0.5]
    _, y, _ = run_layers([make()], x)
    np.testing.assert_allclose(y, formula(x), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_activation_backward_matches_formula(name):
    make, formula = ACTIVATIONS[name]
    rng = np.random.default_rng(12)
    x = 0.2 + 2 * rng.random((2, 3, 4))
    x *= np.where(rng.random(x.shape) < 0.5, -1, 1)  # away from the kink at 0
    dy = rng.standard_normal(x.shape)
    _, _, dx = run_layers([make()], x, dy=dy)
    h = 1e-6
    numeric = (formula(x + h) - formula(x - h)) / (2 * h)
    np.testing.assert_allclose(dx, numeric * dy, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sigmoid_saturates_exactly_without_warnings(dtype):
    x = np.array([[1000.0, -1000.0, 50.0, -50.0, 0.0]], dtype=dtype)
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        _, y, dx = run_layers([Sigmoid()], x, dy=np.ones_like(x), dtype=dtype)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(dx))
    assert y[0, 0] == 1.0 and y[0, 1] == 0.0
    assert y[0, 2] == pytest.approx(1.0) and y[0, 3] == pytest.approx(0.0, abs=1e-20)
    assert y[0, 4] == 0.5
    assert dx[0, 0] == 0.0 and dx[0, 1] == 0.0


@pytest.mark.parametrize(
    "make",
    [ReLU, lambda: LeakyReLU(0.2), Tanh, Sigmoid],
    ids=["ReLU", "LeakyReLU", "Tanh", "Sigmoid"],
)
def test_activations_are_finite_on_huge_inputs(make):
    x = np.array([[1e300, -1e300, 1000.0, -1000.0]])
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        _, y, dx = run_layers([make()], x, dy=np.ones_like(x))
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(dx))


def test_leaky_relu_rejects_bad_slope():
    with pytest.raises(ValueError, match="slope"):
        LeakyReLU(1.0)
    with pytest.raises(ValueError, match="slope"):
        LeakyReLU(-0.1)


# ---- softmax cross-entropy ---------------------------------------------------------------------
def _reference_loss(logits, labels):
    z = np.asarray(logits, np.float64)
    m = z.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(z - m).sum(axis=1))
    return float(np.mean(lse - z[np.arange(len(z)), labels]))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_softmax_cross_entropy_huge_logits(dtype):
    rng = np.random.default_rng(13)
    logits = rng.uniform(-1e4, 1e4, size=(6, 5))
    logits[0] = [1e4, -1e4, 0.0, 1e4 - 1.0, 5e3]  # near-tie at the top
    logits[1] = [-1e4, -1e4, -1e4, -1e4, -1e4]  # all equal: log(5)
    labels = np.array([1, 2, 0, 3, 4, 1])
    logits = logits.astype(dtype)
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        loss, value, d_logits = _loss_on(logits, labels, dtype=dtype)
    expected = _reference_loss(logits, labels)
    assert np.isfinite(value)
    assert value == pytest.approx(expected, rel=1e-6 if dtype == np.float32 else 1e-12)
    assert np.all(np.isfinite(d_logits))
    np.testing.assert_allclose(d_logits.sum(axis=1), 0.0, atol=1e-6)
    _, tied_row, d_tied = _loss_on(logits[1:2], labels[1:2], dtype=dtype)  # all logits equal
    assert tied_row == pytest.approx(np.log(5.0), rel=1e-6)
    np.testing.assert_allclose(d_tied, np.eye(5)[labels[1:2]] * -1 + 0.2, rtol=1e-6, atol=1e-7)


def test_softmax_cross_entropy_moderate_logits_match_reference():
    rng = np.random.default_rng(14)
    logits = rng.standard_normal((7, 10))
    labels = rng.integers(0, 10, size=7)
    _, value, d_logits = _loss_on(logits, labels)
    assert value == pytest.approx(_reference_loss(logits, labels), rel=1e-13)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    onehot = np.eye(10)[labels]
    np.testing.assert_allclose(d_logits, (probs - onehot) / 7, rtol=1e-12, atol=1e-15)


def test_softmax_cross_entropy_uses_only_first_n_rows():
    """A loss set up for 8 rows run on 5: mean over the 5, gradient only in their rows."""
    rng = np.random.default_rng(15)
    logits = rng.standard_normal((5, 4))
    labels = rng.integers(0, 4, size=5)
    _, value, d_logits = _loss_on(logits, labels, batch=8)
    assert value == pytest.approx(_reference_loss(logits, labels), rel=1e-13)
    np.testing.assert_allclose(d_logits.sum(axis=1), 0.0, atol=1e-15)


def test_count_correct_counts_argmax_hits():
    loss = SoftmaxCrossEntropy()
    loss.setup(CPU, (4,), 8, np.float64)
    logits = np.array(
        [[5, 1, 0, 0], [0, 9, 1, 2], [0, 0, 0, 3], [1, 2, 3, 0], [7, 0, 0, 0], [0, 0, 1, 0]],
        dtype=np.float64,
    )
    argmax = logits.argmax(axis=1)  # [0, 1, 3, 2, 0, 2]
    labels = np.array([0, 1, 2, 2, 3, 2], dtype=np.int32)  # hits at rows 0, 1, 3, 5
    assert int(loss.count_correct(logits, labels)) == int(np.sum(argmax == labels)) == 4
    assert int(loss.count_correct(logits[:2], labels[:2])) == 2
    assert int(loss.count_correct(logits, (labels + 1) % 4)) == int(
        np.sum(argmax == (labels + 1) % 4)
    )


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


def test_dense_without_flatten_raises():
    net = Net([Conv2D(2, 3), Dense(4)], None, CPU)
    with pytest.raises(ValueError, match="Flatten"):
        net.setup(2, (1, 5, 5))


def test_conv_on_flat_input_raises():
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        Net([Conv2D(2, 3)], None, CPU).setup(2, (25,))


def test_pool_window_that_does_not_fit_raises():
    with pytest.raises(ValueError, match="does not fit"):
        Net([MaxPool2D(3)], None, CPU).setup(2, (1, 2, 2))


# ---- SGD ---------------------------------------------------------------------------------------
def _sgd_net(seed=0):
    layers = [Dense(3), Bias()]
    net = Net(layers, None, CPU, dtype=np.float64, seed=seed).setup(2, (4,))
    layers[1].params["bias"][...] = [0.5, -0.25, 1.0]
    return net, layers


def test_sgd_momentum_weight_decay_matches_pytorch_formula():
    lr, mu, wd = 0.1, 0.9, 0.01
    net, layers = _sgd_net()
    opt = SGD(lr=lr, momentum=mu, weight_decay=wd).setup(net)
    mask = net.params.decay_mask.copy()
    rng = np.random.default_rng(17)
    w = net.params.data.copy()
    v = np.zeros_like(w)
    data_buffer = net.params.data
    for _ in range(2):
        g = rng.standard_normal(w.shape)
        net.params.grad[:] = g
        opt.step()
        v = mu * v + g + wd * mask * w
        w = w - lr * v
        np.testing.assert_allclose(net.params.data, w, rtol=1e-14, atol=1e-15)
        np.testing.assert_allclose(opt.velocity, v, rtol=1e-14, atol=1e-15)
    assert net.params.data is data_buffer  # updated in place
    np.testing.assert_allclose(layers[0].params["weight"].ravel(), w[:12], rtol=1e-14)


def test_sgd_without_momentum():
    lr, wd = 0.2, 0.05
    net, _ = _sgd_net(seed=1)
    opt = SGD(lr=lr, momentum=0.0, weight_decay=wd).setup(net)
    mask = net.params.decay_mask.copy()
    w = net.params.data.copy()
    g = np.random.default_rng(18).standard_normal(w.shape)
    net.params.grad[:] = g
    opt.step()
    np.testing.assert_allclose(
        net.params.data, w - lr * (g + wd * mask * w), rtol=1e-14, atol=1e-15
    )
    np.testing.assert_array_equal(opt.velocity, 0.0)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_weight_decay_does_not_touch_biases(momentum):
    net, layers = _sgd_net(seed=2)
    opt = SGD(lr=0.5, momentum=momentum, weight_decay=0.1).setup(net)
    weight_before = layers[0].params["weight"].copy()
    net.params.grad.fill(0.0)
    for _ in range(3):
        opt.step()
    np.testing.assert_array_equal(layers[1].params["bias"], [0.5, -0.25, 1.0])
    assert np.all(np.abs(layers[0].params["weight"]) < np.abs(weight_before))
    assert np.all(np.sign(layers[0].params["weight"]) == np.sign(weight_before))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(lr=0.0),
        dict(lr=-1.0),
        dict(momentum=1.0),
        dict(momentum=-0.1),
        dict(weight_decay=-1e-4),
    ],
)
def test_sgd_rejects_bad_hyperparameters(kwargs):
    with pytest.raises(ValueError):
        SGD(**kwargs)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_label_smoothing_matches_torch(smoothing):
    torch = pytest.importorskip("torch")
    from convnet_gpu.backends import get_backend
    from convnet_gpu.layers import SoftmaxCrossEntropy

    rng = np.random.default_rng(3)
    logits = rng.standard_normal((6, 5)) * 3
    labels = rng.integers(0, 5, 6).astype(np.int32)
    loss_layer = SoftmaxCrossEntropy(label_smoothing=smoothing)
    loss_layer.setup(get_backend("cpu"), (5,), 8, np.float64)
    loss = float(loss_layer.forward(logits, labels))
    d_logits = np.empty_like(logits)
    loss_layer.backward(d_logits)
    z = torch.tensor(logits, requires_grad=True)
    expected = torch.nn.functional.cross_entropy(
        z, torch.tensor(labels).long(), label_smoothing=smoothing
    )
    expected.backward()
    assert loss == pytest.approx(expected.item(), rel=1e-12)
    np.testing.assert_allclose(d_logits, z.grad.numpy(), rtol=1e-10, atol=1e-15)
