"""The backends' kernels: NumPy and CuPy agree, and both refuse a wrong buffer with one message.

Agreement: one test body, parametrized over the window kernel, dtype, geometry and input layout
(contiguous, a transposed view, a strided slice); outputs start as garbage, so the kernels must
overwrite them; the NumPy backend is the oracle (skipped without a GPU). Refusals: every kernel
method, given a buffer of a wrong shape or dtype, raises the same one-line message on both
backends. The CUDA availability check: CupyBackend() and get_backend() refuse with one line.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from helpers import assert_backends_agree, output_buffer

from convnet_gpu.backends import (
    DeviceUnavailable,
    WindowGeometry,
    cuda_problem,
    get_backend,
)

GEOMETRIES = {
    "conv5x5_pad2": WindowGeometry(3, 8, 8, 5, 5, stride=1, pad=2),
    "conv3x3_pad1_stride2": WindowGeometry(2, 9, 7, 3, 3, stride=2, pad=1),
    "conv1x1": WindowGeometry(4, 6, 5, 1, 1, stride=1, pad=0),
    "pool2x2_stride2": WindowGeometry(3, 8, 6, 2, 2, stride=2, pad=0),
    "pool3x3_stride2_pad1_7x9": WindowGeometry(2, 7, 9, 3, 3, stride=2, pad=1),
    "window2x3_stride3_pad2": WindowGeometry(2, 5, 4, 2, 3, stride=3, pad=2),
    "window4x2_all_padding_columns": WindowGeometry(1, 7, 9, 4, 2, stride=3, pad=3),
}
DTYPES = {"float32": np.float32, "float64": np.float64}
LAYOUT_NAMES = ["contiguous", "sliced", "transposed"]
BATCH = 3


# ---- the window kernels: inputs, outputs and the call, per kernel name -------------------------
@dataclass
class Case:
    inputs: dict[str, tuple]  # name -> (shape, "float" | "distinct" | "ties" | "argmax")
    outputs: dict[str, tuple]  # name -> (shape, "float" | "int32")
    call: Callable  # call(backend, workspace, **arrays)


def _cases(g: WindowGeometry, n: int) -> dict[str, Case]:
    x_shape = (n, g.channels, g.height, g.width)
    y_shape = (n, g.channels, g.out_h, g.out_w)
    col_shape = (g.col_rows, g.col_cols(n))
    return {
        "im2col": Case(
            {"x": (x_shape, "float")},
            {"col": (col_shape, "float")},
            lambda be, ws, x, col: be.im2col(x, col, g),
        ),
        "col2im": Case(
            {"col": (col_shape, "float")},
            {"dx": (x_shape, "float")},
            lambda be, ws, col, dx: be.col2im(col, dx, g),
        ),
        "maxpool_forward": Case(
            {"x": (x_shape, "distinct")},
            {"y": (y_shape, "float"), "argmax": (y_shape, "int32")},
            lambda be, ws, x, y, argmax: be.maxpool_forward(x, y, argmax, ws, g),
        ),
        "maxpool_forward_ties": Case(
            {"x": (x_shape, "ties")},
            {"y": (y_shape, "float"), "argmax": (y_shape, "int32")},
            lambda be, ws, x, y, argmax: be.maxpool_forward(x, y, argmax, ws, g),
        ),
        "maxpool_backward": Case(
            {"dy": (y_shape, "float"), "argmax": (y_shape, "argmax")},
            {"dx": (x_shape, "float")},
            lambda be, ws, dy, argmax, dx: be.maxpool_backward(dy, argmax, dx, ws, g),
        ),
        "avgpool_forward": Case(
            {"x": (x_shape, "float")},
            {"y": (y_shape, "float")},
            lambda be, ws, x, y: be.avgpool_forward(x, y, g),
        ),
        "avgpool_backward": Case(
            {"dy": (y_shape, "float")},
            {"dx": (x_shape, "float")},
            lambda be, ws, dy, dx: be.avgpool_backward(dy, dx, g),
        ),
    }


KERNELS = sorted(_cases(next(iter(GEOMETRIES.values())), BATCH))


def _random_input(rng, shape, kind: str, dtype, window_size: int) -> np.ndarray:
    if kind == "float":
        return rng.standard_normal(shape).astype(dtype)
    if kind == "distinct":  # all values different: the argmax is unambiguous
        size = int(np.prod(shape))
        return (rng.permutation(size).reshape(shape) - 0.5 * size).astype(dtype) / 8
    if kind == "ties":  # many exact ties: the first maximum must win on both backends
        return rng.integers(-2, 3, shape).astype(dtype)
    if kind == "argmax":  # any offset, including ones that point into the padding
        return rng.integers(0, window_size, shape).astype(np.int32)
    raise ValueError(kind)


@pytest.mark.gpu
@pytest.mark.parametrize("layout", LAYOUT_NAMES)
@pytest.mark.parametrize("geometry", sorted(GEOMETRIES))
@pytest.mark.parametrize("dtype_name", sorted(DTYPES))
@pytest.mark.parametrize("kernel", KERNELS)
def test_numpy_and_cupy_agree(kernel, dtype_name, geometry, layout):
    dtype, g = DTYPES[dtype_name], GEOMETRIES[geometry]
    case = _cases(g, BATCH)[kernel]
    rng = np.random.default_rng(zlib.crc32(f"{kernel}/{dtype_name}/{geometry}/{layout}".encode()))
    window_size = g.kernel_h * g.kernel_w
    inputs = [_random_input(rng, *spec, dtype, window_size) for spec in case.inputs.values()]

    def run(backend, *arrays):
        outputs = {
            name: output_buffer(backend, shape, np.int32 if kind == "int32" else dtype)
            for name, (shape, kind) in case.outputs.items()
        }
        workspace = backend.pool_workspace((BATCH, g.channels, g.out_h, g.out_w), dtype)
        case.call(backend, workspace, **dict(zip(case.inputs, arrays)), **outputs)
        return outputs

    assert_backends_agree(run, *inputs, layout=layout, tolerance="kernel")


# ---- what only the CuPy backend refuses: host arrays, outputs it cannot write in place ---------
@pytest.mark.gpu
def test_cupy_refuses_a_non_contiguous_output(cuda_backend):
    g = GEOMETRIES["conv3x3_pad1_stride2"]
    x = cuda_backend.zeros((BATCH, g.channels, g.height, g.width), np.float32)
    col = cuda_backend.zeros((g.col_cols(BATCH), g.col_rows), np.float32).T
    with pytest.raises(ValueError, match="im2col: col must be C-contiguous"):
        cuda_backend.im2col(x, col, g)


@pytest.mark.gpu
def test_cupy_refuses_a_host_array(cuda_backend):
    g = GEOMETRIES["pool2x2_stride2"]
    x = np.zeros((BATCH, g.channels, g.height, g.width), dtype=np.float32)
    y = cuda_backend.zeros((BATCH, g.channels, g.out_h, g.out_w), np.float32)
    with pytest.raises(TypeError, match="avgpool_forward: x must be a cupy.ndarray"):
        cuda_backend.avgpool_forward(x, y, g)


# ---- every kernel refuses a wrong buffer with one message on every backend -----------------------
# Geometry and batch of the refusal cases: x, dx, out (2, 2, 6, 5); y, dy, argmax (2, 2, 3, 3);
# col (18, 18): 18 rows = 2 channels * 3*3 offsets, 18 columns = 2 images * 3*3 outputs.
REFUSAL_GEOMETRY = WindowGeometry(2, 6, 5, 3, 3, stride=2, pad=1)
IMAGE, POOLED, COL = (2, 2, 6, 5), (2, 2, 3, 3), (18, 18)
RIGHT_BUFFERS = {  # name -> (shape, dtype): float32 throughout, argmax int32
    "x": (IMAGE, np.float32),
    "dx": (IMAGE, np.float32),
    "out": (IMAGE, np.float32),
    "y": (POOLED, np.float32),
    "dy": (POOLED, np.float32),
    "argmax": (POOLED, np.int32),
    "col": (COL, np.float32),
}


def _pool_workspace(be):
    return be.pool_workspace(POOLED, np.float32)


G = REFUSAL_GEOMETRY
KERNEL_CALLS = {  # kernel -> (its buffers, in argument order; call(backend, buffers))
    "im2col": (("x", "col"), lambda be, b: be.im2col(b["x"], b["col"], G)),
    "col2im": (("col", "dx"), lambda be, b: be.col2im(b["col"], b["dx"], G)),
    "maxpool_forward": (
        ("x", "y", "argmax"),
        lambda be, b: be.maxpool_forward(b["x"], b["y"], b["argmax"], _pool_workspace(be), G),
    ),
    "maxpool_backward": (
        ("dy", "argmax", "dx"),
        lambda be, b: be.maxpool_backward(b["dy"], b["argmax"], b["dx"], _pool_workspace(be), G),
    ),
    "avgpool_forward": (("x", "y"), lambda be, b: be.avgpool_forward(b["x"], b["y"], G)),
    "avgpool_backward": (("dy", "dx"), lambda be, b: be.avgpool_backward(b["dy"], b["dx"], G)),
    "uniform": (("out",), lambda be, b: be.uniform(b["out"], 0, 0)),
    "jitter": (("x", "out"), lambda be, b: be.jitter(b["x"], b["out"], 1, True, 0, 0)),
}

# (kernel, buffer, what is wrong) -> (the wrong buffer's shape, its dtype, the one-line message).
F32, F64, I32 = np.float32, np.float64, np.int32
ANY_FLOAT = "float32 or float64"


def _wrong_shape(kernel: str, name: str, shape: tuple, expected: tuple, dtype=F32):
    message = f"{kernel}: {name} has shape {shape}, expected {expected}"
    return (kernel, name, "shape"), (shape, dtype, message)


def _wrong_dtype(kernel: str, name: str, dtype, expected: str = "float32"):
    message = f"{kernel}: {name} has dtype {np.dtype(dtype)}, expected {expected}"
    return (kernel, name, "dtype"), (RIGHT_BUFFERS[name][0], dtype, message)


# The first float buffer of a kernel sets the dtype (and n) the others must have, so its wrong
# dtype is int32 (expected: any float); the others get float64 where float32 is expected. A wrong
# shape grows the last axis, which leaves n alone.
WIDER_IMAGE, WIDER_POOLED, WIDER_COL = (2, 2, 6, 6), (2, 2, 3, 4), (18, 19)
REFUSALS = dict(
    [
        _wrong_shape("im2col", "x", WIDER_IMAGE, IMAGE),
        _wrong_dtype("im2col", "x", I32, ANY_FLOAT),
        _wrong_shape("im2col", "col", WIDER_COL, COL),
        _wrong_dtype("im2col", "col", F64),
        _wrong_shape("col2im", "col", WIDER_COL, COL),
        _wrong_dtype("col2im", "col", F64),
        _wrong_shape("col2im", "dx", WIDER_IMAGE, IMAGE),
        _wrong_dtype("col2im", "dx", I32, ANY_FLOAT),
        _wrong_shape("maxpool_forward", "x", WIDER_IMAGE, IMAGE),
        _wrong_dtype("maxpool_forward", "x", I32, ANY_FLOAT),
        _wrong_shape("maxpool_forward", "y", WIDER_POOLED, POOLED),
        _wrong_dtype("maxpool_forward", "y", F64),
        _wrong_shape("maxpool_forward", "argmax", WIDER_POOLED, POOLED, I32),
        _wrong_dtype("maxpool_forward", "argmax", F32, "int32"),
        _wrong_shape("maxpool_backward", "dy", WIDER_POOLED, POOLED),
        _wrong_dtype("maxpool_backward", "dy", I32, ANY_FLOAT),
        _wrong_shape("maxpool_backward", "argmax", WIDER_POOLED, POOLED, I32),
        _wrong_dtype("maxpool_backward", "argmax", F32, "int32"),
        _wrong_shape("maxpool_backward", "dx", WIDER_IMAGE, IMAGE),
        _wrong_dtype("maxpool_backward", "dx", F64),
        _wrong_shape("avgpool_forward", "x", WIDER_IMAGE, IMAGE),
        _wrong_dtype("avgpool_forward", "x", I32, ANY_FLOAT),
        _wrong_shape("avgpool_forward", "y", WIDER_POOLED, POOLED),
        _wrong_dtype("avgpool_forward", "y", F64),
        _wrong_shape("avgpool_backward", "dy", WIDER_POOLED, POOLED),
        _wrong_dtype("avgpool_backward", "dy", I32, ANY_FLOAT),
        _wrong_shape("avgpool_backward", "dx", WIDER_IMAGE, IMAGE),
        _wrong_dtype("avgpool_backward", "dx", F64),
        # uniform() fills an array of any shape: only its dtype can be wrong.
        _wrong_dtype("uniform", "out", I32, ANY_FLOAT),
        _wrong_dtype("jitter", "x", I32, ANY_FLOAT),
        _wrong_shape("jitter", "out", WIDER_IMAGE, IMAGE),
        _wrong_dtype("jitter", "out", F64),
    ]
)
REFUSALS["jitter", "x", "shape"] = (
    IMAGE[1:],
    F32,
    "jitter: x has shape (2, 6, 5), expected an (n, C, H, W) batch",  # any 4-D x will do
)


def _buffers(backend, kernel: str, wrong: tuple | None = None) -> dict:
    """The kernel's buffers (zeros), right but for `wrong` = (name, shape, dtype)."""
    names, _ = KERNEL_CALLS[kernel]
    specs = {name: RIGHT_BUFFERS[name] for name in names}
    if wrong is not None:
        specs[wrong[0]] = wrong[1:]
    return {name: backend.zeros(shape, dtype) for name, (shape, dtype) in specs.items()}


