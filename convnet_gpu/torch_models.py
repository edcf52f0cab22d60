"""The named architectures in PyTorch, for the benchmark peer and test oracles only.

torch is imported by the caller; this module is never imported by the library itself.
Each builder mirrors its namesake in models.py layer for layer (and parameter for parameter).
"""

from __future__ import annotations

import torch.nn as nn


def simple_cnn(num_classes: int = 10, input_shape=(1, 28, 28)) -> nn.Module:
    channels, height, width = input_shape
    return nn.Sequential(
        nn.Conv2d(channels, 32, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * (height // 4) * (width // 4), 1024),
        nn.ReLU(),
        nn.Linear(1024, num_classes),
    )


def conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> list:
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
    ]


def simple_cnn_bn(num_classes: int = 10, input_shape=(1, 28, 28), dropout: float = 0.5):
    channels, height, width = input_shape
    return nn.Sequential(
        *conv_bn(channels, 32, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        *conv_bn(32, 64, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * (height // 4) * (width // 4), 1024),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(1024, num_classes),
    )


class BasicBlock(nn.Module):
    """relu(body(x) + shortcut(x)), as models.basic_block."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            *conv_bn(in_channels, out_channels, 3, stride),
            nn.ReLU(),
            *conv_bn(out_channels, out_channels, 3),
        )
        changes_shape = stride != 1 or in_channels != out_channels
        self.shortcut = (
            nn.Sequential(*conv_bn(in_channels, out_channels, 1, stride))
            if changes_shape
            else nn.Identity()
        )

    def forward(self, x):
        return nn.functional.relu(self.body(x) + self.shortcut(x))


def mini_resnet(num_classes: int = 10, input_shape=(1, 28, 28)) -> nn.Module:
    return nn.Sequential(
        *conv_bn(input_shape[0], 32, 3),
        nn.ReLU(),
        BasicBlock(32, 32),
        BasicBlock(32, 64, stride=2),
        BasicBlock(64, 128, stride=2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(128, num_classes),
    )


TORCH_MODELS = {
    "simple-cnn": simple_cnn,
    "simple-cnn-bn": simple_cnn_bn,
    "mini-resnet": mini_resnet,
}


def torch_model(name: str, num_classes: int = 10, input_shape=(1, 28, 28)) -> nn.Module:
    if name not in TORCH_MODELS:
        raise ValueError(f"no PyTorch peer for model {name!r}")
    return TORCH_MODELS[name](num_classes, input_shape)
