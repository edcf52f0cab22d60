"""The compiled CPU kernels (cpu_jit.py, numba) give the NumPy kernels' values (cpu_windows.py),
NaNs included, and a backend without numba runs NumPy's."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from helpers import TOLERANCE

from convnet_gpu import SGD, Net, SoftmaxCrossEntropy
from convnet_gpu.backends import NumpyBackend
from convnet_gpu.backends.geometry import WindowGeometry
from convnet_gpu.backends.numpy_backend import load_jit
from convnet_gpu.models import simple_cnn

JIT_MISSING = None
try:
    load_jit(True)
except ImportError as exc:
    JIT_MISSING = str(exc)
needs_jit = pytest.mark.skipif(JIT_MISSING is not None, reason=f"{JIT_MISSING}")

POOLS = [  # (channels, height, width, kernel, stride, pad): the first two tile exactly
    (3, 8, 6, 2, 2, 0),
    (2, 9, 9, 3, 3, 0),
    (2, 7, 7, 2, 2, 0),  # odd sizes: the last row and column are in no window
    (2, 8, 8, 3, 2, 1),  # overlapping, padded
]


def pool_case(window, dtype, seed=0):
    channels, height, width, kernel, stride, pad = window
    geom = WindowGeometry(channels, height, width, kernel, kernel, stride, pad)
    rng = np.random.default_rng(seed)
    x = (np.round(rng.standard_normal((3, channels, height, width)) * 2) / 2).astype(dtype)
    x[0, 0, 0, 1] = np.nan  # a NaN makes its window's maximum NaN
    x[1, 1, 2, 2] = -np.inf
    shape = (3, channels, geom.out_h, geom.out_w)
    dy = rng.standard_normal(shape).astype(dtype)
    return geom, x, dy, shape


def pool(backend, geom, x, dy, shape):
    y, argmax = np.full(shape, 7, x.dtype), np.full(shape, -1, np.int32)
    dx = np.full_like(x, 7)
    workspace = backend.pool_workspace(shape, x.dtype)
    backend.maxpool_forward(x, y, argmax, workspace, geom)
    backend.maxpool_backward(dy, argmax, dx, workspace, geom)
    return y, argmax, dx


@needs_jit
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("window", POOLS)
def test_compiled_max_pooling_gives_the_numpy_bits(window, dtype):
    case = pool_case(window, dtype)
    numpy_result = pool(NumpyBackend(jit=False), *case)
    compiled_result = pool(NumpyBackend(jit=True), *case)
    for name, want, got in zip(("y", "argmax", "dx"), numpy_result, compiled_result):
        # equal values, NaN where NaN (the sign of a zero max is SIMD's choice, in NumPy too)
        np.testing.assert_array_equal(got, want, err_msg=name, strict=True)
    assert np.isnan(numpy_result[0][0, 0, 0, 0])


def _two_sgd_steps(backend) -> np.ndarray:
    rng = np.random.default_rng(1)
    images = rng.standard_normal((16, 1, 28, 28)).astype(np.float32)
    labels = rng.integers(0, 10, 16).astype(np.int32)
    net = Net(simple_cnn(), SoftmaxCrossEntropy(), backend, seed=3)
    net.setup(16, (1, 28, 28))
    optimizer = SGD(0.1, momentum=0.9).setup(net)
    for _ in range(2):
        n = net.load_batch(images, labels)
        net.forward(n)
        net.backward(n)
        optimizer.step()
    return net.params.data.copy()


@needs_jit
def test_a_training_step_is_the_same_with_and_without_numba_but_for_winograd():
    """Bit for bit, but for Winograd's convolution, which only numba runs: off, the same bits;
    on (simple-cnn's second conv), within the float32 tolerance of whole nets."""
    numpy_alone = _two_sgd_steps(NumpyBackend(jit=False))
    assert np.array_equal(_two_sgd_steps(NumpyBackend(jit=True, winograd=False)), numpy_alone)
    with_winograd = _two_sgd_steps(NumpyBackend(jit=True, winograd=True))
    assert not np.array_equal(with_winograd, numpy_alone)
    np.testing.assert_allclose(with_winograd, numpy_alone, **TOLERANCE["net"][np.dtype(np.float32)])


def test_winograd_runs_only_with_numba_and_unless_told_not_to(monkeypatch):
    assert not NumpyBackend(jit=False, winograd=True).winograd_kernels
    monkeypatch.setenv("CONVNET_GPU_WINOGRAD", "0")
    assert not NumpyBackend(jit=False).winograd_kernels
    if JIT_MISSING is None:
        assert not NumpyBackend(jit=True).winograd_kernels
        monkeypatch.setenv("CONVNET_GPU_WINOGRAD", "1")
        assert NumpyBackend(jit=True).winograd_kernels


@needs_jit
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [None, 2])
@pytest.mark.parametrize(
    "momentum, weight_decay, nesterov",
    [
        (0.9, 0.0, False),
        (0.9, 5e-4, False),
        (0.9, 5e-4, True),
        (0.0, 0.0, False),
        (0.0, 1e-3, False),
        (1e-46, 1e-46, False),  # non-zero, but 0 in float32: NumPy still writes the velocity
    ],
)
def test_the_compiled_sgd_update_gives_the_numpy_bits(momentum, weight_decay, nesterov, threads,
                                                      dtype):  # fmt: skip
    rng = np.random.default_rng(2)
    size = 1001
    w, grad, velocity = (rng.standard_normal(size).astype(dtype) for _ in range(3))
    mask = (rng.random(size) > 0.2).astype(dtype)
    results = []
    for jit in (False, True):
        backend = NumpyBackend(threads=threads, jit=jit)
        w_now, v_now = w.copy(), velocity.copy()
        lr = np.array(0.0123, dtype)
        backend.sgd_update(w_now, grad, v_now, mask, lr, momentum, weight_decay, nesterov,
                           np.empty_like(w), np.empty_like(w))  # fmt: skip
        results.append((w_now, v_now))
    np.testing.assert_array_equal(results[1][0], results[0][0], strict=True)
    np.testing.assert_array_equal(results[1][1], results[0][1], strict=True)
    assert not np.array_equal(results[1][0], w)  # it did update