def test_every_buffer_of_every_kernel_has_its_refusal_cases():
    for kernel, (names, _) in KERNEL_CALLS.items():
        for name in names:
            assert (kernel, name, "dtype") in REFUSALS, (kernel, name)
            assert (kernel, name, "shape") in REFUSALS or kernel == "uniform", (kernel, name)
    assert {(kernel, name) for kernel, name, _ in REFUSALS} <= {
        (kernel, name) for kernel, (names, _) in KERNEL_CALLS.items() for name in names
    }


@pytest.mark.parametrize("kernel", list(KERNEL_CALLS))
def test_kernel_accepts_the_right_buffers(backend, kernel):
    _, call = KERNEL_CALLS[kernel]
    call(backend, _buffers(backend, kernel))
    backend.synchronize()


@pytest.mark.parametrize("case", list(REFUSALS), ids="-".join)
def test_kernel_refuses_a_wrong_buffer_with_one_message(backend, case):
    kernel, name, wrong = case
    shape, dtype, message = REFUSALS[case]
    _, call = KERNEL_CALLS[kernel]
    error_type = ValueError if wrong == "shape" else TypeError
    with pytest.raises(error_type) as refused:
        call(backend, _buffers(backend, kernel, (name, shape, dtype)))
    assert str(refused.value) == message  # the same line on NumPy and CuPy


