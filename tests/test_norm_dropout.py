"""BatchNorm, Dropout, GlobalAvgPool and the counter-based uniform() they rest on.

Oracles: torch.nn.functional.batch_norm (float64, train and eval, running statistics), numpy
means, a scalar Python reference of the hash (backends/counter_rng.py counter_hash), and the CUDA
source's hash compiled for the host with g++. NumPy vs CuPy bit equality goes through
helpers.assert_backends_agree (skipped without a GPU).
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_backends_agree, output_buffer, run_host_harness

from convnet_gpu import (
    SGD,
    BatchNorm,
    Bias,
    Conv2D,
    Dense,
    Dropout,
    GlobalAvgPool,
    Net,
    ReLU,
    SoftmaxCrossEntropy,
    get_backend,
)
from convnet_gpu.backends import kernels
from convnet_gpu.backends.counter_rng import UNIFORM_SCALE, counter_hash
from convnet_gpu.gradcheck import check
from convnet_gpu.layers import Layer

CPU = get_backend("cpu")
KERNEL_DIR = Path(kernels.__file__).parent
EXACT = dict(rtol=1e-12, atol=1e-12)


def _net(layers, batch, input_shape, dtype=np.float64):
    return Net(layers, None, CPU, dtype=dtype).setup(batch, input_shape, input_grad=True)


def _forward_backward(net, x, dy, train):
    n = net.load_batch(x)
    y = net.forward(n, train=train).copy()
    net.blobs[-1].grad[:n] = dy
    net.backward(n)
    return y, net.blobs[0].grad[:n].copy()


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
    net = _net([bn], len(x), x.shape[1:])
    bn.params["gamma"][...], bn.params["beta"][...] = gamma, beta
    bn.buffers["running_mean"][...], bn.buffers["running_var"][...] = running_mean, running_var
    y, dx = _forward_backward(net, x, dy, train)

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
    net = _net([bn], batch, shape[1:])
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
    net = _net([BatchNorm()], 4, (3,))
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


# ---- gradcheck must catch a wrong BatchNorm or an unfrozen Dropout ------------------------------
class BatchNormWithoutStatisticsGradient(BatchNorm):
    """Backward treats the batch statistics as constants (the eval formula) in training too."""

    def backward(self, x, y, dy, dx):
        self.used_batch_statistics = False
        super().backward(x, y, dy, dx)


class UnfreezableDropout(Dropout):
    """A Dropout that ignores gradcheck's freeze: every forward draws a new mask."""

    @property
    def frozen(self):
        return False

    @frozen.setter
    def frozen(self, value):
        pass


def test_gradcheck_catches_batchnorm_without_statistics_gradient():
    assert check([BatchNorm()], (3, 3, 4), CPU).passed
    result = check([BatchNormWithoutStatisticsGradient()], (3, 3, 4), CPU)
    assert not result.passed and result.max_rel_error > 1e-3, result


def test_gradcheck_needs_the_dropout_mask_frozen():
    assert check([Dropout(0.5)], (3, 4, 4), CPU).passed
    result = check([UnfreezableDropout(0.5)], (3, 4, 4), CPU)
    assert not result.passed, result


# ---- Dropout -------------------------------------------------------------------------------------
def _dropout_net(p=0.3, seed=0, batch=100, features=1000, dtype=np.float64):
    layer = Dropout(p, seed=seed)
    return layer, _net([layer], batch, (features,), dtype)


def test_dropout_keeps_one_minus_p_and_scales_by_its_inverse():
    layer, net = _dropout_net(p=0.3)  # 1e5 elements
    x = np.random.default_rng(6).uniform(1.0, 2.0, (100, 1000))
    dy = np.random.default_rng(7).standard_normal((100, 1000))
    y, dx = _forward_backward(net, x, dy, train=True)
    kept = y != 0
    assert abs(kept.mean() - 0.7) < 0.01
    np.testing.assert_allclose(y[kept], x[kept] / 0.7, rtol=1e-15)
    np.testing.assert_allclose(dx, np.where(kept, dy / 0.7, 0.0), rtol=1e-15)  # the same mask
    assert layer.step == 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_eval_is_identity(dtype):
    layer, net = _dropout_net(p=0.5, dtype=dtype, batch=4, features=50)
    rng = np.random.default_rng(8)
    x, dy = rng.standard_normal((4, 50)), rng.standard_normal((4, 50))
    y, dx = _forward_backward(net, x, dy, train=False)
    np.testing.assert_array_equal(y, x.astype(dtype))
    np.testing.assert_array_equal(dx, dy.astype(dtype))
    assert layer.step == 0  # evaluation draws no mask


def _masks(layer, net, steps, n=None):
    n = n or net.batch_size
    ones = np.ones((n,) + net.input_shape)
    masks = []
    for _ in range(steps):
        net.load_batch(ones)
        masks.append(net.forward(n, train=True).copy())
    return masks


