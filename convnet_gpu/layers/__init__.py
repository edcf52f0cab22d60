"""Primitive layers, one family per module."""

from .activation import LeakyReLU, ReLU, Sigmoid, Tanh
from .base import Layer, ParamSpec
from .bias import Bias
from .conv import Conv2D
from .dense import Dense
from .dropout import Dropout
from .loss import SoftmaxCrossEntropy
from .norm import BatchNorm
from .pool import AvgPool2D, GlobalAvgPool, MaxPool2D
from .residual import Residual
from .shape import Flatten

__all__ = [
    "Layer",
    "ParamSpec",
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
    "Residual",
    "SoftmaxCrossEntropy",
]