def test_numpy_backend_no_longer_broadcasts_into_a_wrong_output():
    """Before the shared checks, NumPy filled both images of y from a one-image x, silently."""
    cpu = get_backend("cpu")
    x, y = cpu.zeros((1,) + IMAGE[1:], np.float32), cpu.zeros(POOLED, np.float32)
    with pytest.raises(ValueError, match=r"y has shape \(2, 2, 3, 3\), expected \(1, 2, 3, 3\)"):
        cpu.avgpool_forward(x, y, REFUSAL_GEOMETRY)


# ---- the one CUDA availability check ------------------------------------------------------------
def test_cupy_backend_refuses_an_unusable_device_as_get_backend_does():
    pytest.importorskip("cupy", reason="CuPy is not installed: CupyBackend cannot be imported")
    from convnet_gpu.backends.cupy_backend import CupyBackend

    index = 0 if cuda_problem(0) is not None else 1000  # no GPU here, or a GPU that is not there
    expected = f"`device` cuda:{index}: {cuda_problem(index)}"
    with pytest.raises(DeviceUnavailable) as direct:
        CupyBackend(index)
    with pytest.raises(DeviceUnavailable) as chosen:
        get_backend(f"cuda:{index}")
    assert str(direct.value) == str(chosen.value) == expected
    assert "\n" not in expected
