"""backend.batchnorm_statistics: BatchNorm's per-channel statistics in one op (one kernel on
CUDA, the array operations of channel_ops.py on the CPU), what the layer did before as ten
separate operations, checked against the formulas and, on a GPU, bit for bit against NumPy."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_backends_agree

from convnet_gpu.backends import get_backend

CHANNELS, COUNT, MOMENTUM, EPS = 7, 50, 0.1, 1e-5


def inputs(dtype=np.float32):
    rng = np.random.default_rng(3)
    mean = rng.standard_normal(CHANNELS).astype(dtype)
    squares = (rng.random(CHANNELS) * COUNT * 4).astype(dtype)  # a centered sum of squares
    running = (
        rng.standard_normal(CHANNELS).astype(dtype),
        (1 + rng.random(CHANNELS)).astype(dtype),
    )
    return mean, squares, running


def run(backend, mean, squares, running_mean, running_var, mode: str):
    """Each output a fresh copy, so the op's in-place writes leave the inputs as given."""
    xp = backend.xp
    var, inv_std = xp.array(squares, copy=True), xp.empty_like(squares)
    running = (xp.array(running_mean, copy=True), xp.array(running_var, copy=True))
    if mode == "eval":
        backend.batchnorm_statistics(var, EPS, inv_std)
    else:
        given = running if mode == "train+running" else None
        backend.batchnorm_statistics(var, EPS, inv_std, COUNT, given, mean, MOMENTUM)
    return {"var": var, "inv_std": inv_std, "running_mean": running[0], "running_var": running[1]}


@pytest.mark.parametrize("mode", ["eval", "train", "train+running"])
def test_the_statistics_follow_their_formulas(mode):
    mean, squares, (running_mean, running_var) = inputs(np.float64)
    got = run(get_backend("cpu"), mean, squares, running_mean, running_var, mode)
    variance = squares if mode == "eval" else squares / COUNT
    np.testing.assert_allclose(got["var"], variance, rtol=1e-15)
    np.testing.assert_allclose(got["inv_std"], 1 / np.sqrt(variance + EPS), rtol=1e-15)
    moved = mode == "train+running"
    expected_mean = (1 - MOMENTUM) * running_mean + MOMENTUM * mean if moved else running_mean
    unbiased = variance * COUNT / (COUNT - 1)
    expected_var = (1 - MOMENTUM) * running_var + MOMENTUM * unbiased if moved else running_var
    np.testing.assert_allclose(got["running_mean"], expected_mean, rtol=1e-15)
    np.testing.assert_allclose(got["running_var"], expected_var, rtol=1e-15)


def test_the_op_names_what_is_wrong():
    cpu = get_backend("cpu")
    var, inv_std = np.ones(3, np.float32), np.empty(3, np.float32)
    with pytest.raises(ValueError, match="batchnorm_statistics: count is 1; a variance needs 2"):
        cpu.batchnorm_statistics(var, EPS, inv_std, count=1)
    with pytest.raises(ValueError, match="updating running needs count and mean"):
        cpu.batchnorm_statistics(var, EPS, inv_std, count=4, running=(var.copy(), var.copy()))
    with pytest.raises(ValueError, match="batchnorm_statistics: inv_std has shape"):
        cpu.batchnorm_statistics(var, EPS, np.empty(4, np.float32))
    with pytest.raises(TypeError, match="batchnorm_statistics: running_var has dtype float64"):
        running = (var.copy(), var.astype(np.float64))
        cpu.batchnorm_statistics(var, EPS, inv_std, 4, running, var.copy(), MOMENTUM)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", ["eval", "train", "train+running"])
def test_numpy_and_cupy_agree_bit_for_bit(dtype, mode):
    mean, squares, (running_mean, running_var) = inputs(dtype)
    assert_backends_agree(
        lambda backend, *arrays: run(backend, *arrays, mode),
        mean, squares, running_mean, running_var, tolerance="exact",
    )  # fmt: skip


@pytest.mark.gpu
def test_a_strided_input_is_read_as_numpy_reads_it():
    """The batch mean and an eval-mode variance as every-other-element views (copied contiguous
    for the kernel, as other ops' inputs are)."""

    def strided(backend, mean, squares, running_mean, running_var):
        xp = backend.xp
        out = {}
        inv_std = xp.empty(CHANNELS, squares.dtype)
        backend.batchnorm_statistics(squares[::2], EPS, inv_std)  # eval: var only read
        out["eval"] = inv_std.copy()
        var = xp.array(squares[::2][:CHANNELS], copy=True)
        running = (xp.array(running_mean, copy=True), xp.array(running_var, copy=True))
        backend.batchnorm_statistics(var, EPS, inv_std, COUNT, running, mean[::2], MOMENTUM)
        return {**out, "inv_std": inv_std, "running_mean": running[0], "running_var": running[1]}

    mean, squares, (running_mean, running_var) = inputs()
    rng = np.random.default_rng(5)
    wide = lambda values: np.repeat(values, 2) + rng.random(2 * CHANNELS).astype(values.dtype)
    assert_backends_agree(strided, wide(mean), wide(squares), running_mean, running_var,
                          tolerance="exact")  # fmt: skip
