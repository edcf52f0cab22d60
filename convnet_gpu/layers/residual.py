"""Residual: y = body(x) + shortcut(x), a small DAG (a fork and an Add) inside one layer.

The two branches are Chains with their own blobs, allocated once in setup; their parameters are
views into the Net's flat buffer like any other layer's (named "body.<i>.<name>" and
"shortcut.<i>.<name>"). An empty shortcut is the identity. Backward sends dy down both
branches and adds their input gradients: the fan-out's sum.
"""

from __future__ import annotations

from ..chain import Chain
from .base import Layer, ParamSpec


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

    def param_specs(self, input_shape):
        self.output_shape(input_shape)  # plans both branches
        return [
            ParamSpec(f"{branch}.{i}.{spec.name}", spec.shape, spec.init, spec.fan_in, spec.decay)
            for branch, chain in self._branches()
            for i, specs in enumerate(chain.param_specs())
            for spec in specs
        ]

    def setup(self, backend, input_shape, batch_size, dtype):
        super().setup(backend, input_shape, batch_size, dtype)
        for branch, chain in self._branches():
            for i, layer in enumerate(chain.layers):  # hand each sublayer its parameter views
                prefix = f"{branch}.{i}."
                layer.params = {
                    k[len(prefix) :]: v for k, v in self.params.items() if k.startswith(prefix)
                }
                layer.grads = {
                    k[len(prefix) :]: v for k, v in self.grads.items() if k.startswith(prefix)
                }
            chain.setup(backend, batch_size, dtype)
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
