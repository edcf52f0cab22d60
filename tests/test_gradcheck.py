"""Numerical gradient checks: every standard case passes on every backend; the checker can fail."""

from __future__ import annotations

import numpy as np
import pytest

from convnet_gpu.backends import get_backend
from convnet_gpu.gradcheck import CheckResult, check
from convnet_gpu.gradcheck_cases import standard_cases
from convnet_gpu.layers import BatchNorm, Dense, Dropout, ReLU

CPU = get_backend("cpu")
CASES = {case.name: case for case in standard_cases()}


def _check_case(name, backend, **overrides):
    return CASES[name].run(backend, seed=0, **overrides)


def test_standard_cases_cover_every_layer():
    names = " ".join(CASES)
    for layer in (
        "Conv2D",
        "Bias",
        "Dense",
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
        "small net",
    ):
        assert layer in names
    for layer in ("BatchNorm (conv", "BatchNorm (dense", "Dropout"):  # both modes are checked
        modes = {case.train for name, case in CASES.items() if name.startswith(layer)}
        assert modes == {True, False}, layer


@pytest.mark.parametrize("name", list(CASES))
def test_standard_case_passes(backend, name):
    result = _check_case(name, backend)
    assert isinstance(result, CheckResult)
    assert result.mode in ("exhaustive", "random")
    assert result.checked > 0
    assert np.isfinite(result.max_rel_error)
    assert result.max_rel_error < 1e-6, f"{name} on {backend.name}: {result}"
    assert result.passed


# ---- deliberately wrong layers: the checker must catch them --------------------------------------
class MasklessReLU(ReLU):
    """Forward is ReLU, backward forgets the mask (passes dy straight through)."""

    def backward(self, x, y, dy, dx):
        self.backend.xp.copyto(dx, dy)


class SloppyDense(Dense):
    """Forward is Dense, backward reports dW scaled by 1.01."""

    def backward(self, x, y, dy, dx):
        super().backward(x, y, dy, dx)
        xp = self.backend.xp
        xp.multiply(self.grads["weight"], 1.01, out=self.grads["weight"])


WRONG = {
    "relu without mask": lambda: ([MasklessReLU()], (3, 4, 4)),
    "dense dW * 1.01": lambda: ([SloppyDense(4)], (6,)),
}


@pytest.mark.parametrize("mode", ["exhaustive", "random"])
@pytest.mark.parametrize("wrong", list(WRONG))
def test_wrong_layer_is_reported(backend, wrong, mode):
    layers, input_shape = WRONG[wrong]()
    result = check(layers, input_shape, backend, mode=mode, name=wrong, directions=3)
    assert result.mode == mode
    assert not result.passed, f"{wrong} ({mode}) slipped through: {result}"
    assert result.max_rel_error > 1e-3


@pytest.mark.parametrize("mode", ["exhaustive", "random"])
def test_correct_twin_of_wrong_layer_passes(backend, mode):
    """The same problems with the real layers pass, so the failures above are the bugs' doing."""
    for layers, input_shape in (([ReLU()], (3, 4, 4)), ([Dense(4)], (6,))):
        result = check(layers, input_shape, backend, mode=mode)
        assert result.passed, result


def test_bogus_mode_raises(cpu_backend):
    with pytest.raises(ValueError, match="bogus"):
        check([ReLU()], (3, 4, 4), cpu_backend, mode="bogus")


def test_non_finite_error_does_not_pass():
    assert not CheckResult("x", "random", float("nan"), 1).passed
    assert not CheckResult("x", "random", float("inf"), 1).passed
    assert CheckResult("x", "random", 1e-9, 1).passed


# ---- gradcheck must catch a wrong BatchNorm or an unfrozen Dropout ------------------------------
class BatchNormWithoutStatisticsGradient(BatchNorm):
    """Backward treats the batch statistics as constants (the eval formula) in training too."""

    def backward(self, x, y, dy, dx):
        self.used_batch_statistics = False
        super().backward(x, y, dy, dx)


class UnfreezableDropout(Dropout):
    """A Dropout that ignores gradcheck's freeze: every forward draws a new mask."""

    @property
    def frozen(self):
        return False

    @frozen.setter
    def frozen(self, value):
        pass


def test_gradcheck_catches_batchnorm_without_statistics_gradient():
    assert check([BatchNorm()], (3, 3, 4), CPU).passed
    result = check([BatchNormWithoutStatisticsGradient()], (3, 3, 4), CPU)
    assert not result.passed and result.max_rel_error > 1e-3, result


def test_gradcheck_needs_the_dropout_mask_frozen():
    assert check([Dropout(0.5)], (3, 4, 4), CPU).passed
    result = check([UnfreezableDropout(0.5)], (3, 4, 4), CPU)
    assert not result.passed, result
