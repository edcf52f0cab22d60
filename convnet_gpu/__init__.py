"""convnet_gpu: convolutional nets written once against NumPy (CPU) and CuPy (NVIDIA GPU)."""

from .backends import Backend, DeviceUnavailable, get_backend
from .blob import Blob
from .layers import (
    AvgPool2D,
    BatchNorm,
    Bias,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool,
    Layer,
    LeakyReLU,
    MaxPool2D,
    ReLU,
    Sigmoid,
    SoftmaxCrossEntropy,
    Tanh,
)
from .models import build_model
from .net import Net
from .optim import SGD

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "DeviceUnavailable",
    "get_backend",
    "Blob",
    "Net",
    "SGD",
    "build_model",
    "Layer",
    "Conv2D",
    "Dense",
    "Bias",
    "ReLU",
    "LeakyReLU",
    "Tanh",
    "Sigmoid",
    "MaxPool2D",
    "AvgPool2D",
    "GlobalAvgPool",
    "BatchNorm",
    "Dropout",
    "Flatten",
    "SoftmaxCrossEntropy",
]