def test_dropout_masks_depend_on_seed_and_step_only():
    first = _masks(*_dropout_net(p=0.5, seed=11, batch=8, features=64), steps=3)
    again = _masks(*_dropout_net(p=0.5, seed=11, batch=8, features=64), steps=3)
    other_seed = _masks(*_dropout_net(p=0.5, seed=12, batch=8, features=64), steps=1)
    for mask, same in zip(first, again):
        np.testing.assert_array_equal(mask, same)  # same seed and step: same mask
    assert not np.array_equal(first[0], first[1])  # next step: another mask
    assert not np.array_equal(first[1], first[2])
    assert not np.array_equal(first[0], other_seed[0])  # another seed: another mask
    assert np.mean(first[0] != first[1]) > 0.3  # and not a near copy


def test_dropout_frozen_step_repeats_its_mask_and_small_batches_use_the_first_rows():
    layer, net = _dropout_net(p=0.5, seed=2, batch=8, features=64)
    layer.frozen = True
    a, b = _masks(layer, net, steps=2)
    np.testing.assert_array_equal(a, b)
    assert layer.step == 0
    (small,) = _masks(layer, net, steps=1, n=3)
    np.testing.assert_array_equal(small, a[:3])  # element index = row * features + feature


def test_dropout_refuses_bad_arguments():
    for p in (-0.1, 1.0):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            Dropout(p)
    with pytest.raises(ValueError, match="seed"):
        Dropout(0.5, seed=-1)


# ---- uniform(): the counter-based hash ------------------------------------------------------
def test_uniform_is_in_unit_interval_uniform_and_uncorrelated():
    u = np.empty(100_000)
    CPU.uniform(u, seed=0, counter=0, workspace=CPU.uniform_workspace(u.shape))
    assert u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.01
    assert abs(u.var() - 1.0 / 12.0) < 0.002
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 0.01  # neighbouring elements
    v = np.empty(100_000)
    CPU.uniform(v, seed=0, counter=1)
    assert abs(np.corrcoef(u, v)[0, 1]) < 0.01  # consecutive counters
    np.testing.assert_array_equal(u / UNIFORM_SCALE, np.round(u / UNIFORM_SCALE))  # k * 2**-24
    counts, _ = np.histogram(u, bins=10, range=(0.0, 1.0))
    assert np.all(np.abs(counts - 10_000) < 500)


@pytest.mark.parametrize("seed,counter", [(0, 0), (1, 0), (0, 1), (2**32 - 1, 123456), (42, 2**31)])
def test_uniform_matches_the_scalar_reference_in_both_float_types(seed, counter):
    u64, u32 = np.empty((3, 17)), np.empty((3, 17), np.float32)
    workspace = CPU.uniform_workspace((4, 17))  # bigger than needed: a prefix is used
    CPU.uniform(u64, seed, counter, workspace)
    CPU.uniform(u32, seed, counter, workspace)
    expected = [(counter_hash(seed, counter, i) >> 8) * UNIFORM_SCALE for i in range(3 * 17)]
    np.testing.assert_array_equal(u64.ravel(), expected)
    np.testing.assert_array_equal(u32.astype(np.float64), u64)  # float32 and float64 agree exactly


def test_uniform_refuses_bad_arguments():
    u = np.empty(4)
    for seed, counter in ((-1, 0), (2**32, 0), (0, -1), (0, 2**32)):
        with pytest.raises(ValueError, match="must be an integer in"):
            CPU.uniform(u, seed, counter)
    with pytest.raises(TypeError, match="float"):
        CPU.uniform(np.empty(4, np.int32), 0, 0)
    with pytest.raises(ValueError, match="workspace"):
        CPU.uniform(np.empty(8), 0, 0, CPU.uniform_workspace((4,)))


HOST_HARNESS = r"""
#include <cstdio>
#define __host__
#define __device__
#define __forceinline__ inline
#include "random.cu"
int main() {
    const unsigned int streams[][2] = {{0u, 0u}, {7u, 3u}, {4294967295u, 99u}};
    for (const auto& s : streams) {
        const unsigned int key = random_stream_key(s[0], s[1]);
        for (unsigned int i = 0; i < 40; ++i)
            std::printf("%.17g %.17g\n", counter_uniform<double>(key, i),
                        (double)counter_uniform<float>(key, i));
    }
}
"""


def test_cuda_hash_compiled_for_the_host_matches_numpy(tmp_path):
    """The hash functions of kernels/random.cu, built with g++, give NumPy's values bit for bit."""
    values = run_host_harness(HOST_HARNESS, tmp_path, KERNEL_DIR)
    expected = []
    for seed, counter in ((0, 0), (7, 3), (2**32 - 1, 99)):
        u = np.empty(40)
        CPU.uniform(u, seed, counter)
        expected.append(u)
    expected = np.concatenate(expected)
    np.testing.assert_array_equal(values[:, 0], expected)  # double
    np.testing.assert_array_equal(values[:, 1], expected)  # float


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1,), (1000,), (3, 7, 11, 13), (2, 65536 * 5 + 3)])
def test_uniform_is_bit_identical_on_numpy_and_cupy(shape, dtype):
    def draw_three_streams(backend):
        drawn = {}
        for seed, counter in ((0, 0), (5, 1), (2**32 - 1, 2**32 - 1)):
            out = output_buffer(backend, shape, dtype)
            backend.uniform(out, seed, counter, backend.uniform_workspace(shape))
            drawn[f"seed {seed} counter {counter}"] = out
        return drawn

    assert_backends_agree(draw_three_streams, tolerance="exact")


