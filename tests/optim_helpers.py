"""A tiny float64 net (Flatten -> Dense -> Bias, softmax cross-entropy) and batches for it,
shared by the optimizer and model-selection tests."""

from __future__ import annotations

import numpy as np

from convnet_gpu import Net, SoftmaxCrossEntropy
from convnet_gpu.layers import Bias, Dense, Flatten

BATCH, INPUT_SHAPE, CLASSES = 5, (2, 3), 4


def tiny_net(backend=None, seed=0, dtype=np.float64):
    net = Net(
        [Flatten(), Dense(CLASSES), Bias()], SoftmaxCrossEntropy(), backend, dtype=dtype, seed=seed
    ).setup(BATCH, INPUT_SHAPE)
    # biases start non-zero, so decaying them by mistake would show
    bias = np.random.default_rng(seed + 100).standard_normal(CLASSES).astype(dtype)
    net.backend.copy_from_host(bias, net.layers[2].params["bias"])
    return net


def batches(count, seed=1):
    rng = np.random.default_rng(seed)
    return [
        (
            rng.standard_normal((BATCH,) + INPUT_SHAPE),
            rng.integers(0, CLASSES, BATCH).astype(np.int32),
        )
        for _ in range(count)
    ]
