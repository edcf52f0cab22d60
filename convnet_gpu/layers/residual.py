"""Residual: y = body(x) + shortcut(x), a small DAG (a fork and an Add) inside one layer.

The two branches are Chains with their own blobs, allocated once in setup; the Net binds their
layers to views of its flat parameter buffer by path ("3.body.0", "3.shortcut.1") like any
other layer. An empty shortcut is the identity. Backward sends dy down both branches and adds
their input gradients: the fan-out's sum.
"""

from __future__ import annotations

from ..chain import Chain
from .base import Layer


class Residual(Layer):
    def __init__(self, body, shortcut=()):
        super().__init__()
        self.body, self.shortcut = Chain(body), Chain(shortcut)
        if not self.body.layers:
            raise ValueError("a Residual block needs at least one layer in its body")

    def _branches(self):
        return (("body", self.body), ("shortcut", self.shortcut))

    def children(self):
        return [
            (f"{branch}.{i}", layer)
            for branch, chain in self._branches()
            for i, layer in enumerate(chain.layers)
        ]

    def output_shape(self, input_shape):
        body_out = self.body.plan(input_shape)[-1]
        shortcut_out = self.shortcut.plan(input_shape)[-1]
        if body_out != shortcut_out:
            raise ValueError(
                f"Residual: the body gives {body_out} but the shortcut gives "
                f"{shortcut_out}; add a strided 1x1 Conv2D (and BatchNorm) to the "
                f"shortcut so the two can be added"
            )
        return body_out

    def child_inputs(self, input_shape):
        return [
            (f"{branch}.{i}", layer, shape)
            for branch, chain in self._branches()
            for i, (layer, shape) in enumerate(zip(chain.layers, chain.plan(input_shape)))
        ]

    def setup(self, backend, input_shape, batch_size, dtype):
        super().setup(backend, input_shape, batch_size, dtype)
        for _, chain in self._branches():
            chain.setup(backend, batch_size, dtype, input_shape)
        # the shortcut's input gradient, before it is added to the body's
        self.d_shortcut = backend.empty((batch_size,) + tuple(input_shape), dtype)

    def forward(self, x, y, train):
        body_out = self.body.forward(x, train)
        shortcut_out = self.shortcut.forward(x, train)
        self.backend.xp.add(body_out, shortcut_out, out=y)

    def backward(self, x, y, dy, dx):
        xp = self.backend.xp
        self.body.backward(x, dx, top_grad=dy)
        if not self.shortcut.layers:  # identity: dy itself is the shortcut's input gradient
            if dx is not None:
                xp.add(dx, dy, out=dx)
            return
        d_shortcut = self.d_shortcut[: x.shape[0]] if dx is not None else None
        self.shortcut.backward(x, d_shortcut, top_grad=dy)
        if dx is not None:
            xp.add(dx, d_shortcut, out=dx)

    def describe(self):
        body = ", ".join(layer.describe() for layer in self.body.layers)
        shortcut = ", ".join(layer.describe() for layer in self.shortcut.layers) or "identity"
        return f"Residual(body=[{body}], shortcut=[{shortcut}])"