@pytest.mark.gpu
def test_cupy_uniform_refuses_strided_output(cuda_backend):
    import cupy

    assert cuda_backend.uniform_workspace((4, 8)) is None
    with pytest.raises(ValueError, match="C-contiguous"):
        cuda_backend.uniform(cupy.zeros((4, 8))[:, ::2], 0, 0)


# ---- GlobalAvgPool ------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_global_avg_pool_is_the_plane_mean(dtype):
    rng = np.random.default_rng(9)
    x, dy = rng.standard_normal((3, 4, 5, 6)), rng.standard_normal((3, 4))
    net = _net([GlobalAvgPool()], 3, (4, 5, 6), dtype)
    assert net.output_shape == (4,)
    y, dx = _forward_backward(net, x, dy, train=True)
    tol = dict(rtol=1e-6, atol=1e-6) if dtype == np.float32 else EXACT
    np.testing.assert_allclose(y, x.mean(axis=(2, 3)), **tol)
    np.testing.assert_allclose(dx, np.broadcast_to(dy[:, :, None, None] / 30, x.shape), **tol)


def test_global_avg_pool_needs_planes():
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        Net([GlobalAvgPool()], None, CPU).setup(2, (5,))


# ---- a net with all three steps without allocating ------------------------------------------
def _norm_dropout_training(backend):
    """(net, optimizer, layers, step(images, labels), host batches with a smaller n=9 mixed in)."""
    layers = [
        Conv2D(16, 3, pad=1),
        BatchNorm(),
        ReLU(),
        Dropout(0.2, seed=1),
        Conv2D(32, 3, stride=2, pad=1),
        BatchNorm(),
        ReLU(),
        GlobalAvgPool(),
        Dense(5000),
        BatchNorm(),
        ReLU(),
        Dropout(0.5, seed=2),
        Dense(10),
        Bias(),
    ]
    net = Net(layers, SoftmaxCrossEntropy(), backend, dtype=np.float32).setup(16, (1, 28, 28))
    optimizer = SGD(lr=0.01, momentum=0.9, weight_decay=5e-4).setup(net)
    rng = np.random.default_rng(10)
    batches = [
        (
            rng.standard_normal((n, 1, 28, 28)).astype(np.float32),
            rng.integers(0, 10, n).astype(np.int32),
        )
        for n in (16, 16, 9, 16, 16, 9)
    ]

    def step(images, labels):
        n = net.load_batch(images, labels)
        net.forward(n, train=True)
        net.backward(n)
        optimizer.step()
        net.forward(n, train=False)  # an evaluation forward in between

    return net, layers, step, batches


def test_net_with_batchnorm_dropout_and_global_pool_allocates_nothing_per_step():
    net, layers, step, batches = _norm_dropout_training(CPU)
    peak_limit = 256 * 1024
    for i in (1, 3, 5, 7, 9, 11):  # a copy of what BatchNorm, Dropout, GlobalAvgPool read trips it
        assert net.blobs[i].data.nbytes > peak_limit, (i, net.blobs[i])
    step(*batches[0])  # warm-up
    running_before = layers[1].buffers["running_mean"].copy()
    params_before = net.params.data.copy()
    tracemalloc.start()
    try:
        start, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for images, labels in batches[1:]:
            step(images, labels)
        end, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert end - start <= 64 * 1024, f"grew by {end - start} B"
    assert peak - start <= peak_limit, f"peak {peak - start} B over the start"
    assert layers[3].step == len(batches) and layers[11].step == len(batches)
    assert not np.array_equal(layers[1].buffers["running_mean"], running_before)
    assert not np.array_equal(net.params.data, params_before)
    assert np.isfinite(float(net.loss.loss))


@pytest.mark.gpu
def test_cupy_net_with_batchnorm_dropout_keeps_pool_usage_flat(cuda_backend):
    import cupy

    net, layers, step, batches = _norm_dropout_training(cuda_backend)
    pool = cupy.get_default_memory_pool()
    step(*batches[0])
    cuda_backend.synchronize()
    used_after_first = pool.used_bytes()
    used = []
    for images, labels in batches[1:]:
        step(images, labels)
        cuda_backend.synchronize()
        used.append(pool.used_bytes())
    assert used == [used_after_first] * (len(batches) - 1)
    assert layers[3].step == len(batches)
    assert np.isfinite(float(net.loss.loss))
