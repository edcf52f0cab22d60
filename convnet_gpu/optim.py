"""Optimizers over the Net's flat parameter buffer: state allocated once, updated in place;
and learning-rate schedules (a function of the step, set on the optimizer before each step)."""
from __future__ import annotations

import math


class SGD:
    """SGD with momentum (PyTorch's form), weight decay on weights only.

        g = grad + weight_decay * decay_mask * w
        v = momentum * v + g          (v starts at zero)
        w = w - lr * v                (w - lr * g without momentum)
    """

    def __init__(self, lr: float = 0.05, momentum: float = 0.9, weight_decay: float = 0.0):
        if lr <= 0 or not 0 <= momentum < 1 or weight_decay < 0:
            raise ValueError("SGD needs lr > 0, 0 <= momentum < 1 and weight_decay >= 0")
        self.lr, self.momentum, self.weight_decay = float(lr), float(momentum), float(weight_decay)
        self.params = None

    def setup(self, net) -> "SGD":
        be, params = net.backend, net.params
        self.xp, self.params = be.xp, params
        self.velocity = be.zeros(params.data.shape, params.data.dtype)
        self.scratch = be.empty(params.data.shape, params.data.dtype)
        return self

    def step(self) -> None:
        xp, w, step_dir = self.xp, self.params.data, self.params.grad
        if self.weight_decay:
            xp.multiply(w, self.params.decay_mask, out=self.scratch)
            xp.multiply(self.scratch, self.weight_decay, out=self.scratch)
            xp.add(self.scratch, step_dir, out=self.scratch)
            step_dir = self.scratch
        if self.momentum:
            xp.multiply(self.velocity, self.momentum, out=self.velocity)
            xp.add(self.velocity, step_dir, out=self.velocity)
            step_dir = self.velocity
        xp.multiply(step_dir, self.lr, out=self.scratch)
        xp.subtract(w, self.scratch, out=w)

    def state_arrays(self) -> dict:
        return {"velocity": self.velocity}


SCHEDULES = ("constant", "cosine")


def scheduled_lr(schedule: str, base_lr: float, step: int, total_steps: int) -> float:
    """The learning rate for 0-based `step` of `total_steps`.

    cosine: base_lr * (1 + cos(pi * step / total_steps)) / 2, from base_lr down towards 0,
    so the last steps average out the noise of the large early ones.
    """
    if schedule == "constant":
        return base_lr
    if schedule == "cosine":
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
    raise ValueError(f"unknown schedule {schedule!r}; choose one of: {', '.join(SCHEDULES)}")
