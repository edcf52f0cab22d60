"""Stages of a chain: its layers one by one, or a run of them that the backend computes in one pass.

Layers stay primitives (Bias, ReLU and MaxPool2D are three layers, each with its own backward),
but ten memory passes over a conv's output for what two can do cost a CPU step ~7% (and a GPU
step kernel launches). So a chain asks its backend once, in setup, which runs it fuses, and runs
those as one stage: the same values and gradients as the three layers (tests/test_fusion.py),
without writing the blobs between them (a fused stage's two inner blobs stay allocated, for
the steps that run unfused, but hold only what the last such step wrote: read the output blob
of a fused stage, not those). Where the backend has no such kernel, or the run starts the
chain (its input gradient is not always asked for), each layer is its own stage, as before.
"""

from __future__ import annotations

from typing import NamedTuple


class Stage(NamedTuple):
    """Layers first..last of a chain, run as `runner` (the layer itself, or a fused run)."""

    first: int
    last: int
    runner: object  # forward(x, y, train) and backward(x, y, dy, dx), like a Layer


def plan_stages(backend, layers, blobs) -> list[Stage]:
    """The chain's stages, in order (layers set up, blobs allocated)."""
    stages, index = [], 0
    while index < len(layers):
        run = layers[index : index + 3]
        if (
            index > 0
            and _is_bias_relu_maxpool(run)
            and backend.fuses_bias_relu_maxpool(run[2].geom)
        ):
            fused = BiasReLUMaxPool(*run, inner_blobs=blobs[index : index + 2])
            stages.append(Stage(index, index + 2, fused))
            index += 3
        else:
            stages.append(Stage(index, index, layers[index]))
            index += 1
    return stages


def _is_bias_relu_maxpool(run) -> bool:
    # imported here: layers/residual.py imports chain.py, which imports this module
    from .layers import Bias, MaxPool2D, ReLU

    return [type(layer) for layer in run] == [Bias, ReLU, MaxPool2D]


class BiasReLUMaxPool:
    """Bias -> ReLU -> MaxPool2D as one pass forward and one backward (plus the bias's sums).

    The first maximum of relu(x + b) over a window is that of x + b when positive, so the CPU's
    pass pools x + b and applies the ReLU to the window's maximum alone. Where x + b holds a NaN
    the backend says so, and this step runs the three layers over the inner blobs instead (in a
    diverging run: their NaN rules are the reference; CuPy's kernels apply them themselves).
    """

    def __init__(self, bias, relu, pool, inner_blobs):
        self.bias, self.relu, self.pool = bias, relu, pool
        self.inner_blobs = inner_blobs  # the outputs of Bias and ReLU: used only unfused
        self.backend = bias.backend
        self.unfused = False  # the last forward ran the three layers

    def forward(self, x, y, train: bool) -> None:
        n = x.shape[0]
        bias, pool = self.bias.params["bias"], self.pool
        fused = self.backend.bias_relu_maxpool_forward(x, bias, y, pool.argmax[:n], pool.geom)
        self.unfused = not fused
        if self.unfused:
            biased, activated = (blob.data[:n] for blob in self.inner_blobs)
            self.bias.forward(x, biased, train)
            self.relu.forward(biased, activated, train)
            self.pool.forward(activated, y, train)

    def backward(self, x, y, dy, dx) -> None:
        n = x.shape[0]
        if self.unfused:
            (biased, d_biased), (activated, d_activated) = (b.rows(n) for b in self.inner_blobs)
            self.pool.backward(activated, y, dy, d_activated)
            self.relu.backward(biased, activated, d_activated, d_biased)
            self.bias.backward(x, biased, d_biased, dx)
            return
        self.backend.bias_relu_maxpool_backward(dy, y, self.pool.argmax[:n], dx, self.pool.geom)
        # d(loss)/d(x + b) is d(loss)/dx: the bias's gradient is its sum, as Bias.backward's
        self.backend.channel_sums(dx, self.bias.grads["bias"], self.bias.workspace)

    def describe(self) -> str:
        return f"fused[{self.bias.describe()}, {self.relu.describe()}, {self.pool.describe()}]"
