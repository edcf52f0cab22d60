"""The standard gradient checks: every layer on tiny shapes, in each mode it has, and small nets.

Each GradCase carries what check() needs besides the layers: its mode, batch and forward mode.
`convnet-gpu gradcheck` runs them all (check_all); the tests run them on every backend.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .gradcheck import CheckResult, check
from .layers import (
    AvgPool2D,
    BatchNorm,
    Bias,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool,
    LeakyReLU,
    MaxPool2D,
    ReLU,
    Residual,
    Sigmoid,
    SoftmaxCrossEntropy,
    Tanh,
)


@dataclass(frozen=True)
class GradCase:
    """A named check: build() -> (layers, input shape, loss or None), and check()'s options."""

    name: str
    build: Callable[[], tuple]
    mode: str = "auto"  # exhaustive on tiny shapes, random directions above the limit
    batch: int = 2
    train: bool = True  # which forward is checked (see gradcheck.py)

    def run(self, backend, seed: int = 0, **overrides) -> CheckResult:
        layers, input_shape, loss = self.build()
        options = {"mode": self.mode, "batch": self.batch, "train": self.train, **overrides}
        return check(layers, input_shape, backend, loss=loss, name=self.name, seed=seed, **options)


def _layer(make_layer, shape):
    """A one-layer case: a fresh layer from make_layer() on every build, no loss."""
    return lambda: ([make_layer()], shape, None)


def _small_net():
    layers = [
        Conv2D(3, 3, pad=1), Bias(), ReLU(), MaxPool2D(2),
        Conv2D(4, 3, stride=2, pad=1), Bias(), Tanh(), AvgPool2D(2),
        Flatten(), Dense(6), Bias(), LeakyReLU(0.1), Dense(5), Bias(),
    ]  # fmt: skip
    return layers, (2, 8, 8), SoftmaxCrossEntropy()


def _small_norm_net():
    layers = [
        Conv2D(4, 3, pad=1), BatchNorm(), Tanh(), Dropout(0.25),
        Conv2D(5, 3, stride=2, pad=1), BatchNorm(), Tanh(), GlobalAvgPool(),
        Dense(6), BatchNorm(), Sigmoid(), Dropout(0.5), Dense(4), Bias(),
    ]  # fmt: skip
    return layers, (2, 6, 6), SoftmaxCrossEntropy()


def _small_resnet():
    block = Residual([Conv2D(4, 3, pad=1), BatchNorm(), ReLU(), Conv2D(4, 3, pad=1), BatchNorm()])
    down = Residual(
        [Conv2D(6, 3, stride=2, pad=1), BatchNorm(), ReLU(), Conv2D(6, 3, pad=1), BatchNorm()],
        [Conv2D(6, 1, stride=2), BatchNorm()],
    )
    layers = [
        Conv2D(4, 3, pad=1), BatchNorm(), ReLU(), block, ReLU(), down, ReLU(),
        GlobalAvgPool(), Dense(3), Bias(),
    ]  # fmt: skip
    return layers, (2, 6, 6), SoftmaxCrossEntropy()


def standard_cases() -> list[GradCase]:
    """Fresh cases (their builders make new layers on every call)."""
    return [
        GradCase("Conv2D 3x3 pad 1", _layer(lambda: Conv2D(3, 3, pad=1), shape=(2, 5, 5))),
        GradCase("Conv2D 5x5 pad 2", _layer(lambda: Conv2D(2, 5, pad=2), shape=(2, 6, 6))),
        GradCase(
            "Conv2D 3x3 stride 2", _layer(lambda: Conv2D(2, 3, stride=2, pad=1), shape=(2, 7, 6))
        ),
        GradCase("Conv2D 1x1", _layer(lambda: Conv2D(3, 1), shape=(4, 3, 3))),
        # enough channels for the CPU's Winograd convolution (backends/winograd.py)
        GradCase("Conv2D 5x5, 16 -> 32", _layer(lambda: Conv2D(32, 5, pad=2), shape=(16, 14, 14))),
        GradCase("Conv2D 3x3, 16 -> 32", _layer(lambda: Conv2D(32, 3, pad=1), shape=(16, 15, 14))),
        GradCase("Bias (conv)", _layer(Bias, shape=(3, 4, 4))),
        GradCase("Bias (dense)", _layer(Bias, shape=(7,))),
        GradCase("Dense", _layer(lambda: Dense(4), shape=(6,))),
        GradCase("ReLU", _layer(ReLU, shape=(3, 4, 4))),
        GradCase("LeakyReLU", _layer(lambda: LeakyReLU(0.1), shape=(3, 4, 4))),
        GradCase("Tanh", _layer(Tanh, shape=(3, 4, 4))),
        GradCase("Sigmoid", _layer(Sigmoid, shape=(3, 4, 4))),
        GradCase("MaxPool2D 2x2", _layer(lambda: MaxPool2D(2), shape=(2, 6, 6))),
        GradCase(
            "MaxPool2D 3x3 stride 2 pad 1", _layer(lambda: MaxPool2D(3, 2, 1), shape=(2, 7, 7))
        ),
        GradCase("AvgPool2D 2x2", _layer(lambda: AvgPool2D(2), shape=(2, 6, 6))),
        GradCase(
            "AvgPool2D 3x3 stride 2 pad 1", _layer(lambda: AvgPool2D(3, 2, 1), shape=(2, 7, 7))
        ),
        GradCase("GlobalAvgPool", _layer(GlobalAvgPool, shape=(3, 4, 5))),
        GradCase("BatchNorm (conv, train)", _layer(BatchNorm, shape=(3, 3, 4))),
        # batch 4: with 2 rows a feature's x_hat is +-1 whatever x is, and d x_hat / dx vanishes
        GradCase("BatchNorm (dense, train)", _layer(BatchNorm, shape=(5,)), batch=4),
        # momentum 0.5: after the eval warm-up the running statistics are far from (0, 1)
        GradCase(
            "BatchNorm (conv, eval)",
            _layer(lambda: BatchNorm(momentum=0.5), shape=(3, 3, 4)),
            train=False,
        ),
        GradCase(
            "BatchNorm (dense, eval)",
            _layer(lambda: BatchNorm(momentum=0.5), shape=(5,)),
            batch=4,
            train=False,
        ),  # fmt: skip
        GradCase("Dropout (train)", _layer(lambda: Dropout(0.5, seed=3), shape=(3, 4, 4))),
        GradCase(
            "Dropout (eval)", _layer(lambda: Dropout(0.5, seed=3), shape=(3, 4, 4)), train=False
        ),
        GradCase(
            "Residual (identity shortcut)",
            _layer(lambda: Residual([Conv2D(2, 3, pad=1), Tanh()]), shape=(2, 4, 4)),
        ),
        GradCase(
            "Residual (1x1 stride-2 shortcut)",
            _layer(
                lambda: Residual([Conv2D(3, 3, stride=2, pad=1)], [Conv2D(3, 1, stride=2)]),
                shape=(2, 5, 5),
            ),
        ),
        GradCase("Flatten", _layer(Flatten, shape=(2, 3, 3))),
        GradCase("SoftmaxCrossEntropy", lambda: ([], (10,), SoftmaxCrossEntropy())),
        GradCase("small net (random directions)", _small_net, mode="random", batch=3),
        GradCase("small net, BN + Dropout (random)", _small_norm_net, mode="random", batch=4),
        GradCase("small resnet (random)", _small_resnet, mode="random", batch=4),
    ]


def check_all(backend, seed: int = 0) -> list[CheckResult]:
    return [case.run(backend, seed) for case in standard_cases()]
