"""NumPy vs CuPy on whole layers and nets: same seed and inputs -> same outputs and gradients.

Covers every gradcheck standard case and a full simple_cnn training step, in float64 and float32,
with the host input given contiguous, as a transposed-then-transposed-back (Fortran-ordered) view,
or as a strided slice. Eval-mode cases run the gradcheck's warm-up training forwards first and
compare the layers' buffers (BatchNorm running statistics) too; Dropout draws the same
counter-based mask on both backends (same seed, same step). The NumPy backend is the oracle.
Skipped (with the reason) without a GPU.
(The raw window kernels are compared in test_backend_agreement.py.)
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from convnet_gpu import SGD, Net, SoftmaxCrossEntropy
from convnet_gpu.gradcheck import EVAL_WARMUP_STEPS, case_options, standard_cases
from convnet_gpu.models import simple_cnn

pytestmark = pytest.mark.gpu

CASES = dict(standard_cases())
DTYPES = {"float64": np.float64, "float32": np.float32}
TOLERANCE = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=1e-4, atol=1e-5)}


# ---- host inputs in three layouts (same values, different memory order) ------------------------
def _contiguous(values):
    return np.ascontiguousarray(values)


def _transposed(values):
    """Stored with the axes reversed, viewed back: Fortran-ordered, not C-contiguous."""
    return np.ascontiguousarray(values.T).T


def _sliced(values):
    """Every other element of the last axis of a buffer twice as wide."""
    wide = np.full(values.shape[:-1] + (2 * values.shape[-1],), np.nan, dtype=values.dtype)
    wide[..., ::2] = values
    return wide[..., ::2]


LAYOUTS = {"contiguous": _contiguous, "transposed": _transposed, "sliced": _sliced}


def host_input(values, layout):
    view = LAYOUTS[layout](values)
    np.testing.assert_array_equal(view, values)
    if layout != "contiguous" and values.ndim > 1 and min(values.shape) > 1:
        assert not view.flags.c_contiguous
    return view


# ---- one run of a net on one backend, everything brought back to the host ----------------------
def run_case(backend, name, dtype, x, labels, projection, batch):
    """Forward + backward of standard case `name`; returns host arrays keyed by what they are."""
    layers, input_shape, loss = CASES[name]()
    net = Net(layers, loss, backend, dtype=dtype, seed=0)
    net.setup(batch, input_shape, input_grad=True)
    n = net.load_batch(x, labels if loss is not None else None)
    train = case_options(name)["train"]
    for _ in range(0 if train else EVAL_WARMUP_STEPS):
        net.forward(n, train=True)
    output = net.forward(n, train=train)
    result = {"output": backend.to_host(output).copy()}
    if loss is None:
        backend.copy_from_host(projection, net.blobs[-1].grad[:n])
    else:
        result["loss"] = np.asarray(float(net.loss.loss))
    net.backward(n)
    backend.synchronize()
    result["d_input"] = backend.to_host(net.blobs[0].grad[:n]).copy()
    result["d_params"] = backend.to_host(net.params.grad).copy()
    result["params"] = backend.to_host(net.params.data).copy()
    for i, layer in enumerate(net.layers):
        for buffer_name, buffer in layer.buffers.items():
            result[f"layer {i} {buffer_name}"] = backend.to_host(buffer).copy()
    return result


def case_inputs(name, dtype_name, layout, batch):
    rng = np.random.default_rng(zlib.crc32(f"{name}/{dtype_name}/{layout}".encode()))
    layers, input_shape, loss = CASES[name]()
    probe = Net(layers, loss, None, dtype=np.float64).setup(1, input_shape)
    classes_or_shape = probe.output_shape
    x = host_input(rng.standard_normal((batch,) + tuple(input_shape)), layout)
    labels = rng.integers(0, classes_or_shape[0], size=batch).astype(np.int32)
    projection = rng.standard_normal((batch,) + tuple(classes_or_shape))
    return x, labels, projection


def assert_results_agree(expected, actual, dtype, context):
    assert expected.keys() == actual.keys()
    for key in expected:
        assert actual[key].shape == expected[key].shape, (context, key)
        np.testing.assert_allclose(
            actual[key], expected[key], **TOLERANCE[dtype], err_msg=f"{context}: {key}"
        )


def compare_case(cpu, gpu, name, dtype_name, layout):
    dtype = DTYPES[dtype_name]
    batch = case_options(name)["batch"]
    x, labels, projection = case_inputs(name, dtype_name, layout, batch)
    expected = run_case(cpu, name, dtype, x, labels, projection, batch)
    actual = run_case(gpu, name, dtype, x, labels, projection, batch)
    assert_results_agree(expected, actual, dtype, f"{name} {dtype_name} {layout}")
    assert np.all(np.isfinite(expected["d_input"]))


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("name", list(CASES))
def test_standard_case_agrees(cpu_backend, cuda_backend, name, dtype_name, layout):
    compare_case(cpu_backend, cuda_backend, name, dtype_name, layout)


# ---- a whole simple_cnn training step (two steps, so momentum and weight decay both act) --------
CNN_BATCH = 4
CNN_STEPS = 2


def run_simple_cnn(backend, dtype, batches):
    net = Net(simple_cnn(10), SoftmaxCrossEntropy(), backend, dtype=dtype, seed=0)
    net.setup(CNN_BATCH, (1, 28, 28))
    optimizer = SGD(lr=0.01, momentum=0.9, weight_decay=5e-4).setup(net)
    steps = []
    for images, labels in batches:
        n = net.load_batch(images, labels)
        logits = net.forward(n, train=True)
        record = {
            "logits": backend.to_host(logits).copy(),
            "loss": np.asarray(float(net.loss.loss)),
        }
        net.backward(n)
        record["d_params"] = backend.to_host(net.params.grad).copy()
        optimizer.step()
        record["params"] = backend.to_host(net.params.data).copy()
        record["velocity"] = backend.to_host(optimizer.velocity).copy()
        record["correct"] = np.asarray(int(net.count_correct(n)))
        backend.synchronize()
        steps.append(record)
    return steps


def simple_cnn_batches(dtype_name, layout):
    rng = np.random.default_rng(zlib.crc32(f"simple_cnn/{dtype_name}/{layout}".encode()))
    batches = []
    for step in range(CNN_STEPS):
        n = CNN_BATCH if step == 0 else CNN_BATCH - 1  # the second is a smaller last batch
        images = host_input(rng.standard_normal((n, 1, 28, 28)), layout)
        batches.append((images, rng.integers(0, 10, size=n).astype(np.int32)))
    return batches


def compare_simple_cnn(cpu, gpu, dtype_name, layout):
    dtype = DTYPES[dtype_name]
    batches = simple_cnn_batches(dtype_name, layout)
    expected, actual = run_simple_cnn(cpu, dtype, batches), run_simple_cnn(gpu, dtype, batches)
    assert len(expected) == len(actual) == CNN_STEPS
    for step, (want, got) in enumerate(zip(expected, actual)):
        correct_want, correct_got = int(want.pop("correct")), int(got.pop("correct"))
        assert_results_agree(want, got, dtype, f"simple_cnn {dtype_name} {layout} step {step}")
        if dtype == np.float64:  # float32 argmax may flip on a near-tie; float64 must not
            assert correct_got == correct_want


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("dtype_name", list(DTYPES))
def test_simple_cnn_step_agrees(cpu_backend, cuda_backend, dtype_name, layout):
    compare_simple_cnn(cpu_backend, cuda_backend, dtype_name, layout)
