"""A whole training step and an inference pass of each named model, ours beside PyTorch's: the
very steps `convnet-gpu bench` times (bench.convnet_gpu_contender, bench_peer.torch_contender)."""

from __future__ import annotations

import pytest
from bench_engines import MODEL_THREADS, SETTINGS, our_backend, run_benchmark, torch_device, where

from convnet_gpu.bench import convnet_gpu_contender
from convnet_gpu.bench_peer import torch_contender
from convnet_gpu.models import MODELS

pytestmark = SETTINGS
BATCH = 128
PASSES = ("train", "infer")


def model_group(model: str, what: str, device: str) -> str:
    step = "training step" if what == "train" else "inference"
    return f"{model} | {step} | batch {BATCH} | {where(device, MODEL_THREADS)}"


def timed(contender, what: str):
    step = contender.train_step if what == "train" else contender.infer_step
    for _ in range(contender.min_warmup - 1):  # ours: a CUDA graph is captured by the second
        step()
    return lambda: (step(), contender.synchronize())


@pytest.mark.parametrize("what", PASSES)
@pytest.mark.parametrize("model", list(MODELS))
def test_convnet_gpu(benchmark, device, model, what):
    contender = convnet_gpu_contender(our_backend(device, MODEL_THREADS), model, BATCH)
    run_benchmark(
        benchmark, timed(contender, what), model_group(model, what, device),
        engine="convnet_gpu", device=contender.device,
    )  # fmt: skip


@pytest.mark.parametrize("what", PASSES)
@pytest.mark.parametrize("model", list(MODELS))
def test_torch(benchmark, torch_module, device, model, what):
    target = torch_device(torch_module, device, MODEL_THREADS)
    contender = torch_contender(target, model, BATCH)
    run_benchmark(
        benchmark, timed(contender, what), model_group(model, what, device),
        engine="torch", device=contender.device,
    )  # fmt: skip
