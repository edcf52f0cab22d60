"""Primitive layers, one family per module."""
from .activation import LeakyReLU, ReLU, Sigmoid, Tanh
from .base import Layer, ParamSpec
from .bias import Bias
from .conv import Conv2D
from .dense import Dense
from .loss import SoftmaxCrossEntropy
from .pool import AvgPool2D, MaxPool2D
from .shape import Flatten

__all__ = ["Layer", "ParamSpec", "Conv2D", "Dense", "Bias", "ReLU", "LeakyReLU", "Tanh",
           "Sigmoid", "MaxPool2D", "AvgPool2D", "Flatten", "SoftmaxCrossEntropy"]