@needs_jit
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [None, 2])
@pytest.mark.parametrize("weight_decay, decoupled", [(0.0, False), (1e-2, False), (1e-2, True)])
def test_the_compiled_adam_update_gives_the_numpy_bits(weight_decay, decoupled, threads, dtype):
    rng = np.random.default_rng(5)
    size = 1001
    w, grad, m = (rng.standard_normal(size).astype(dtype) for _ in range(3))
    v = rng.random(size).astype(dtype)
    mask = (rng.random(size) > 0.2).astype(dtype)
    results = []
    for jit in (False, True):
        backend = NumpyBackend(threads=threads, jit=jit)
        state = [w.copy(), m.copy(), v.copy()]
        for step in (1, 7):  # the bias corrections change with the step
            backend.adam_update(state[0], grad, state[1], state[2], mask, np.array(0.003, dtype),
                                np.array(step), (0.9, 0.999), 1e-8, weight_decay, decoupled,
                                np.empty_like(w), np.empty_like(w))  # fmt: skip
        results.append(state)
    for name, want, got in zip(("w", "exp_avg", "exp_avg_sq"), *results):
        np.testing.assert_array_equal(got, want, err_msg=name, strict=True)
    assert not np.array_equal(results[1][0], w)  # it did update


@needs_jit
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(5, 3, 4, 6), (7, 4)])
def test_the_compiled_batchnorm_passes_give_the_numpy_bits(shape, dtype):
    rng = np.random.default_rng(3)
    x, dy = (rng.standard_normal(shape).astype(dtype) * 3 for _ in range(2))
    mean, inv_std, gamma, beta, d_beta, d_gamma = (
        rng.standard_normal(shape[1]).astype(dtype) for _ in range(6)
    )
    results = []
    for jit in (False, True):
        backend = NumpyBackend(jit=jit)
        x_hat, y, dx = np.empty_like(x), np.empty_like(x), np.empty_like(x)
        backend.batchnorm_normalize(x, mean, inv_std, gamma, beta, x_hat, y)
        backend.batchnorm_input_grad(dy, x_hat, gamma, d_beta, d_gamma, 37, dx)
        results.append((x_hat, y, dx))
    for name, want, got in zip(("x_hat", "y", "dx"), *results):
        np.testing.assert_array_equal(got, want, err_msg=name, strict=True)


def test_without_numba_the_numpy_kernels_run(monkeypatch):
    monkeypatch.setitem(sys.modules, "numba", None)  # `import numba` raises ImportError
    monkeypatch.delitem(sys.modules, "convnet_gpu.backends.cpu_jit", raising=False)
    assert NumpyBackend().jit is None
    assert "numba" not in NumpyBackend().describe()
    with pytest.raises(ImportError, match=r"pip install 'convnet-gpu\[cpu-jit\]'"):
        NumpyBackend(jit=True)


def test_convnet_gpu_jit_0_turns_the_compiled_kernels_off(monkeypatch):
    monkeypatch.setenv("CONVNET_GPU_JIT", "0")
    assert NumpyBackend().jit is None
