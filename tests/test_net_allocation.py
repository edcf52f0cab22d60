"""DESIGN rule 2: setup allocates, a training step only writes into memory the net already owns.

NumPy: tracemalloc (NumPy reports its data buffers to it) shows neither growth nor a peak over
20 steps after the first. CuPy: the memory pool's used bytes are flat over 20 steps.
One simple_cnn activation blob at batch 16 is 16*32*28*28*4 bytes = 1.6 MB, so any per-step
array allocation of a blob trips the 256 KiB peak budget.
The same holds for a net with BatchNorm, Dropout and GlobalAvgPool, evaluation forwards mixed in.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from convnet_gpu import (
    SGD,
    BatchNorm,
    Bias,
    Conv2D,
    Dense,
    Dropout,
    GlobalAvgPool,
    Net,
    ReLU,
    SoftmaxCrossEntropy,
    get_backend,
)
from convnet_gpu.models import simple_cnn

CPU = get_backend("cpu")

BATCH = 16
INPUT_SHAPE = (1, 28, 28)
WARM_STEPS = 1
MEASURED_STEPS = 20
SMALL_LAST_BATCH = 9
GROWTH_LIMIT = 64 * 1024
PEAK_LIMIT = 256 * 1024


def _host_batches(count: int, seed: int = 0):
    """Host batches made before measuring: full ones, with a smaller n=9 batch mixed in."""
    rng = np.random.default_rng(seed)
    batches = []
    for step in range(count):
        n = SMALL_LAST_BATCH if step % 7 == 3 else BATCH
        images = rng.standard_normal((n,) + INPUT_SHAPE).astype(np.float32)
        labels = rng.integers(0, 10, size=n).astype(np.int32)
        batches.append((images, labels))
    assert any(len(images) == SMALL_LAST_BATCH for images, _ in batches)
    return batches


def _training_setup(backend):
    net = Net(simple_cnn(10), SoftmaxCrossEntropy(), backend, dtype=np.float32, seed=0)
    net.setup(BATCH, INPUT_SHAPE)
    optimizer = SGD(lr=0.01, momentum=0.9, weight_decay=5e-4).setup(net)
    return net, optimizer


def _step(net, optimizer, images, labels):
    n = net.load_batch(images, labels)
    net.forward(n, train=True)
    net.backward(n)
    optimizer.step()
    return net.count_correct(n)


def _top_allocations(before, after, limit=8) -> str:
    stats = after.compare_to(before, "lineno")
    lines = [str(stat) for stat in stats[:limit] if stat.size_diff or stat.count_diff]
    return "\n  ".join(lines) or "(none)"


def _peak_by_operation(net, optimizer, images, labels, min_bytes=4096) -> str:
    """One more step, op by op under tracemalloc: which operations allocate, and how much at peak.

    Only run when the budget is exceeded, to name the culprit in the failure message.
    """
    rows = []

    def measure(label, fn):
        tracemalloc.reset_peak()
        start, _ = tracemalloc.get_traced_memory()
        fn()
        end, peak = tracemalloc.get_traced_memory()
        if peak - start > min_bytes or end - start > min_bytes:
            rows.append((peak - start, f"{label}: peak +{peak - start} B, kept +{end - start} B"))

    n = len(images)
    tracemalloc.start()
    try:
        measure("net.load_batch", lambda: net.load_batch(images, labels))
        if net.workers is None:
            _measure_layers(measure, net, net.blobs, n)
        else:  # worker 0's layers, on its rows, stand for every worker's
            net.forward(n)
            worker = net.workers.workers[0]
            _measure_layers(measure, worker, [worker.input] + worker.chain.blobs, worker.size)
        measure("optimizer.step", optimizer.step)
        measure("net.count_correct", lambda: net.count_correct(n))
    finally:
        tracemalloc.stop()
    rows.sort(key=lambda row: -row[0])  # the biggest allocator first
    return "\n  ".join(line for _, line in rows) or "(no single operation over the threshold)"


def _measure_layers(measure, net, blobs, n) -> None:
    """measure() each layer's forward and backward, and the loss, of a Net or a worker."""
    for i, (layer, bottom, top) in enumerate(zip(net.layers, blobs, blobs[1:])):
        measure(
            f"forward  layer {i} {layer.describe()}",
            lambda: layer.forward(bottom.data[:n], top.data[:n], True),
        )
    measure("loss.forward", lambda: net.loss.forward(blobs[-1].data[:n], net.labels[:n]))
    measure("loss.backward", lambda: net.loss.backward(blobs[-1].grad[:n]))
    for i in reversed(range(len(net.layers))):
        layer, bottom, top = net.layers[i], blobs[i], blobs[i + 1]
        x, dx = bottom.rows(n)
        if dx is None and not layer.params:
            continue
        measure(
            f"backward layer {i} {layer.describe()}",
            lambda: layer.backward(x, top.data[:n], top.grad[:n], dx),
        )


