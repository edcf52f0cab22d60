"""Bias: one learnable offset per channel (4-D inputs) or per feature (2-D inputs)."""

from __future__ import annotations

from .base import Layer, ParamSpec, per_channel


class Bias(Layer):
    def param_specs(self, input_shape):
        return [ParamSpec("bias", (input_shape[0],), "zeros", decay=False)]

    def setup(self, backend, input_shape, batch_size, dtype):
        super().setup(backend, input_shape, batch_size, dtype)
        self.broadcast_shape, self.sum_axes = per_channel(input_shape)
        batch_shape = (batch_size,) + tuple(input_shape)
        self.workspace = backend.channel_workspace(batch_shape, dtype, weighted=False)

    def forward(self, x, y, train):
        xp = self.backend.xp
        xp.add(x, self.params["bias"].reshape(self.broadcast_shape), out=y)

    def backward(self, x, y, dy, dx):
        xp = self.backend.xp
        self.backend.channel_sums(dy, self.grads["bias"], self.workspace)
        if dx is not None:
            xp.copyto(dx, dy)
