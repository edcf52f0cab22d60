"""Numerical gradient checking in float64, public so users can check their own layers.

The checked scalar is L = sum(output * R) for a fixed random R (or the loss itself when the net
ends in a loss), so backward with d_output = R gives every analytic gradient at once.

- exhaustive: central differences for every input and parameter element (tiny shapes only);
- random: one random direction d over inputs and parameters together, compared with the
  directional derivative (L(theta + eps d) - L(theta - eps d)) / 2 eps: two forward passes
  per direction, whatever the size (chainer's check_backward).

The error reported is max |analytic - numeric| / max(|analytic|, |numeric|), over elements
(exhaustive) or directions (random), so it is scale-free. Inputs are drawn away from the kinks
of ReLU and max pooling: |x| in [0.2, 1.0], continuous values (distinct almost surely).

Modes of the net: `train=True` (the default) checks the training forward (BatchNorm with batch
statistics, Dropout with a mask); `train=False` checks the evaluation forward, after
EVAL_WARMUP_STEPS training forwards so that running statistics are no longer their initial
values. Randomness is held still: every layer with a `frozen` attribute (Dropout) gets
frozen = True, so all the forwards of one check draw the same mask and the checked function is
deterministic (Dropout's mask depends on (seed, step) only, and a frozen step does not advance).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .layers.base import walk
from .net import Net

EXHAUSTIVE_LIMIT = 4000  # elements; above it "auto" picks the random-direction mode
TOLERANCE = 1e-6
EVAL_WARMUP_STEPS = 2  # training forwards before an eval-mode check (moves running statistics)


@dataclass
class CheckResult:
    name: str
    mode: str
    max_rel_error: float
    checked: int  # elements (exhaustive) or directions (random)
    tolerance: float = TOLERANCE

    @property
    def passed(self) -> bool:
        return bool(np.isfinite(self.max_rel_error) and self.max_rel_error < self.tolerance)


def kink_free_inputs(rng: np.random.Generator, shape) -> np.ndarray:
    magnitude = rng.uniform(0.2, 1.0, size=shape)
    return np.where(rng.random(shape) < 0.5, -magnitude, magnitude)


class _Problem:
    """A float64 net on fixed inputs, viewed as a function of (input, parameters)."""

    def __init__(self, layers, loss, backend, batch, input_shape, seed, train=True):
        for _, layer in walk(layers):
            if hasattr(layer, "frozen"):
                layer.frozen = True  # one random mask for every forward of the check
        self.net = Net(layers, loss, backend, dtype=np.float64, seed=seed)
        self.net.setup(batch, input_shape, input_grad=True)
        self.xp, self.batch, self.train = backend.xp, batch, train
        rng = np.random.default_rng(seed)
        labels = rng.integers(0, self.net.output_shape[0], size=batch).astype(np.int32)
        self.net.load_batch(kink_free_inputs(rng, (batch,) + tuple(input_shape)), labels)
        for _ in range(0 if train else EVAL_WARMUP_STEPS):
            self.net.forward(batch, train=True)
        self.projection = None
        if loss is None:  # L = sum(output * R)
            self.projection = backend.asarray(rng.standard_normal((batch,) + self.net.output_shape))

    @property
    def x(self):
        return self.net.blobs[0].data

    @property
    def theta(self):
        return self.net.params.data

    def value(self) -> float:
        output = self.net.forward(self.batch, train=self.train)
        if self.projection is None:
            return float(self.net.loss.loss)
        return float(self.xp.sum(output * self.projection))

    def gradients(self):
        """(d L / d input, d L / d parameters) as host float64 arrays."""
        self.value()
        if self.projection is not None:
            self.xp.copyto(self.net.blobs[-1].grad, self.projection)
        self.net.backward(self.batch)
        to_host = self.net.backend.to_host
        return to_host(self.net.blobs[0].grad).copy(), to_host(self.net.params.grad).copy()

    def central_difference(self, array, flat_index, eps) -> float:
        flat = array.reshape(-1)
        original = float(flat[flat_index])
        flat[flat_index] = original + eps
        plus = self.value()
        flat[flat_index] = original - eps
        minus = self.value()
        flat[flat_index] = original
        return (plus - minus) / (2 * eps)

    def directional_difference(self, dx, dtheta, eps) -> float:
        xp = self.xp
        x0, t0 = self.x.copy(), self.theta.copy()
        xp.add(x0, eps * dx, out=self.x)
        xp.add(t0, eps * dtheta, out=self.theta)
        plus = self.value()
        xp.subtract(x0, eps * dx, out=self.x)
        xp.subtract(t0, eps * dtheta, out=self.theta)
        minus = self.value()
        xp.copyto(self.x, x0)
        xp.copyto(self.theta, t0)
        return (plus - minus) / (2 * eps)


def _rel_error(analytic, numeric) -> float:
    analytic, numeric = np.asarray(analytic, np.float64), np.asarray(numeric, np.float64)
    scale = max(np.max(np.abs(analytic), initial=0.0), np.max(np.abs(numeric), initial=0.0))
    if scale == 0.0:
        return 0.0
    return float(np.max(np.abs(analytic - numeric)) / scale)


def check(
    layers,
    input_shape,
    backend,
    *,
    loss=None,
    name=None,
    batch=2,
    mode="auto",
    directions=3,
    eps=1e-6,
    seed=0,
    tolerance=TOLERANCE,
    train=True,
) -> CheckResult:
    """Check the gradients of `layers` (+ optional `loss`) on `backend` in float64.

    `train` picks the forward mode that is checked (see the module docstring).
    """
    problem = _Problem(list(layers), loss, backend, batch, tuple(input_shape), seed, train)
    name = name or " > ".join(layer.describe() for layer in layers) or getattr(loss, "name", "?")
    grad_x, grad_theta = problem.gradients()
    total = problem.x.size + problem.theta.size
    if mode == "auto":
        mode = "exhaustive" if total <= EXHAUSTIVE_LIMIT else "random"
    if mode == "exhaustive":
        numeric_x = [problem.central_difference(problem.x, i, eps) for i in range(problem.x.size)]
        numeric_t = [
            problem.central_difference(problem.theta, i, eps) for i in range(problem.theta.size)
        ]
        error = _rel_error(
            np.concatenate([grad_x.ravel(), grad_theta]), np.concatenate([numeric_x, numeric_t])
        )
        return CheckResult(name, mode, error, total, tolerance)
    if mode != "random":
        raise ValueError(f"unknown gradcheck mode {mode!r}; use auto, exhaustive or random")
    rng = np.random.default_rng(seed + 1)
    errors = []
    for _ in range(directions):
        dx = rng.standard_normal(problem.x.shape)
        dtheta = rng.standard_normal(problem.theta.shape)
        analytic = float(np.sum(grad_x * dx) + np.sum(grad_theta * dtheta))
        numeric = problem.directional_difference(backend.asarray(dx), backend.asarray(dtheta), eps)
        errors.append(_rel_error(analytic, numeric))
    return CheckResult(name, mode, max(errors), directions, tolerance)