@pytest.mark.parametrize("threads", [1, 2])  # 2: the step on CPU worker threads (workers.py)
def test_numpy_step_allocates_nothing(threads):
    net, optimizer = _training_setup(get_backend("cpu", threads=threads))
    batches = _host_batches(WARM_STEPS + MEASURED_STEPS)
    for images, labels in batches[:WARM_STEPS]:
        _step(net, optimizer, images, labels)
    params_before = net.params.data.copy()
    blob_bytes = net.blobs[1].data.nbytes
    assert blob_bytes > 4 * PEAK_LIMIT  # the threshold really is below one activation blob

    tracemalloc.start()
    try:
        start_snapshot = tracemalloc.take_snapshot()
        start_current, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        hits = 0
        for images, labels in batches[WARM_STEPS:]:
            hits += int(_step(net, optimizer, images, labels))
        end_current, peak = tracemalloc.get_traced_memory()
        end_snapshot = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()

    # NumPy's ufuncs buffer strided operands in blocks of 8192 elements, transiently: each
    # thread may hold such buffers at the same moment.
    peak_limit = PEAK_LIMIT * threads
    growth, peak_over_start = end_current - start_current, peak - start_current
    report = (
        f"tracemalloc over {MEASURED_STEPS} steps: start {start_current} B, end {end_current} B "
        f"(growth {growth} B, limit {GROWTH_LIMIT}), peak {peak} B (peak over start "
        f"{peak_over_start} B, limit {peak_limit}); one activation blob is {blob_bytes} B.\n"
        f"  top differences by line:\n  {_top_allocations(start_snapshot, end_snapshot)}"
    )
    print(report)
    if growth > GROWTH_LIMIT or peak_over_start > peak_limit:
        report += (
            "\n  operations that allocate (one more step, op by op):\n  "
            + _peak_by_operation(net, optimizer, *batches[-1])
        )
    assert growth <= GROWTH_LIMIT, report
    assert peak_over_start <= peak_limit, report
    # the steps really trained: parameters moved, the loss is finite, hits were counted
    assert not np.array_equal(net.params.data, params_before)
    assert np.isfinite(float(net.loss.loss))
    assert 0 <= hits <= sum(len(images) for images, _ in batches[WARM_STEPS:])


@pytest.mark.gpu
def test_cupy_step_keeps_pool_usage_flat(cuda_backend):
    import cupy

    net, optimizer = _training_setup(cuda_backend)
    batches = _host_batches(WARM_STEPS + MEASURED_STEPS)
    pool = cupy.get_default_memory_pool()
    for images, labels in batches[:WARM_STEPS]:
        _step(net, optimizer, images, labels)
    cuda_backend.synchronize()
    used_after_first = pool.used_bytes()
    params_before = cuda_backend.to_host(net.params.data)
    used = []
    for images, labels in batches[WARM_STEPS:]:
        _step(net, optimizer, images, labels)
        cuda_backend.synchronize()
        used.append(pool.used_bytes())
    assert used == [used_after_first] * MEASURED_STEPS, (
        f"cupy pool used bytes after the first step {used_after_first}, then per step {used}"
    )
    assert cuda_backend.memory_in_use() == used_after_first
    assert not np.array_equal(cuda_backend.to_host(net.params.data), params_before)
    assert np.isfinite(float(net.loss.loss))


# ---- a net with all three steps without allocating ------------------------------------------
def _norm_dropout_training(backend):
    """(net, optimizer, layers, step(images, labels), host batches with a smaller n=9 mixed in)."""
    layers = [
        Conv2D(16, 3, pad=1),
        BatchNorm(),
        ReLU(),
        Dropout(0.2, seed=1),
        Conv2D(32, 3, stride=2, pad=1),
        BatchNorm(),
        ReLU(),
        GlobalAvgPool(),
        Dense(5000),
        BatchNorm(),
        ReLU(),
        Dropout(0.5, seed=2),
        Dense(10),
        Bias(),
    ]
    net = Net(layers, SoftmaxCrossEntropy(), backend, dtype=np.float32).setup(16, (1, 28, 28))
    optimizer = SGD(lr=0.01, momentum=0.9, weight_decay=5e-4).setup(net)
    rng = np.random.default_rng(10)
    batches = [
        (
            rng.standard_normal((n, 1, 28, 28)).astype(np.float32),
            rng.integers(0, 10, n).astype(np.int32),
        )
        for n in (16, 16, 9, 16, 16, 9)
    ]

    def step(images, labels):
        n = net.load_batch(images, labels)
        net.forward(n, train=True)
        net.backward(n)
        optimizer.step()
        net.forward(n, train=False)  # an evaluation forward in between

    return net, layers, step, batches


def test_net_with_batchnorm_dropout_and_global_pool_allocates_nothing_per_step():
    net, layers, step, batches = _norm_dropout_training(CPU)
    peak_limit = 256 * 1024
    for i in (1, 3, 5, 7, 9, 11):  # a copy of what BatchNorm, Dropout, GlobalAvgPool read trips it
        assert net.blobs[i].data.nbytes > peak_limit, (i, net.blobs[i])
    step(*batches[0])  # warm-up
    running_before = layers[1].buffers["running_mean"].copy()
    params_before = net.params.data.copy()
    tracemalloc.start()
    try:
        start, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for images, labels in batches[1:]:
            step(images, labels)
        end, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert end - start <= 64 * 1024, f"grew by {end - start} B"
    assert peak - start <= peak_limit, f"peak {peak - start} B over the start"
    assert layers[3].step == len(batches) and layers[11].step == len(batches)
    assert not np.array_equal(layers[1].buffers["running_mean"], running_before)
    assert not np.array_equal(net.params.data, params_before)
    assert np.isfinite(float(net.loss.loss))


@pytest.mark.gpu
def test_cupy_net_with_batchnorm_dropout_keeps_pool_usage_flat(cuda_backend):
    import cupy

    net, layers, step, batches = _norm_dropout_training(cuda_backend)
    pool = cupy.get_default_memory_pool()
    step(*batches[0])
    cuda_backend.synchronize()
    used_after_first = pool.used_bytes()
    used = []
    for images, labels in batches[1:]:
        step(images, labels)
        cuda_backend.synchronize()
        used.append(pool.used_bytes())
    assert used == [used_after_first] * (len(batches) - 1)
    assert layers[3].step == len(batches)
    assert np.isfinite(float(net.loss.loss))
