"""Fused stages (fusion.py): Bias -> ReLU -> MaxPool2D in one pass gives the three layers'
values and gradients, bit for bit, NaNs included; chains fuse only where the backend can."""

from __future__ import annotations

import numpy as np
import pytest

from convnet_gpu import SGD, Net, SoftmaxCrossEntropy
from convnet_gpu.backends import NumpyBackend
from convnet_gpu.fusion import BiasReLUMaxPool
from convnet_gpu.layers import Bias, Conv2D, Dense, Flatten, MaxPool2D, ReLU, Residual
from convnet_gpu.models import simple_cnn
from tests.test_cpu_kernels import needs_jit


class Unfused(NumpyBackend):
    """The same backend with the fused kernels switched off: each layer runs on its own."""

    def fuses_bias_relu_maxpool(self, geom) -> bool:
        return False


def fused_stages(net) -> list[str]:
    """What a net's (or a worker's) chain runs fused."""
    stages = net.chain.stages
    return [s.runner.describe() for s in stages if isinstance(s.runner, BiasReLUMaxPool)]


def step(backend, images, labels, steps=2):
    """A few SGD steps of simple-cnn; (net, logits, loss, last gradient)."""
    net = Net(simple_cnn(), SoftmaxCrossEntropy(), backend, seed=3).setup(len(images), (1, 12, 12))
    optimizer = SGD(0.05, 0.9).setup(net)
    for _ in range(steps):
        n = net.load_batch(images, labels)
        net.forward(n)
        net.backward(n)
        optimizer.step()
    logits = net.forward(n).copy()
    return net, logits, float(net.loss.loss), net.params.grad.copy()


@needs_jit
@pytest.mark.parametrize("threads", [None, 2])
def test_a_fused_net_steps_as_the_unfused_one_bit_for_bit(threads):
    rng = np.random.default_rng(0)
    images = rng.standard_normal((8, 1, 12, 12)).astype(np.float32)
    labels = rng.integers(0, 10, 8).astype(np.int32)
    fused = step(NumpyBackend(threads=threads, jit=True), images, labels)
    unfused = step(Unfused(threads=threads, jit=True), images, labels)
    assert len(fused_stages(fused[0])) == 2 and fused_stages(unfused[0]) == []
    if threads:  # the workers' copies of the chain, which do the computing, fuse too
        assert all(len(fused_stages(w)) == 2 for w in fused[0].workers.workers)
    np.testing.assert_array_equal(fused[1], unfused[1])
    assert fused[2] == unfused[2]
    np.testing.assert_array_equal(fused[3], unfused[3])
    np.testing.assert_array_equal(fused[0].params.data, unfused[0].params.data)


@needs_jit
@pytest.mark.parametrize("threads", [None, 2])
def test_a_fused_stage_ending_a_residual_branch_steps_as_unfused(threads):
    """The fused stage last in a residual body takes the block's dy (top_grad); a NaN in the
    rows of one worker makes that worker alone run the three layers, for that step."""

    def run(backend, poison):
        body = [Conv2D(2, 3, pad=1), Bias(), ReLU(), MaxPool2D(2)]
        layers = [Conv2D(2, 3, pad=1), Residual(body, [MaxPool2D(2)]), Flatten(), Dense(3)]
        net = Net(layers, SoftmaxCrossEntropy(), backend, dtype=np.float64, seed=1)
        net.setup(6, (1, 8, 8))
        rng = np.random.default_rng(4)
        images = rng.standard_normal((5, 1, 8, 8))  # a short batch
        if poison:
            images[4, 0, 3, 3] = np.nan  # in the second worker's rows
        with np.errstate(invalid="ignore"):
            n = net.load_batch(images, np.arange(5, dtype=np.int32) % 3)
            net.forward(n)
            net.backward(n)
        chains = [w.layers for w in net.workers.workers] if net.workers else [net.layers]
        stages = [c[1].body.stages[1].runner for c in chains]
        unfused = [s.unfused for s in stages if isinstance(s, BiasReLUMaxPool)]
        return net.blobs[-1].data[:n].copy(), net.params.grad.copy(), unfused

    for poison in (False, True):
        fused = run(NumpyBackend(threads=threads, jit=True), poison)
        unfused = run(Unfused(threads=threads, jit=True), poison)
        np.testing.assert_array_equal(fused[0], unfused[0])
        np.testing.assert_array_equal(fused[1], unfused[1])
        assert fused[2] == ([False, poison] if threads else [poison]) and unfused[2] == []


def chain_run(backend, x, dy, bias_values):
    """Conv2D -> Bias -> ReLU -> MaxPool2D on x; (y, d_input, the bias's gradient, the net)."""
    layers = [Conv2D(2, 1), Bias(), ReLU(), MaxPool2D(2)]
    net = Net(layers, None, backend).setup(len(x), x.shape[1:], input_grad=True)
    layers[0].params["weight"][...] = np.eye(2, dtype=x.dtype).reshape(2, 2, 1, 1)
    layers[1].params["bias"][...] = bias_values
    n = net.load_batch(x)
    y = net.forward(n).copy()
    net.blobs[-1].grad[...] = dy
    net.backward(n)
    return y, net.input.grad.copy(), layers[1].grads["bias"].copy(), net


