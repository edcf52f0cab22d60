"""Time each layer's forward and backward, the loss and the optimizer step of one training step.

    PYTHONPATH=. python scripts/profile_layers.py [BATCH] [MODEL] [DEVICE]

Averages over 6 steps after one warm-up, on synthetic data (Caffe's `time`, in small).
"""

import sys
import time

import numpy as np

from convnet_gpu import SGD, Net, SoftmaxCrossEntropy, build_model, get_backend

bs = int(sys.argv[1]) if len(sys.argv) > 1 else 64
model = sys.argv[2] if len(sys.argv) > 2 else "simple-cnn"
backend = get_backend(sys.argv[3] if len(sys.argv) > 3 else "cpu")
net = Net(build_model(model), SoftmaxCrossEntropy(), backend, seed=0).setup(bs, (1, 28, 28))
optimizer = SGD(0.01, 0.9).setup(net)
rng = np.random.default_rng(0)
images = rng.standard_normal((bs, 1, 28, 28)).astype(np.float32)
labels = rng.integers(0, 10, bs).astype(np.int32)
n = net.load_batch(images, labels)
STEPS = 6
seconds: dict[str, float] = {}


def timed(key, function, *args):
    backend.synchronize()
    start = time.perf_counter()
    function(*args)
    backend.synchronize()
    seconds[key] = seconds.get(key, 0.0) + time.perf_counter() - start


def step():
    for i, (layer, bottom, top) in enumerate(zip(net.layers, net.blobs, net.blobs[1:])):
        timed(
            f"{i:2d} forward  {layer.describe()}",
            layer.forward,
            bottom.data[:n],
            top.data[:n],
            True,
        )
    timed("   loss forward", net.loss.forward, net.blobs[-1].data[:n], net.labels[:n])
    timed("   loss backward", net.loss.backward, net.blobs[-1].grad[:n])
    for i in reversed(range(len(net.layers))):
        layer, bottom, top = net.layers[i], net.blobs[i], net.blobs[i + 1]
        x, dx = bottom.rows(n)
        if dx is None and not layer.params:
            continue
        timed(
            f"{i:2d} backward {layer.describe()}", layer.backward, x, top.data[:n], top.grad[:n], dx
        )
    timed("   optimizer step", optimizer.step)


step()  # warm-up (kernel compilation on a GPU)
seconds.clear()
for _ in range(STEPS):
    step()
for key, total in sorted(seconds.items()):
    print(f"{key:<60} {total / STEPS * 1000:8.2f} ms")
print(f"{'step':<60} {sum(seconds.values()) / STEPS * 1000:8.2f} ms  ({backend.describe()})")
