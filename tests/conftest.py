"""Shared fixtures: one test body runs on every backend (cupy.testing style).

`backend` is parametrized over "cpu" and "cuda"; the cuda case carries the `gpu` marker and
skips with the reason `convnet_gpu.backends.cuda_problem(0)` gives (CuPy missing, no GPU, ...).
`cuda_backend` is the CUDA backend alone, skipped the same way.
"""

from __future__ import annotations

from functools import lru_cache

import pytest

from convnet_gpu.backends import cuda_problem, get_backend


@lru_cache(maxsize=1)
def cuda_skip_reason() -> str | None:
    """Why the CUDA backend cannot be tested here, or None when it can (computed once)."""
    problem = cuda_problem(0)
    if problem is None:
        return None
    return f"the CUDA backend cannot run here: {problem}"


def _skip_without_cuda() -> None:
    reason = cuda_skip_reason()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture(
    params=[pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=pytest.mark.gpu)]
)
def backend(request):
    """The NumPy backend, then the CuPy backend (skipped with a reason where CUDA is unusable)."""
    if request.param == "cuda":
        _skip_without_cuda()
    return get_backend(request.param)


@pytest.fixture
def cpu_backend():
    return get_backend("cpu")


@pytest.fixture
def cuda_backend():
    """The CuPy backend on cuda:0; skipped with a reason where CUDA is unusable."""
    _skip_without_cuda()
    return get_backend("cuda")
