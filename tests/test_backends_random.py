"""uniform() (backends/counter_rng.py, kernels/random.cu) against the scalar hash, g++ and CuPy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import assert_backends_agree, output_buffer, run_host_harness

from convnet_gpu import get_backend
from convnet_gpu.backends import kernels
from convnet_gpu.backends.counter_rng import UNIFORM_SCALE, counter_hash

CPU = get_backend("cpu")
KERNEL_DIR = Path(kernels.__file__).parent


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


@pytest.mark.parametrize("first", [1, 17, 1000])
def test_uniform_from_a_first_element_is_that_slice_of_the_whole_draw(backend, first):
    """A slice of a batch (a worker's rows, a rank's share) draws what the whole batch would."""
    whole = backend.zeros((first + 64,), np.float32)
    backend.uniform(whole, 9, 4)
    part = backend.zeros((64,), np.float32)
    backend.uniform(part, 9, 4, first=first)
    np.testing.assert_array_equal(backend.to_host(part), backend.to_host(whole)[first:])
