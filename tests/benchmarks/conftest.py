"""The benchmark suite's fixtures: the device and PyTorch (bench_engines.py holds the rest).

    pytest tests/benchmarks --benchmark-only --benchmark-json=bench.json

In the default test run (`--benchmark-disable`, pyproject's addopts) every benchmark runs its
function once, as a smoke test. Each benchmark names a group (`benchmark.group`): the same op,
direction, batch size, device and threads, so each table puts our row beside PyTorch's. CUDA
cases skip with the usual reason where there is no GPU; PyTorch cases skip without torch.
"""

from __future__ import annotations

import pytest
from helpers import skip_without_cuda

from convnet_gpu.machine import describe_machine, git_commit, load_average


def pytest_benchmark_update_machine_info(config, machine_info):
    """Our own account of the machine, the commit and the load beside pytest-benchmark's, as
    bench rows have (the load when the JSON is written: after the run)."""
    machine_info["convnet_gpu"] = {
        "machine": describe_machine(), "commit": git_commit(), "load_average": load_average(),
    }  # fmt: skip


@pytest.fixture(
    params=[pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=pytest.mark.gpu)]
)
def device(request):
    """The device kind, "cpu" or "cuda" (skipped with the reason where CUDA is unusable)."""
    if request.param == "cuda":
        skip_without_cuda()
    return request.param


@pytest.fixture(scope="session")
def torch_module():
    """PyTorch, imported once (skipping without it); its thread count restored afterwards."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    yield torch
    torch.set_num_threads(threads)
