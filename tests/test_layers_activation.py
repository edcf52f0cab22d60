"""ReLU, LeakyReLU, Tanh and Sigmoid (layers/activation.py) against their formulas."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from layer_helpers import run_layers

from convnet_gpu import LeakyReLU, ReLU, Sigmoid, Tanh

ACTIVATIONS = {
    "ReLU": (ReLU, lambda x: np.maximum(x, 0.0)),
    "LeakyReLU": (lambda: LeakyReLU(0.1), lambda x: np.where(x > 0, x, 0.1 * x)),
    "Tanh": (Tanh, np.tanh),
    "Sigmoid": (Sigmoid, lambda x: 1.0 / (1.0 + np.exp(-x))),
}


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_activation_forward_matches_formula(name):
    make, formula = ACTIVATIONS[name]
    x = np.linspace(-6, 6, 2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    x[0, 0, 0, :] = [-0.0, 0.0, 1e-300, -1e-300, 0.5]
    _, y, _ = run_layers([make()], x)
    np.testing.assert_allclose(y, formula(x), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_activation_backward_matches_formula(name):
    make, formula = ACTIVATIONS[name]
    rng = np.random.default_rng(12)
    x = 0.2 + 2 * rng.random((2, 3, 4))
    x *= np.where(rng.random(x.shape) < 0.5, -1, 1)  # away from the kink at 0
    dy = rng.standard_normal(x.shape)
    _, _, dx = run_layers([make()], x, dy=dy)
    h = 1e-6
    numeric = (formula(x + h) - formula(x - h)) / (2 * h)
    np.testing.assert_allclose(dx, numeric * dy, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sigmoid_saturates_exactly_without_warnings(dtype):
    x = np.array([[1000.0, -1000.0, 50.0, -50.0, 0.0]], dtype=dtype)
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        _, y, dx = run_layers([Sigmoid()], x, dy=np.ones_like(x), dtype=dtype)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(dx))
    assert y[0, 0] == 1.0 and y[0, 1] == 0.0
    assert y[0, 2] == pytest.approx(1.0) and y[0, 3] == pytest.approx(0.0, abs=1e-20)
    assert y[0, 4] == 0.5
    assert dx[0, 0] == 0.0 and dx[0, 1] == 0.0


@pytest.mark.parametrize(
    "make",
    [ReLU, lambda: LeakyReLU(0.2), Tanh, Sigmoid],
    ids=["ReLU", "LeakyReLU", "Tanh", "Sigmoid"],
)
def test_activations_are_finite_on_huge_inputs(make):
    x = np.array([[1e300, -1e300, 1000.0, -1000.0]])
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        _, y, dx = run_layers([make()], x, dy=np.ones_like(x))
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(dx))


def test_leaky_relu_rejects_bad_slope():
    with pytest.raises(ValueError, match="slope"):
        LeakyReLU(1.0)
    with pytest.raises(ValueError, match="slope"):
        LeakyReLU(-0.1)
