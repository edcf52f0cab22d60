"""Bias: one learnable offset per channel (4-D inputs) or per feature (2-D inputs)."""

from __future__ import annotations

from .base import Layer, ParamSpec


class Bias(Layer):
    def param_specs(self, input_shape):
        return [ParamSpec("bias", (input_shape[0],), "zeros", decay=False)]

    def setup(self, backend, input_shape, batch_size, dtype):
        super().setup(backend, input_shape, batch_size, dtype)
        # b broadcasts as (C, 1, 1) over (n, C, H, W), or (F,) over (n, F).
        self.broadcast_shape = (input_shape[0],) + (1,) * (len(input_shape) - 1)
        self.sum_axes = (0,) + tuple(range(2, len(input_shape) + 1))

    def forward(self, x, y, train):
        xp = self.backend.xp
        xp.add(x, self.params["bias"].reshape(self.broadcast_shape), out=y)

    def backward(self, x, y, dy, dx):
        xp = self.backend.xp
        xp.sum(dy, axis=self.sum_axes, out=self.grads["bias"])
        if dx is not None:
            xp.copyto(dx, dy)
