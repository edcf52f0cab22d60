"""Named architectures. Builders pair every Conv2D/Dense with its Bias so none is forgotten."""
from __future__ import annotations

from .layers import Bias, Conv2D, Dense, Flatten, MaxPool2D, ReLU


def conv_bias_relu(out_channels: int, kernel_size: int, stride: int = 1, pad: int = 0) -> list:
    return [Conv2D(out_channels, kernel_size, stride, pad), Bias(), ReLU()]


def dense_bias(out_features: int) -> list:
    return [Dense(out_features), Bias()]


def simple_cnn(num_classes: int = 10) -> list:
    """Net A of DESIGN.md: conv5x5x32 - ReLU - pool - conv5x5x64 - ReLU - pool - fc1024 - ReLU - fc."""
    return [
        *conv_bias_relu(32, 5, pad=2), MaxPool2D(2),
        *conv_bias_relu(64, 5, pad=2), MaxPool2D(2),
        Flatten(),
        *dense_bias(1024), ReLU(),
        *dense_bias(num_classes),
    ]


MODELS = {"simple-cnn": simple_cnn}


def build_model(name: str, num_classes: int = 10) -> list:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    return MODELS[name](num_classes)
