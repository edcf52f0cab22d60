"""Helpers shared by the layer and Net tests (import as `from layer_helpers import ...`).

run_layers runs layers through a float64 Net with given parameters, input and upstream gradient;
layer_net / forward_backward do the same in two steps; conv_problem makes a convolution case
from CONV_GEOMETRIES; torch_run runs a torch function on float64 leaves that require grad.
"""

from __future__ import annotations

import numpy as np
import pytest

from convnet_gpu import Conv2D, Net, get_backend

CPU = get_backend("cpu")
EXACT = dict(rtol=1e-12, atol=1e-12)


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


def layer_net(layers, batch, input_shape, dtype=np.float64):
    return Net(layers, None, CPU, dtype=dtype).setup(batch, input_shape, input_grad=True)


def forward_backward(net, x, dy, train):
    n = net.load_batch(x)
    y = net.forward(n, train=train).copy()
    net.blobs[-1].grad[:n] = dy
    net.backward(n)
    return y, net.blobs[0].grad[:n].copy()


def out_size(size, k, stride, pad):
    return (size + 2 * pad - k) // stride + 1


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


def conv_problem(geometry, seed=0):
    batch, c, h, w, f, k, stride, pad = CONV_GEOMETRIES[geometry]
    kh, kw = (k, k) if isinstance(k, int) else k
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, c, h, w))
    weight = rng.standard_normal((f, c, kh, kw))
    dy_shape = (batch, f, out_size(h, kh, stride, pad), out_size(w, kw, stride, pad))
    dy = rng.standard_normal(dy_shape)
    return x, weight, dy, Conv2D(f, k, stride=stride, pad=pad), stride, pad


def torch_run(fn, *arrays):
    """fn(*tensors) on float64 leaves requiring grad; returns (torch output, leaf tensors)."""
    torch = pytest.importorskip("torch")
    leaves = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays]
    return fn(*leaves), leaves
