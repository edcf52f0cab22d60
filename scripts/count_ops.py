"""Count the kernel launches of one training step on CUDA, from the CPU: without graphs each is
a separate call from Python; a captured step replays them all at once.

    python scripts/count_ops.py simple-cnn mini-resnet

Runs the NumPy backend on one thread as the CUDA backend runs (the whole batch lowered
channels-first, Bias + ReLU + 2x2 max pooling fused where cpu-jit is installed, as CUDA always
fuses them), with its `xp` and its kernel methods wrapped in counters: an array operation counts
one launch, a kernel method its launches on CUDA (LAUNCHES) and none of the NumPy operations that
stand in for it here. One warm-up step, then one counted step (forward, backward, SGD with
momentum and weight decay) at batch 8. The trainer adds a few per step (jitter, the loss and
accuracy totals, the NaN window).
"""

from __future__ import annotations

import collections
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from convnet_gpu.backends import get_backend  # noqa: E402
from convnet_gpu.backends.base import Backend  # noqa: E402
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
    "sgd_update",
    "adam_update",
    "channel_sums",
    "channel_centered_squares",
    "batchnorm_statistics",
    "batchnorm_normalize",
    "batchnorm_input_grad",
)
# A kernel method's launches on CUDA (cupy_backend.py), where they are more than one: the
# per-channel sums add partials, regroup them, then finish.
LAUNCHES = {"channel_sums": 3, "channel_centered_squares": 3}
# The CPU's own convolution (blocks lowered channels-last) swapped for the default CUDA runs.
DEFAULT_CONVOLUTION = ("_conv_workspace", "_conv_forward", "_conv_backward")


class CountingModule:
    """Stands in for numpy as backend.xp; counts each function call by name."""

    def __init__(self, module, counts):
        self._module, self._counts = module, counts
        self.inside_kernel = False  # NumPy standing in for one CUDA kernel: not counted

    def __getattr__(self, name):
        attribute = getattr(self._module, name)
        if not callable(attribute) or isinstance(attribute, type):
            return attribute

        def counted(*args, **kwargs):
            if not self.inside_kernel:
                self._counts[name] += 1
            return attribute(*args, **kwargs)

        return counted


def counted_kernel(kernel, name: str, counts, xp: CountingModule):
    def counted(*args, **kwargs):
        counts[name] += LAUNCHES.get(name, 1)
        xp.inside_kernel = True
        try:
            return kernel(*args, **kwargs)
        finally:
            xp.inside_kernel = False

    return counted


def count_step(model: str) -> collections.Counter:
    counts = collections.Counter()
    backend = get_backend("cpu", threads=1)
    if backend.jit is None:  # without the compiled kernels the chains do not fuse as on CUDA
        sys.exit("count_ops.py needs the cpu-jit extra (numba) to fuse Bias, ReLU and max "
                 "pooling as CUDA does; pip install 'convnet-gpu[cpu-jit]'")  # fmt: skip
    xp = CountingModule(np, counts)
    for name in DEFAULT_CONVOLUTION:
        setattr(backend, name, getattr(Backend, name).__get__(backend))
    for name in KERNELS:
        setattr(backend, name, counted_kernel(getattr(backend, name), name, counts, xp))
    backend.xp = xp  # before setup: layers and optimizer keep backend.xp
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
        print(f"{model}: {sum(counts.values())} kernel launches per training step")
        print("  " + ", ".join(f"{name} {count}" for name, count in counts.most_common()))
