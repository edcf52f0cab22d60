"""Shared fixtures: one test body runs on every backend (cupy.testing style).

`backend` is parametrized over "cpu" and "cuda"; the cuda case carries the `gpu` marker and
skips with the reason helpers.cuda_skip_reason() gives (from convnet_gpu.backends.cuda_problem:
CuPy missing, no GPU, ...). `cuda_backend` is the CUDA backend alone, skipped the same way.
"""

from __future__ import annotations

import pytest
from helpers import skip_without_cuda

from convnet_gpu.backends import get_backend


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    """pyproject's addopts disable the benchmarks (each runs once, a smoke test); --benchmark-only
    asks for them, so it enables them rather than clash with that default (before
    pytest-benchmark's own pytest_configure reads the options)."""
    if config.getoption("benchmark_only", default=False):
        config.option.benchmark_enable = True


@pytest.fixture(
    params=[pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=pytest.mark.gpu)]
)
def backend(request):
    """The NumPy backend, then the CuPy backend (skipped with a reason where CUDA is unusable)."""
    if request.param == "cuda":
        skip_without_cuda()
    return get_backend(request.param)


@pytest.fixture
def cpu_backend():
    return get_backend("cpu")


@pytest.fixture
def cuda_backend():
    """The CuPy backend on cuda:0; skipped with a reason where CUDA is unusable."""
    skip_without_cuda()
    return get_backend("cuda")
