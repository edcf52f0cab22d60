"""A net's step on several CPU threads (workers.py) computes the one-thread step.

In float64 the threaded and the one-thread step agree to 1e-12 (relative to the largest value):
only the order of float additions differs (BatchNorm's sums over slices, the gradients added
worker by worker). In float32 the tolerance is 1e-5 of the largest gradient. For a fixed number
of threads a step is deterministic, bit for bit.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from convnet_gpu import (
    SGD,
    BatchNorm,
    Bias,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool,
    MaxPool2D,
    Net,
    ReLU,
    Residual,
    SoftmaxCrossEntropy,
    get_backend,
    workers,
)
from convnet_gpu.layers.base import walk
from convnet_gpu.models import simple_cnn

INPUT_SHAPE = (1, 12, 12)
BATCH = 12


def every_kind_of_layer():
    """Dropout (global rows), BatchNorm over images and over features (synced sums), a
    residual block, pooling and dense layers."""
    block = Residual([Conv2D(4, 3, pad=1), BatchNorm(), ReLU(), Conv2D(4, 3, pad=1), BatchNorm()])
    return [
        Conv2D(4, 3, pad=1),
        BatchNorm(),
        ReLU(),
        block,
        ReLU(),
        MaxPool2D(2),
        Dropout(0.3),
        Conv2D(6, 3),
        Bias(),
        ReLU(),
        GlobalAvgPool(),
        Flatten(),
        Dense(8),
        BatchNorm(),
        ReLU(),
        Dropout(0.5),
        Dense(3),
        Bias(),
    ]


def batches(count, dtype, seed=0, sizes=(BATCH, 5)):
    rng = np.random.default_rng(seed)
    return [
        (
            rng.standard_normal((sizes[k % len(sizes)],) + INPUT_SHAPE).astype(dtype),
            rng.integers(0, 3, sizes[k % len(sizes)]).astype(np.int32),
        )
        for k in range(count)
    ]


def train(threads, layers, dtype, steps=4):
    """A net on `threads` threads after `steps` SGD steps (full and short batches: with 5 rows
    over 4 or 5 threads some workers get none); returns the net, the last loss and output."""
    backend = get_backend("cpu", threads=threads)
    net = Net(layers, SoftmaxCrossEntropy(), backend, dtype=dtype, seed=5).setup(BATCH, INPUT_SHAPE)
    optimizer = SGD(0.05, momentum=0.9, weight_decay=1e-3).setup(net)
    for images, labels in batches(steps, dtype):
        n = net.load_batch(images, labels)
        output = net.forward(n, train=True).copy()
        net.backward(n)
        optimizer.step()
    return net, float(net.loss.loss), output


def state(net) -> dict:
    """Everything a step changes: parameters, gradients, buffers and layer scalars."""
    arrays = {"params": net.params.data, "grad": net.params.grad}
    for path, layer in walk(net.layers):
        arrays.update({f"{path}.{name}": array for name, array in layer.buffers.items()})
        for name, value in layer.state_scalars().items():
            arrays[f"{path}.{name}"] = np.asarray(value)
    return {name: np.array(array) for name, array in arrays.items()}


def relative_difference(a, b) -> float:
    scale = max(float(np.abs(b).max()), 1e-30)
    return float(np.abs(np.asarray(a, np.float64) - b).max()) / scale


@pytest.mark.parametrize("whole_batch_dense", [False, True])
@pytest.mark.parametrize("threads", [2, 3, 4, 5])
def test_threaded_steps_equal_the_one_thread_steps_in_float64(threads, whole_batch_dense,
                                                              monkeypatch):  # fmt: skip
    if whole_batch_dense:  # every top-level Dense over the whole batch, split by columns
        monkeypatch.setattr(workers, "WHOLE_BATCH_DENSE_BYTES", 0)
    alone, alone_loss, alone_output = train(1, every_kind_of_layer(), np.float64)
    shared, shared_loss, shared_output = train(threads, every_kind_of_layer(), np.float64)
    assert len(shared.workers) == min(threads, BATCH)
    assert sorted(shared.workers.whole_batch) == ([12, 16] if whole_batch_dense else [])
    assert shared_loss == pytest.approx(alone_loss, rel=1e-12)
    assert relative_difference(shared_output, alone_output) < 1e-12
    expected = state(alone)
    for name, array in state(shared).items():
        assert relative_difference(array, expected[name]) < 1e-12, name


@pytest.mark.parametrize("threads", [2, 3])
def test_whole_batch_dense_layers_first_and_last_equal_the_one_thread_steps(threads, monkeypatch):
    """Whole-batch Dense layers at both ends of the chain leave empty spans for the workers;
    short batches (5 rows over 3 threads) leave some workers without rows."""
    monkeypatch.setattr(workers, "WHOLE_BATCH_DENSE_BYTES", 0)

    def layers():
        return [Flatten(), Dense(7), Bias(), ReLU(), Dense(3)]

    alone, alone_loss, alone_output = train(1, layers(), np.float64)
    shared, shared_loss, shared_output = train(threads, layers(), np.float64)
    assert sorted(shared.workers.whole_batch) == [1, 4]
    assert shared.workers.spans == [range(0, 1), range(2, 4), range(5, 5)]
    assert shared_loss == pytest.approx(alone_loss, rel=1e-12)
    assert relative_difference(shared_output, alone_output) < 1e-12
    expected = state(alone)
    for name, array in state(shared).items():
        assert relative_difference(array, expected[name]) < 1e-12, name


def test_threaded_simple_cnn_is_within_float32_rounding():
    shape = (1, 28, 28)
    rng = np.random.default_rng(1)
    images = rng.standard_normal((32,) + shape).astype(np.float32)
    labels = rng.integers(0, 10, 32).astype(np.int32)
    grads = []
    for threads in (1, 2):
        net = Net(simple_cnn(), SoftmaxCrossEntropy(), get_backend("cpu", threads=threads), seed=2)
        net.setup(32, shape)
        n = net.load_batch(images, labels)
        net.forward(n)
        net.backward(n)
        grads.append(net.params.grad.copy())
        assert list(net.workers.whole_batch if net.workers else []) == ([9] if threads > 1 else [])
    assert relative_difference(grads[1], grads[0]) < 1e-5


def test_a_fixed_number_of_threads_repeats_bit_for_bit():
    first = state(train(3, every_kind_of_layer(), np.float32)[0])
    second = state(train(3, every_kind_of_layer(), np.float32)[0])
    assert first.keys() == second.keys()
    for name in first:
        assert np.array_equal(first[name], second[name]), name


def test_dropout_masks_are_the_one_thread_masks():
    """Each worker draws its own rows' part of the batch's mask, not a mask of its own."""
    layers = lambda: [Flatten(), Dropout(0.5, seed=3)]
    images = np.ones((BATCH,) + INPUT_SHAPE, np.float32)
    outputs = []
    for threads in (1, 4):
        net = Net(layers(), None, get_backend("cpu", threads=threads)).setup(BATCH, INPUT_SHAPE)
        net.load_batch(images)
        outputs.append(net.forward(BATCH, train=True).copy())
    assert np.array_equal(outputs[0], outputs[1])
    assert 0.3 < (outputs[0] == 0).mean() < 0.7


class FailsInWorker(ReLU):
    """A ReLU that raises in one worker while `armed`, after the others reached a barrier."""

    armed = False

    def forward(self, x, y, train):
        if FailsInWorker.armed and self.rows.index == 1:
            raise RuntimeError("worker 1 failed")
        super().forward(x, y, train)


def test_an_error_in_one_worker_stops_the_step_and_the_next_step_works():
    layers = [Conv2D(4, 3, pad=1), BatchNorm(), FailsInWorker(), Flatten(), Dense(3), BatchNorm()]
    net = Net(layers, SoftmaxCrossEntropy(), get_backend("cpu", threads=3), seed=1)
    net.setup(BATCH, INPUT_SHAPE)
    (images, labels), = batches(1, np.float32)  # fmt: skip
    n = net.load_batch(images, labels)
    outcome = {}

    def failing_step():  # in a thread: a deadlock fails the test instead of hanging it
        try:
            net.forward(n)
        except RuntimeError as exc:
            outcome["error"] = str(exc)

    FailsInWorker.armed = True
    try:
        runner = threading.Thread(target=failing_step, daemon=True)
        runner.start()
        runner.join(timeout=30)
    finally:
        FailsInWorker.armed = False
    assert not runner.is_alive(), "the step hung after a worker failed"
    assert outcome == {"error": "worker 1 failed"}
    net.forward(n)  # the barrier was reset: the next step runs
    net.backward(n)
    assert np.isfinite(float(net.loss.loss))
    assert np.isfinite(net.params.grad).all()


def test_one_thread_per_row_at_most():
    net = Net([Flatten(), Dense(2)], None, get_backend("cpu", threads=8)).setup(3, INPUT_SHAPE)
    assert len(net.workers) == 3


def test_threads_must_be_a_positive_whole_number():
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="threads"):
            get_backend("cpu", threads=bad)
