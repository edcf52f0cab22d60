"""NumPy vs CuPy on whole layers and nets: same seed and inputs -> same outputs and gradients.

Covers every gradcheck standard case and a full simple_cnn training step, in float64 and float32,
with the host inputs given contiguous, as a transposed-then-transposed-back (Fortran-ordered)
view, or as a strided slice (helpers.LAYOUTS). Eval-mode cases run the gradcheck's warm-up
training forwards first and compare the layers' buffers (BatchNorm running statistics) too;
Dropout draws the same counter-based mask on both backends (same seed, same step). The NumPy
backend is the oracle; helpers.assert_backends_agree skips (with the reason) without a GPU.
(The raw kernels are compared in test_backends.py.)
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from helpers import assert_backends_agree

from convnet_gpu import SGD, Net, SoftmaxCrossEntropy
from convnet_gpu.gradcheck import EVAL_WARMUP_STEPS
from convnet_gpu.gradcheck_cases import standard_cases
from convnet_gpu.models import simple_cnn

pytestmark = pytest.mark.gpu

CASES = {case.name: case for case in standard_cases()}
DTYPES = {"float64": np.float64, "float32": np.float32}
LAYOUT_NAMES = ["contiguous", "transposed", "sliced"]


# ---- one run of a standard case on one backend -----------------------------------------------
def run_case(backend, name, dtype, batch, x, labels, projection):
    """Forward + backward of standard case `name`; returns arrays keyed by what they are."""
    layers, input_shape, loss = CASES[name].build()
    net = Net(layers, loss, backend, dtype=dtype, seed=0)
    net.setup(batch, input_shape, input_grad=True)
    n = net.load_batch(x, labels if loss is not None else None)
    train = CASES[name].train
    for _ in range(0 if train else EVAL_WARMUP_STEPS):
        net.forward(n, train=True)
    result = {"output": net.forward(n, train=train).copy()}
    if loss is None:
        backend.copy_from_host(projection, net.blobs[-1].grad[:n])
    else:
        result["loss"] = net.loss.loss.copy()
    net.backward(n)
    result["d_input"] = net.blobs[0].grad[:n]
    result["d_params"] = net.params.grad
    result["params"] = net.params.data
    for i, layer in enumerate(net.layers):
        for buffer_name, buffer in layer.buffers.items():
            result[f"layer {i} {buffer_name}"] = buffer
    return result


def case_inputs(name, dtype_name, layout, batch):
    """Host x, labels and the output projection (the gradient fed back without a loss)."""
    rng = np.random.default_rng(zlib.crc32(f"{name}/{dtype_name}/{layout}".encode()))
    layers, input_shape, loss = CASES[name].build()
    probe = Net(layers, loss, None, dtype=np.float64).setup(1, input_shape)
    classes_or_shape = probe.output_shape
    x = rng.standard_normal((batch,) + tuple(input_shape))
    labels = rng.integers(0, classes_or_shape[0], size=batch).astype(np.int32)
    projection = rng.standard_normal((batch,) + tuple(classes_or_shape))
    return x, labels, projection


@pytest.mark.parametrize("layout", LAYOUT_NAMES)
@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("name", list(CASES))
def test_standard_case_agrees(name, dtype_name, layout):
    dtype, batch = DTYPES[dtype_name], CASES[name].batch

    def run(backend, *host_inputs):
        return run_case(backend, name, dtype, batch, *host_inputs)

    inputs = case_inputs(name, dtype_name, layout, batch)
    expected, _ = assert_backends_agree(run, *inputs, layout=layout, on_device=False)
    assert np.all(np.isfinite(expected["d_input"]))


# ---- a whole simple_cnn training step (two steps, so momentum and weight decay both act) --------
CNN_BATCH = 4
CNN_STEPS = 2


def run_simple_cnn(backend, dtype, *images_and_labels):
    """CNN_STEPS SGD steps on (images, labels) pairs; returns each step's arrays by name."""
    net = Net(simple_cnn(10), SoftmaxCrossEntropy(), backend, dtype=dtype, seed=0)
    net.setup(CNN_BATCH, (1, 28, 28))
    optimizer = SGD(lr=0.01, momentum=0.9, weight_decay=5e-4).setup(net)
    record = {}
    for step in range(CNN_STEPS):
        images, labels = images_and_labels[2 * step : 2 * step + 2]
        n = net.load_batch(images, labels)
        record[f"step {step} logits"] = net.forward(n, train=True).copy()
        record[f"step {step} loss"] = net.loss.loss.copy()
        net.backward(n)
        record[f"step {step} d_params"] = net.params.grad.copy()
        optimizer.step()
        record[f"step {step} params"] = net.params.data.copy()
        record[f"step {step} velocity"] = optimizer.velocity.copy()
        if dtype == np.float64:  # float32 argmax may flip on a near-tie; float64 must not
            record[f"step {step} correct"] = net.count_correct(n).copy()
    return record


def simple_cnn_batches(dtype_name, layout):
    """[images, labels, images, labels]: a full batch, then a smaller last batch."""
    rng = np.random.default_rng(zlib.crc32(f"simple_cnn/{dtype_name}/{layout}".encode()))
    batches = []
    for step in range(CNN_STEPS):
        n = CNN_BATCH if step == 0 else CNN_BATCH - 1
        batches += [
            rng.standard_normal((n, 1, 28, 28)),
            rng.integers(0, 10, size=n).astype(np.int32),
        ]
    return batches


@pytest.mark.parametrize("layout", LAYOUT_NAMES)
@pytest.mark.parametrize("dtype_name", list(DTYPES))
def test_simple_cnn_step_agrees(dtype_name, layout):
    dtype = DTYPES[dtype_name]

    def run(backend, *host_batches):
        return run_simple_cnn(backend, dtype, *host_batches)

    batches = simple_cnn_batches(dtype_name, layout)
    assert_backends_agree(run, *batches, layout=layout, on_device=False)
