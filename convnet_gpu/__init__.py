"""convnet_gpu: convolutional nets written once against NumPy (CPU) and CuPy (NVIDIA GPU).

The public names below load on first use (PEP 562), so `import convnet_gpu` and the CLI's
`--help` stay fast: nothing of the training stack (or CuPy) is imported until it is needed.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Backend": "backends",
    "DeviceUnavailable": "backends",
    "get_backend": "backends",
    "Blob": "blob",
    "Net": "net",
    "SGD": "optim",
    "build_model": "models",
    "RunSettings": "settings",
    "UserError": "errors",
    **dict.fromkeys(
        [
            "Layer", "Conv2D", "Dense", "Bias", "ReLU", "LeakyReLU", "Tanh", "Sigmoid",
            "MaxPool2D", "AvgPool2D", "GlobalAvgPool", "BatchNorm", "Dropout", "Flatten",
            "Residual", "SoftmaxCrossEntropy",
        ],
        "layers",
    ),
}  # fmt: skip

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'convnet_gpu' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__():
    return sorted([*globals(), *_EXPORTS])
