"""Element-wise non-linearities. Each backward uses what its forward kept (x or y)."""

from __future__ import annotations

from .base import Layer


class ReLU(Layer):
    def forward(self, x, y, train):
        self.backend.xp.maximum(x, 0, out=y)

    def backward(self, x, y, dy, dx):
        xp = self.backend.xp
        xp.greater(y, 0, out=dx)  # 1 where the unit was on, 0 elsewhere
        xp.multiply(dx, dy, out=dx)


class LeakyReLU(Layer):
    def __init__(self, slope: float = 0.01):
        super().__init__()
        if not 0 <= slope < 1:
            raise ValueError("LeakyReLU slope must be in [0, 1)")
        self.slope = float(slope)

    def forward(self, x, y, train):
        xp = self.backend.xp
        xp.multiply(x, self.slope, out=y)
        xp.maximum(x, y, out=y)  # max(x, a*x) is x for x > 0, a*x otherwise

    def backward(self, x, y, dy, dx):
        xp = self.backend.xp
        xp.greater(x, 0, out=dx)  # 1 or 0 ...
        xp.multiply(dx, 1.0 - self.slope, out=dx)
        xp.add(dx, self.slope, out=dx)  # ... -> 1 or slope
        xp.multiply(dx, dy, out=dx)

    def describe(self):
        return f"LeakyReLU({self.slope})"


class Tanh(Layer):
    def forward(self, x, y, train):
        self.backend.xp.tanh(x, out=y)

    def backward(self, x, y, dy, dx):
        xp = self.backend.xp
        xp.multiply(y, y, out=dx)
        xp.subtract(1.0, dx, out=dx)  # 1 - tanh^2
        xp.multiply(dx, dy, out=dx)


class Sigmoid(Layer):
    def forward(self, x, y, train):
        # sigmoid(x) = (1 + tanh(x/2)) / 2: no exp, so no overflow for large |x|.
        xp = self.backend.xp
        xp.multiply(x, 0.5, out=y)
        xp.tanh(y, out=y)
        xp.multiply(y, 0.5, out=y)
        xp.add(y, 0.5, out=y)

    def backward(self, x, y, dy, dx):
        xp = self.backend.xp
        xp.subtract(1.0, y, out=dx)
        xp.multiply(dx, y, out=dx)  # y (1 - y)
        xp.multiply(dx, dy, out=dx)
