"""Count the array operations of one training step: on a GPU each is a kernel launch from Python.

    python scripts/count_ops.py simple-cnn mini-resnet

Wraps the NumPy backend's `xp` and its kernels in counters (with the cpu-jit extra the chains
fuse as on CUDA: Bias, ReLU and max pooling count as one kernel), runs one warm-up step and
one counted step (forward, backward, SGD with momentum and weight decay) at batch 8. The
trainer adds a few more per step (jitter, the loss and accuracy totals, the NaN window).
"""

from __future__ import annotations

import collections
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from convnet_gpu.backends import get_backend  # noqa: E402
from convnet_gpu.layers import SoftmaxCrossEntropy  # noqa: E402
from convnet_gpu.models import build_model  # noqa: E402
from convnet_gpu.net import Net  # noqa: E402
from convnet_gpu.optim import SGD  # noqa: E402

KERNELS = (
    "im2col",
    "col2im",
    "maxpool_forward",
    "maxpool_backward",
    "avgpool_forward",
    "avgpool_backward",
    "bias_relu_maxpool_forward",
    "bias_relu_maxpool_backward",
    "uniform",
    "jitter",
    "sgd_update",  # one kernel on CUDA (the NumPy backend's array operations are not counted)
    "adam_update",
)


class CountingModule:
    """Stands in for numpy as backend.xp; counts each function call by name."""

    def __init__(self, module, counts):
        self._module, self._counts = module, counts

    def __getattr__(self, name):
        attribute = getattr(self._module, name)
        if not callable(attribute) or isinstance(attribute, type):
            return attribute

        def counted(*args, **kwargs):
            self._counts[name] += 1
            return attribute(*args, **kwargs)

        return counted


def counted_kernel(kernel, name: str, counts):
    def counted(*args, **kwargs):
        counts[name] += 1
        return kernel(*args, **kwargs)

    return counted


def count_step(model: str) -> collections.Counter:
    counts = collections.Counter()
    backend = get_backend("cpu")
    for name in KERNELS:
        setattr(backend, name, counted_kernel(getattr(backend, name), name, counts))
    backend.xp = CountingModule(np, counts)  # before setup: layers and optimizer keep backend.xp
    net = Net(build_model(model), SoftmaxCrossEntropy(), backend, seed=0).setup(8, (1, 28, 28))
    optimizer = SGD(lr=0.01, momentum=0.9, weight_decay=5e-4).setup(net)
    images = np.random.default_rng(0).standard_normal((8, 1, 28, 28)).astype(np.float32)
    labels = np.arange(8, dtype=np.int32)
    for _ in range(2):  # the first step warms up; count the second
        counts.clear()
        n = net.load_batch(images, labels)
        net.forward(n, train=True)
        net.backward(n)
        optimizer.step()
    return counts


if __name__ == "__main__":
    for model in sys.argv[1:] or ["simple-cnn"]:
        counts = count_step(model)
        print(f"{model}: {sum(counts.values())} array operations per training step")
        print("  " + ", ".join(f"{name} {count}" for name, count in counts.most_common()))
