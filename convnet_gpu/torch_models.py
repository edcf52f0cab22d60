"""The named architectures in PyTorch, for the benchmark peer and test oracles only.

torch is imported by the caller; this module is never imported by the library itself.
"""
from __future__ import annotations

import torch.nn as nn


def simple_cnn(num_classes: int = 10) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 1024), nn.ReLU(), nn.Linear(1024, num_classes))


TORCH_MODELS = {"simple-cnn": simple_cnn}


def torch_model(name: str, num_classes: int = 10) -> nn.Module:
    if name not in TORCH_MODELS:
        raise ValueError(f"no PyTorch peer for model {name!r}")
    return TORCH_MODELS[name](num_classes)
