"""Inverted dropout with a counter-based mask: y = x * mask / (1 - p) in training, y = x in eval."""

from __future__ import annotations

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
    Design note: the step is a Python int for now. For CUDA graph replay it moves to device
    memory, where the captured uniform kernel reads it and a captured increment advances it, so
    every replay draws the next step's mask, the same one the eager step would have drawn.
    """

    def __init__(self, p: float = 0.5, seed: int | None = None):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"Dropout probability must be in [0, 1), got {p}")
        if seed is not None:
            check_seed_and_counter(seed, 0)
        self.p = float(p)
        self.seed = seed  # None: the Net gives each Dropout its own seed, from its own
        self.step = 0  # the counter of the next training forward's mask
        self.frozen = False  # True: training forwards reuse the mask of `step`
        self.mask_applied = False  # the last forward was a training one: backward masks too

    def setup(self, backend, input_shape, batch_size, dtype):
        super().setup(backend, input_shape, batch_size, dtype)
        if self.seed is None:  # used outside a Net
            self.seed = 0
        shape = (batch_size,) + tuple(input_shape)
        self.mask = backend.empty(shape, dtype)  # 0 or 1 / (1 - p), kept for backward
        self.workspace = backend.uniform_workspace(shape)

    def forward(self, x, y, train):
        be, xp = self.backend, self.backend.xp
        self.mask_applied = train
        if not train:
            xp.copyto(y, x)
            return
        mask = self.mask[: x.shape[0]]
        be.uniform(mask, self.seed, self.step, self.workspace)
        xp.greater_equal(mask, self.p, out=mask)  # keep with probability 1 - p
        xp.multiply(mask, 1.0 / (1.0 - self.p), out=mask)
        xp.multiply(x, mask, out=y)
        if not self.frozen:
            self.step += 1

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

    def load_state_scalars(self, scalars):
        self.seed, self.step = int(scalars["seed"]), int(scalars["step"])

    def describe(self):
        return f"Dropout({self.p})"
