"""Chain: layers applied in order over blobs allocated once (a Net's body, a residual branch)."""

from __future__ import annotations

from .blob import Blob


class Chain:
    """Layers applied in order, each writing into an output blob allocated once in setup.

    The body of a Net, and each branch of a residual block. The chain's input is passed in
    (a view of whatever blob feeds it), so chains nest without copies.
    """

    def __init__(self, layers):
        self.layers = list(layers)

    def plan(self, input_shape) -> list[tuple]:
        """Per-sample shapes: the input's, then each layer's output."""
        shapes = [tuple(input_shape)]
        for index, layer in enumerate(self.layers):
            try:
                shapes.append(tuple(layer.output_shape(shapes[-1])))
            except ValueError as exc:
                raise ValueError(f"layer {index} ({layer.describe()}): {exc}") from None
        self.shapes = shapes
        return shapes

    def param_specs(self) -> list[list]:
        return [layer.param_specs(shape) for layer, shape in zip(self.layers, self.shapes)]

    def setup(self, backend, batch_size: int, dtype) -> None:
        self.blobs = [
            Blob.allocate(backend, (batch_size,) + shape, dtype) for shape in self.shapes[1:]
        ]
        for layer, shape in zip(self.layers, self.shapes):
            layer.setup(backend, shape, batch_size, dtype)

    def forward(self, x, train: bool):
        """Run on x (n rows); returns the output view (x itself for an empty chain)."""
        n = x.shape[0]
        for layer, top in zip(self.layers, self.blobs):
            layer.forward(x, top.data[:n], train)
            x = top.data[:n]
        return x

    def backward(self, x, dx, top_grad=None) -> None:
        """Backward from the last output's gradient (its blob's grad, or `top_grad` if given)
        down to dx (None when nothing below needs it; parameter gradients are still made)."""
        n = x.shape[0]
        for i in reversed(range(len(self.layers))):
            layer, top = self.layers[i], self.blobs[i]
            bottom, d_bottom = (x, dx) if i == 0 else self.blobs[i - 1].rows(n)
            if d_bottom is None and not layer.params:
                continue  # nothing below needs this gradient
            dy = top_grad if top_grad is not None and i == len(self.layers) - 1 else top.grad[:n]
            layer.backward(bottom, top.data[:n], dy, d_bottom)