@needs_jit
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("poison", ["none", "nan", "inf dy"])
def test_the_fused_stage_gives_the_three_layers_values(dtype, poison):
    rng = np.random.default_rng(1)
    # values on a grid of halves: ties inside windows, zeros and negatives (ReLU's edges)
    x = (np.round(rng.standard_normal((3, 2, 4, 6)) * 2) / 2).astype(dtype)
    x[2] = -np.abs(x[2]) - 1  # a whole image off: every window's ReLU is zero
    dy = rng.standard_normal((3, 2, 2, 3)).astype(dtype)
    if poison == "nan":
        x[0, 1, 1, 1] = np.nan
    if poison == "inf dy":
        dy[2, 0, 0, 0] = np.inf  # a window whose ReLU is off: 0 * inf is NaN in dx
    bias = np.array([0.5, -0.5], dtype)
    with np.errstate(invalid="ignore"):  # 0 * inf in ReLU's backward
        fused = chain_run(NumpyBackend(jit=True), x, dy, bias)
        unfused = chain_run(Unfused(jit=True), x, dy, bias)
    assert fused_stages(fused[3]) == ["fused[Bias, ReLU, MaxPool2D(2, stride=2, pad=0)]"]
    # with a NaN in x + bias the stage ran the three layers (their NaN rules are the reference)
    assert fused[3].chain.stages[1].runner.unfused == (poison == "nan")
    for want, got in zip(unfused[:3], fused[:3]):
        np.testing.assert_array_equal(got, want)


@needs_jit
def test_chains_fuse_only_where_the_backend_has_the_kernel():
    def stages(layers, backend, shape=(1, 8, 8)):
        return fused_stages(Net(layers, None, backend).setup(2, shape))

    fusable = [Conv2D(2, 3, pad=1), Bias(), ReLU(), MaxPool2D(2)]
    assert len(stages(fusable, NumpyBackend(jit=True))) == 1
    assert (
        stages([Conv2D(2, 3, pad=1), Bias(), ReLU(), MaxPool2D(2)], NumpyBackend(jit=False)) == []
    )
    # overlapping windows, odd sizes: no 2x2 tiling, no fused kernel
    assert (
        stages([Conv2D(2, 3, pad=1), Bias(), ReLU(), MaxPool2D(3, 2)], NumpyBackend(jit=True)) == []
    )
    assert (
        stages([Conv2D(2, 3), Bias(), ReLU(), MaxPool2D(2)], NumpyBackend(jit=True), (1, 8, 9))
        == []
    )
    # at the chain's start the stage's input gradient may be None: each layer on its own
    assert stages([Bias(), ReLU(), MaxPool2D(2)], NumpyBackend(jit=True)) == []


@pytest.mark.gpu
@pytest.mark.parametrize("poison", ["none", "nan"])
def test_the_cuda_fused_stage_gives_the_three_layers_bits(cuda_backend, monkeypatch, poison):
    """On CuPy the fused kernels (pooling.cu) follow the unfused kernels' rules in the kernel,
    NaNs included (a NaN never wins a window there): the same bits, no host check."""
    rng = np.random.default_rng(1)
    x = (np.round(rng.standard_normal((3, 2, 6, 6)) * 2) / 2).astype(np.float32)
    if poison == "nan":
        x[0, 1, 2, 2] = np.nan
    dy = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)

    def run():
        layers = [Conv2D(2, 1), Bias(), ReLU(), MaxPool2D(3, 2, pad=1)]
        net = Net(layers, None, cuda_backend).setup(3, (2, 6, 6), input_grad=True)
        cuda_backend.copy_from_host(np.eye(2, dtype=np.float32).reshape(2, 2, 1, 1),
                                    layers[0].params["weight"])  # fmt: skip
        cuda_backend.copy_from_host(np.array([0.5, -0.5], np.float32), layers[1].params["bias"])
        n = net.load_batch(x)
        y = cuda_backend.to_host(net.forward(n))
        cuda_backend.copy_from_host(dy, net.blobs[-1].grad)
        net.backward(n)
        grads = (net.input.grad, layers[1].grads["bias"])
        return net, [y] + [cuda_backend.to_host(g) for g in grads]

    fused_net, fused = run()
    monkeypatch.setattr(cuda_backend, "fuses_bias_relu_maxpool", lambda geom: False)
    unfused_net, unfused = run()
    assert len(fused_stages(fused_net)) == 1 and fused_stages(unfused_net) == []
    for want, got in zip(unfused, fused):
        np.testing.assert_array_equal(got, want)
