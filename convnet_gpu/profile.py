"""Per-layer timing: each layer's forward and backward, the loss and the optimizer step of one
training step (Caffe's `time`, in small), on synthetic data.

On the CPU each piece is timed with the wall clock (the mean of `steps` calls after one full
step, on one thread: a net on several threads computes in its workers' copies of the layers,
which split every layer alike). On CUDA each piece is captured alone as a CUDA graph and
replayed `REPLAYS` times between two CUDA events, so the figure is the GPU's own time for it,
without Python's launch overhead (a whole step replayed from one graph costs about the sum).
`convnet-gpu bench --layers` prints the table; scripts/profile_layers.py is a thin wrapper.
"""

from __future__ import annotations

import time

from .backends import get_backend
from .bench import INPUT_SHAPE, NUM_CLASSES, synthetic_batch
from .layers import SoftmaxCrossEntropy
from .models import build_model
from .net import Net
from .optim import SGD

STEPS, REPLAYS = 6, 20


def profile_layers(
    device: str, model: str, batch_size: int, input_shape=INPUT_SHAPE,
    num_classes: int = NUM_CLASSES, precision: str = "fp32", seed: int = 0, steps: int = STEPS,
) -> tuple[str, list[dict]]:  # fmt: skip
    """(the backend's description, one row per piece of a training step in the order a step
    runs them: {"position", "layer_index", "layer", "phase", "ms"}). layer_index is the
    top-level layer's (None for the loss and the optimizer); phase is forward, backward or
    update."""
    backend = get_backend(device, precision=precision, threads=1)
    net = Net(build_model(model, num_classes), SoftmaxCrossEntropy(), backend, seed=seed)
    net.setup(batch_size, input_shape)
    optimizer = SGD(0.01, 0.9).setup(net)
    images, labels = synthetic_batch(batch_size, seed, input_shape, num_classes)
    n = net.load_batch(images, labels)
    net.forward(n)  # one full step first: every buffer holds real values
    net.backward(n)
    optimizer.step()
    rows = []
    for position, (index, layer, phase, function, args) in enumerate(_pieces(net, optimizer, n)):
        seconds = _seconds_of(backend, function, args, steps)
        rows.append({"position": position, "layer_index": index, "layer": layer,
                     "phase": phase, "ms": seconds * 1e3})  # fmt: skip
    return backend.describe(), rows


def _pieces(net, optimizer, n: int):
    """(layer index, layer, phase, function, args) of every piece of a step, in step order."""
    for i, (layer, bottom, top) in enumerate(zip(net.layers, net.blobs, net.blobs[1:])):
        yield i, layer.describe(), "forward", layer.forward, (bottom.data[:n], top.data[:n], True)
    loss = net.loss
    yield None, loss.name, "forward", loss.forward, (net.blobs[-1].data[:n], net.labels[:n])
    yield None, loss.name, "backward", loss.backward, (net.blobs[-1].grad[:n],)
    for i in reversed(range(len(net.layers))):
        layer, bottom, top = net.layers[i], net.blobs[i], net.blobs[i + 1]
        x, dx = bottom.rows(n)
        args = (x, top.data[:n], top.grad[:n], dx)
        yield i, layer.describe(), "backward", layer.backward, args
    yield None, type(optimizer).__name__, "update", optimizer.step, ()


def _seconds_of(backend, function, args, steps: int) -> float:
    """Seconds one call of function(*args) takes (see the module docstring for how)."""
    if not backend.supports_graphs:
        backend.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            function(*args)
        backend.synchronize()
        return (time.perf_counter() - start) / steps
    import cupy

    function(*args)  # warm-up: kernels compile outside the capture
    graph = backend.capture(lambda: function(*args))
    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    graph.replay()
    start.record()  # on the current stream, where the replays go
    for _ in range(REPLAYS):
        graph.replay()
    end.record()
    end.synchronize()
    return cupy.cuda.get_elapsed_time(start, end) / 1000 / REPLAYS


def format_layer_table(rows: list[dict], device: str, batch_size: int) -> str:
    """The pieces one a line, then their sum (the last line: scripts read it)."""
    lines = []
    for row in rows:
        index = "" if row["layer_index"] is None else f"{row['layer_index']:2d}"
        name = f"{index:>2} {row['phase']:<8} {row['layer']}"
        lines.append(f"{name:<66} {row['ms']:8.3f} ms")
    total = sum(row["ms"] for row in rows)
    lines.append(f"{'sum':<66} {total:8.3f} ms  ({device}, batch {batch_size})")
    return "\n".join(lines)
