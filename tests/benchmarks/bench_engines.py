"""What the benchmark modules share: the engines on a device, the groups, the rounds."""

from __future__ import annotations

import pytest

from convnet_gpu import bench_peer
from convnet_gpu.backends import get_backend
from convnet_gpu.machine import machine_cores

# Rounds short enough that `pytest tests/benchmarks --benchmark-only` runs in about a minute on
# two cores: each benchmark times ~0.4 s (at least 3 rounds) after one warm-up call.
SETTINGS = pytest.mark.benchmark(max_time=0.4, min_rounds=3, warmup=True, warmup_iterations=1)
MODEL_THREADS = machine_cores()  # a whole step on every core, as `convnet-gpu bench` defaults
OP_THREADS = 1  # a single layer on one thread: its own kernels, not the workers' batch split


def our_backend(device: str, threads: int):
    return get_backend(device, threads=threads if device == "cpu" else None)


def torch_device(torch, device: str, threads: int):
    """The torch.device of a device kind, PyTorch on `threads` CPU threads, TF32 off (fp32, as
    ours); skips where PyTorch has no CUDA. The torch_module fixture restores the settings."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("PyTorch has no CUDA device here")
    return bench_peer.torch_device(device, "fp32", threads)


def where(device: str, threads: int) -> str:
    return f"cpu, {threads} thread{'s' if threads > 1 else ''}" if device == "cpu" else device


def run_benchmark(benchmark, function, group: str, **extra) -> None:
    """Time function (which synchronizes its device) in `group`, the row's engine and device as
    extra_info (kept in --benchmark-json)."""
    benchmark.group = group
    benchmark.extra_info.update(extra)
    benchmark(function)
