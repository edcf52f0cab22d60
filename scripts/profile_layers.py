"""Time each layer's forward and backward, the loss and the optimizer step of one training step.

    PYTHONPATH=. python scripts/profile_layers.py [BATCH] [MODEL] [DEVICE] [PRECISION]

On the CPU each piece is timed with the wall clock (the mean of 6 steps after one warm-up). On
CUDA each piece is captured alone as a CUDA graph and replayed 20 times between two CUDA events,
so the figure is the GPU's own time for it, without Python's launch overhead (a whole step
replayed from one graph costs about the sum). Synthetic data (Caffe's `time`, in small).
"""

import sys
import time

import numpy as np

from convnet_gpu import SGD, Net, SoftmaxCrossEntropy, build_model, get_backend

bs = int(sys.argv[1]) if len(sys.argv) > 1 else 64
model = sys.argv[2] if len(sys.argv) > 2 else "simple-cnn"
backend = get_backend(sys.argv[3] if len(sys.argv) > 3 else "cpu", threads=1,
                      precision=sys.argv[4] if len(sys.argv) > 4 else "fp32")  # fmt: skip
net = Net(build_model(model), SoftmaxCrossEntropy(), backend, seed=0).setup(bs, (1, 28, 28))
optimizer = SGD(0.01, 0.9).setup(net)
rng = np.random.default_rng(0)
images = rng.standard_normal((bs, 1, 28, 28)).astype(np.float32)
labels = rng.integers(0, 10, bs).astype(np.int32)
n = net.load_batch(images, labels)
STEPS, REPLAYS = 6, 20


def seconds_of(function, *args) -> float:
    """Seconds one call of function(*args) takes (see the module docstring for how)."""
    if not backend.supports_graphs:
        backend.synchronize()
        start = time.perf_counter()
        for _ in range(STEPS):
            function(*args)
        backend.synchronize()
        return (time.perf_counter() - start) / STEPS
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


def pieces():
    """(name, function, args) of every piece of a step, in the order a step runs them."""
    for i, (layer, bottom, top) in enumerate(zip(net.layers, net.blobs, net.blobs[1:])):
        yield f"{i:2d} forward  {layer.describe()}", layer.forward, (
            bottom.data[:n], top.data[:n], True)  # fmt: skip
    yield "   loss forward", net.loss.forward, (net.blobs[-1].data[:n], net.labels[:n])
    yield "   loss backward", net.loss.backward, (net.blobs[-1].grad[:n],)
    for i in reversed(range(len(net.layers))):
        layer, bottom, top = net.layers[i], net.blobs[i], net.blobs[i + 1]
        x, dx = bottom.rows(n)
        yield f"{i:2d} backward {layer.describe()}", layer.backward, (
            x, top.data[:n], top.grad[:n], dx)  # fmt: skip
    yield "   optimizer step", optimizer.step, ()


net.forward(n)  # one full step first: every buffer holds real values
net.backward(n)
optimizer.step()
total = 0.0
for name, function, args in pieces():
    took = seconds_of(function, *args)
    total += took
    print(f"{name:<66} {took * 1000:8.3f} ms")
print(f"{'sum':<66} {total * 1000:8.3f} ms  ({backend.describe()}, batch {bs})")
