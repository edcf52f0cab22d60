"""Per-stage timing: each stage's forward and backward, the loss and the optimizer step of one
training step (Caffe's `time`, in small), on synthetic data.

A stage is what a step really runs (fusion.py): a layer, or a run of layers the backend computes
in one pass (on the CPU, Bias -> ReLU -> MaxPool2D), named by its describe() ("fused[...]") and
timed as one piece. On the CPU each piece is timed with the wall clock (the mean of `steps`
calls after one full step, on one thread: a net on several threads computes in its workers'
copies of the layers, which split every layer alike). On CUDA each piece is captured alone as a
CUDA graph and replayed `REPLAYS` times between two CUDA events, so the figure is the GPU's own
time for it, without Python's launch overhead (a whole step replayed from one graph costs about
the sum). Each row says how many calls its figure is the mean of ("calls").
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
    runs them: {"position", "layer_index", "last_layer_index", "layer", "phase", "ms",
    "calls"}). layer_index..last_layer_index are the top-level layers of the piece's stage
    (None for the loss and the optimizer); phase is forward, backward or update."""
    backend = get_backend(device, precision=precision, threads=1)
    net = Net(build_model(model, num_classes), SoftmaxCrossEntropy(), backend, seed=seed)
    net.setup(batch_size, input_shape)
    optimizer = SGD(0.01, 0.9).setup(net)
    images, labels = synthetic_batch(batch_size, seed, input_shape, num_classes)
    n = net.load_batch(images, labels)
    net.forward(n)  # one full step first: every buffer holds real values
    net.backward(n)
    optimizer.step()
    calls = REPLAYS if backend.supports_graphs else steps
    rows = []
    for position, (span, name, phase, function, args) in enumerate(_pieces(net, optimizer, n)):
        seconds = _seconds_of(backend, function, args, steps)
        rows.append({"position": position, "layer_index": span[0], "last_layer_index": span[1],
                     "layer": name, "phase": phase, "ms": seconds * 1e3,
                     "calls": calls})  # fmt: skip
    return backend.describe(), rows


def _pieces(net, optimizer, n: int):
    """((first, last layer), name, phase, function, args) of every piece of a step, in step
    order: the chain's stages forward, the loss, the stages backward, the update."""
    stages, blobs = net.chain.stages, net.blobs  # blobs[i] is the input of layer i
    for stage in stages:
        bottom, top = blobs[stage.first], blobs[stage.last + 1]
        yield _span(stage), stage.runner.describe(), "forward", stage.runner.forward, (
            bottom.data[:n], top.data[:n], True
        )  # fmt: skip
    loss, nothing = net.loss, (None, None)
    yield nothing, loss.name, "forward", loss.forward, (blobs[-1].data[:n], net.labels[:n])
    yield nothing, loss.name, "backward", loss.backward, (blobs[-1].grad[:n],)
    for stage in reversed(stages):
        bottom, top = blobs[stage.first], blobs[stage.last + 1]
        x, dx = bottom.rows(n)
        args = (x, top.data[:n], top.grad[:n], dx)
        yield _span(stage), stage.runner.describe(), "backward", stage.runner.backward, args
    yield nothing, type(optimizer).__name__, "update", optimizer.step, ()


def _span(stage) -> tuple[int, int]:
    return stage.first, stage.last


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


def layers_of(row: dict) -> str:
    """A layer row's top-level layers as a label: "4", "1-3" for a fused stage, "" for the loss
    and the optimizer (rows written before stages were timed have no last_layer_index)."""
    first, last = row["layer_index"], row.get("last_layer_index")
    if first is None:
        return ""
    return str(first) if last is None or last == first else f"{first}-{last}"


def format_layer_table(rows: list[dict], device: str, batch_size: int) -> str:
    """The pieces one a line, then their sum (the last line: scripts read it)."""
    lines = []
    for row in rows:
        name = f"{layers_of(row):>5} {row['phase']:<8} {row['layer']}"
        lines.append(f"{name:<66} {row['ms']:8.3f} ms")
    total = sum(row["ms"] for row in rows)
    lines.append(f"{'sum':<66} {total:8.3f} ms  ({device}, batch {batch_size})")
    return "\n".join(lines)


def layer_rows(devices, model: str, batch_sizes, input_shape, num_classes: int,
               precision: str, origin: dict, print_table=print) -> list[dict]:  # fmt: skip
    """`bench --layers`: profile each device at each batch size, hand each table to
    print_table, and return the pieces as the bench file's layer rows, each carrying `origin`
    (the run's machine, commit, time and load: the step rows' provenance)."""
    from .bench import resolve_device

    rows = []
    for device in devices:
        for batch_size in batch_sizes:
            described, pieces = profile_layers(
                device, model, batch_size, input_shape, num_classes, precision=precision
            )
            print_table(f"\nper layer: {model}, batch {batch_size}, {described}")
            print_table(format_layer_table(pieces, described, batch_size))
            threads = 1 if resolve_device(device) == "cpu" else None  # profile_layers' 1
            rows += [
                {"kind": "layer", "engine": "convnet_gpu", "device": described,
                 "requested": device, "model": model, "batch_size": batch_size,
                 "threads": threads, "precision": precision, **piece, **origin}
                for piece in pieces
            ]  # fmt: skip
    return rows
