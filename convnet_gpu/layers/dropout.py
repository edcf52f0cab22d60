"""Inverted dropout with a counter-based mask: y = x * mask / (1 - p) in training, y = x in eval."""

from __future__ import annotations

import numpy as np

from ..backends.counter_rng import check_seed_and_counter
from .base import Layer


class Dropout(Layer):
    """Zero each value with probability p while training and scale the rest by 1 / (1 - p).

    The mask of a training forward is a function of (seed, step) only: the backend's
    counter-based uniform() hashes (seed, step, element index), so two runs with the same seed
    draw the same masks, on NumPy and CuPy alike, and a smaller last batch uses the first rows of
    the full batch's mask. `step` counts training forwards; it advances after each one unless
    `frozen` is set. gradcheck freezes it, so that its repeated forwards (one per finite
    difference) all see one mask and the checked function is deterministic.
    The step lives in device memory (a backend counter()): the uniform kernel reads it there and
    an increment on the device advances it, so a replayed CUDA graph draws each step's own mask,
    the one the eager step would have drawn.
    """

    def __init__(self, p: float = 0.5, seed: int | None = None):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"Dropout probability must be in [0, 1), got {p}")
        if seed is not None:
            check_seed_and_counter(seed, 0)
        self.p = float(p)
        self.seed = seed  # None: the Net gives each Dropout its own seed, from its own
        self._first_step = 0  # the step before setup allocates its counter
        self.counter = None  # after setup: 0-d device counter, the next training forward's step
        self.frozen = False  # True: training forwards reuse the mask of `step`
        self.mask_applied = False  # the last forward was a training one: backward masks too

    def setup(self, backend, input_shape, batch_size, dtype):
        super().setup(backend, input_shape, batch_size, dtype)
        if self.seed is None:  # used outside a Net
            self.seed = 0
        shape = (batch_size,) + tuple(input_shape)
        self.row_size = int(np.prod(input_shape, dtype=np.int64))
        self.mask = backend.empty(shape, dtype)  # 0 or 1 / (1 - p), kept for backward
        self.workspace = backend.uniform_workspace(shape)
        self.counter = backend.counter(self._first_step)

    @property
    def step(self) -> int:
        """The step of the next training forward's mask (a host read of the device counter)."""
        return int(self.counter) if self.counter is not None else self._first_step

    @step.setter
    def step(self, value: int) -> None:
        if self.counter is None:
            self._first_step = int(value)
        else:
            self.counter.fill(int(value))

    def forward(self, x, y, train):
        be, xp = self.backend, self.backend.xp
        self.mask_applied = train
        if not train:
            xp.copyto(y, x)
            return
        mask = self.mask[: x.shape[0]]
        # element indices of the whole batch: a worker's slice draws its rows' part of the mask
        be.uniform(
            mask, self.seed, self.counter, self.workspace, first=self.rows.first * self.row_size
        )
        xp.greater_equal(mask, self.p, out=mask)  # keep with probability 1 - p
        xp.multiply(mask, 1.0 / (1.0 - self.p), out=mask)
        xp.multiply(x, mask, out=y)
        if not self.frozen:
            be.increment(self.counter)

    def backward(self, x, y, dy, dx):
        if dx is None:
            return
        xp = self.backend.xp
        if self.mask_applied:
            xp.multiply(dy, self.mask[: x.shape[0]], out=dx)
        else:
            xp.copyto(dx, dy)

    def state_scalars(self):
        return {"seed": self.seed, "step": self.step}

    def check_state_scalars(self, scalars) -> None:
        """ValueError unless a checkpoint's scalars are ones the mask's hash can take."""
        check_seed_and_counter(scalars["seed"], scalars["step"])

    def load_state_scalars(self, scalars):
        self.seed, self.step = int(scalars["seed"]), int(scalars["step"])

    def describe(self):
        return f"Dropout({self.p})"
