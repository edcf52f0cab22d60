"""Each layer of the named models, forward and backward, ours beside PyTorch's (bench_ops.py)."""

from __future__ import annotations

import pytest
from bench_engines import OP_THREADS, SETTINGS, our_backend, run_benchmark, torch_device, where
from bench_ops import OP_NAMES, group_title, ours_step, torch_step

pytestmark = SETTINGS
DIRECTIONS = ("forward", "backward")
BATCHES = (32, 128)


def op_group(name: str, direction: str, batch: int, device: str) -> str:
    return f"{group_title(name)} | {direction} | batch {batch} | {where(device, OP_THREADS)}"


@pytest.mark.parametrize("batch", BATCHES, ids=lambda b: f"b{b}")
@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("name", OP_NAMES)
def test_convnet_gpu(benchmark, device, name, direction, batch):
    backend = our_backend(device, OP_THREADS)
    function = ours_step(name, backend, batch, direction)
    run_benchmark(
        benchmark, function, op_group(name, direction, batch, device),
        engine="convnet_gpu", device=backend.describe(),
    )  # fmt: skip


@pytest.mark.parametrize("batch", BATCHES, ids=lambda b: f"b{b}")
@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("name", OP_NAMES)
def test_torch(benchmark, torch_module, device, name, direction, batch):
    target = torch_device(torch_module, device, OP_THREADS)
    function = torch_step(name, target, batch, direction)
    run_benchmark(
        benchmark, function, op_group(name, direction, batch, device),
        engine="torch", device=f"{target} (PyTorch {torch_module.__version__})",
    )  # fmt: skip
