"""Chain: layers applied in order over blobs allocated once (a Net's body, a residual branch), run
in stages planned at setup (fusion.py); forward/backward can run one span of it (workers.py)."""

from __future__ import annotations

from .blob import Blob
from .errors import ModelError
from .fusion import plan_stages


class Chain:
    """Layers applied in order, each writing into an output blob allocated once in setup.

    The body of a Net, and each branch of a residual block. The chain's input is passed in
    (a view of whatever blob feeds it), so chains nest without copies. It runs in stages
    (fusion.py): a layer, or a run of layers the backend computes in one pass.
    """

    def __init__(self, layers):
        self.layers = list(layers)
        self.blobs = []
        self.stages = []  # fusion.Stage: which layers run as one
        self.learns = []  # per stage: does it (or a layer inside it) have parameters?

    def plan(self, input_shape) -> list[tuple]:
        """Per-sample shapes: the input's, then each layer's output."""
        shapes = [tuple(input_shape)]
        for index, layer in enumerate(self.layers):
            try:
                shapes.append(tuple(layer.output_shape(shapes[-1])))
            except ValueError as exc:
                raise ModelError(f"layer {index} ({layer.describe()}): {exc}") from None
        return shapes

    def setup(self, backend, batch_size: int, dtype, input_shape, blobs=None,
              layer_rows: int | None = None) -> list[tuple]:  # fmt: skip
        """Set up every layer and allocate its output blob; returns the planned shapes.

        `blobs` gives the output blobs instead (a worker's row slices of its net's blobs);
        `layer_rows` sets the layers' own buffers up for fewer rows than the blobs hold (a net
        whose workers do the computing needs none of its own).
        """
        shapes = self.plan(input_shape)
        if blobs is None:
            blobs = [Blob.allocate(backend, (batch_size,) + shape, dtype) for shape in shapes[1:]]
        self.blobs = list(blobs)
        for layer, shape in zip(self.layers, shapes):
            layer.setup(backend, shape, batch_size if layer_rows is None else layer_rows, dtype)
        self.stages = plan_stages(backend, self.layers, self.blobs)
        self.learns = [
            any(_learns(layer) for layer in self.layers[stage.first : stage.last + 1])
            for stage in self.stages
        ]
        return shapes

    def forward(self, x, train: bool, span: range | None = None):
        """Run on x (n rows); returns the output view (x itself for an empty chain). With a
        span, only its layers run (the stages inside it), and x is the input of its first."""
        n = x.shape[0]
        for stage, _ in self._inside(span):
            top = self.blobs[stage.last].data[:n]
            stage.runner.forward(x, top, train)
            x = top
        return x

    def backward(self, x, dx, top_grad=None, span: range | None = None) -> None:
        """Backward from the last output's gradient (its blob's grad, or `top_grad` if given)
        down to dx (None when nothing below needs it; parameter gradients are still made).
        With a span, only its layers: from their last output's grad to x, their first's input."""
        n, last = x.shape[0], len(self.layers) - 1
        first = 0 if span is None else span.start
        for stage, learns in reversed(self._inside(span)):
            top = self.blobs[stage.last]
            bottom, d_bottom = (
                (x, dx) if stage.first == first else self.blobs[stage.first - 1].rows(n)
            )
            if d_bottom is None and not learns:
                continue  # nothing below needs this gradient
            dy = top_grad if top_grad is not None and stage.last == last else top.grad[:n]
            stage.runner.backward(bottom, top.data[:n], dy, d_bottom)

    def _inside(self, span: range | None) -> list[tuple]:
        """(stage, whether it learns) of the stages that start inside span (all without one)."""
        return [
            pair for pair in zip(self.stages, self.learns) if span is None or pair[0].first in span
        ]


def _learns(layer) -> bool:
    """Whether a layer, or a layer inside it, has parameters (whose gradients backward makes)."""
    return bool(layer.params) or any(_learns(child) for _, child in layer.children())
