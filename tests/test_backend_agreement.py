"""NumPy vs CuPy: every window kernel gives the same answer on the same fresh random inputs.

One test body, parametrized over the kernel name, dtype, geometry and input layout (contiguous,
a transposed view, a strided slice). Outputs start as garbage, so the kernels must overwrite them.
The NumPy backend is the oracle.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

pytestmark = pytest.mark.gpu

cupy = pytest.importorskip(
    "cupy", reason="CuPy is not installed: the CUDA backend cannot be tested"
)
if not cupy.cuda.is_available():
    pytest.skip(
        "no usable NVIDIA GPU (cupy.cuda.is_available() is False): the NumPy-vs-CuPy "
        "agreement tests need one",
        allow_module_level=True,
    )

from convnet_gpu.backends.base import WindowGeometry  # noqa: E402
from convnet_gpu.backends.cupy_backend import CupyBackend  # noqa: E402
from convnet_gpu.backends.numpy_backend import NumpyBackend  # noqa: E402

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
RTOL = {np.float32: 1e-5, np.float64: 1e-12}
ATOL = {np.float32: 1e-6, np.float64: 1e-13}
BATCH = 3


# ---- input layouts: the same logical array as a contiguous, transposed or sliced view ------------
def _contiguous(make, shape):
    return make(shape), lambda base: base


def _transposed(make, shape):
    """Stored reversed-axis, viewed back as `shape` (Fortran-ordered, non-contiguous)."""
    base = make(tuple(reversed(shape)))
    return base, lambda b: b.transpose(tuple(reversed(range(len(shape)))))


def _sliced(make, shape):
    """Every other element of the last axis of a buffer twice as wide."""
    base = make(shape[:-1] + (2 * shape[-1],))
    return base, lambda b: b[..., 1::2]


LAYOUTS = {"contiguous": _contiguous, "transposed": _transposed, "sliced": _sliced}


# ---- the kernels: inputs, outputs and the call, per kernel name ---------------------------------
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


def _maker(rng, kind: str, dtype, window_size: int):
    def make(shape):
        if kind == "float":
            return rng.standard_normal(shape).astype(dtype)
        if kind == "distinct":  # all values different: the argmax is unambiguous
            return (
                rng.permutation(int(np.prod(shape))).reshape(shape) - 0.5 * np.prod(shape)
            ).astype(dtype) / 8
        if kind == "ties":  # many exact ties: the first maximum must win on both backends
            return rng.integers(-2, 3, shape).astype(dtype)
        if kind == "argmax":  # any offset, including ones that point into the padding
            return rng.integers(0, window_size, shape).astype(np.int32)
        raise ValueError(kind)

    return make


@pytest.fixture(scope="module")
def backends():
    return NumpyBackend(), CupyBackend(0)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("geometry", sorted(GEOMETRIES))
@pytest.mark.parametrize("dtype_name", sorted(DTYPES))
@pytest.mark.parametrize("kernel", KERNELS)
def test_numpy_and_cupy_agree(backends, kernel, dtype_name, geometry, layout):
    cpu, gpu = backends
    dtype = DTYPES[dtype_name]
    g = GEOMETRIES[geometry]
    case = _cases(g, BATCH)[kernel]
    rng = np.random.default_rng(zlib.crc32(f"{kernel}/{dtype_name}/{geometry}/{layout}".encode()))

    cpu_in, gpu_in = {}, {}
    for name, (shape, kind) in case.inputs.items():
        base, view = LAYOUTS[layout](_maker(rng, kind, dtype, g.kernel_h * g.kernel_w), shape)
        cpu_in[name] = view(base)
        gpu_in[name] = view(cupy.asarray(base))
        assert cpu_in[name].shape == shape and gpu_in[name].shape == shape
        if layout != "contiguous" and min(shape) > 1:
            assert not gpu_in[name].flags.c_contiguous  # the kernel really sees a strided view

    cpu_out, gpu_out = {}, {}
    for name, (shape, kind) in case.outputs.items():
        out_dtype = np.int32 if kind == "int32" else dtype
        cpu_out[name] = np.full(shape, 7, dtype=out_dtype)  # garbage the kernels must overwrite
        gpu_out[name] = cupy.full(shape, -3, dtype=out_dtype)  # different garbage on purpose

    y_shape = (BATCH, g.channels, g.out_h, g.out_w)
    case.call(cpu, cpu.pool_workspace(y_shape, dtype), **cpu_in, **cpu_out)
    case.call(gpu, gpu.pool_workspace(y_shape, dtype), **gpu_in, **gpu_out)
    gpu.synchronize()

    for name in case.outputs:
        expected, actual = cpu_out[name], gpu.to_host(gpu_out[name])
        assert actual.dtype == expected.dtype and actual.shape == expected.shape
        if expected.dtype == np.int32:
            np.testing.assert_array_equal(actual, expected, err_msg=f"{kernel}: {name}")
        else:
            np.testing.assert_allclose(
                actual, expected, rtol=RTOL[dtype], atol=ATOL[dtype], err_msg=f"{kernel}: {name}"
            )
    # inputs are read-only: views were copied, never written through
    for name in case.inputs:
        np.testing.assert_array_equal(gpu.to_host(gpu_in[name]), cpu_in[name])


def test_non_contiguous_output_is_refused(backends):
    _, gpu = backends
    g = GEOMETRIES["conv3x3_pad1_stride2"]
    x = cupy.zeros((BATCH, g.channels, g.height, g.width), dtype=np.float32)
    col = cupy.zeros((g.col_cols(BATCH), g.col_rows), dtype=np.float32).T
    with pytest.raises(ValueError, match="C-contiguous"):
        gpu.im2col(x, col, g)


def test_host_array_is_refused(backends):
    _, gpu = backends
    g = GEOMETRIES["pool2x2_stride2"]
    x = np.zeros((BATCH, g.channels, g.height, g.width), dtype=np.float32)
    y = cupy.zeros((BATCH, g.channels, g.out_h, g.out_w), dtype=np.float32)
    with pytest.raises(TypeError, match="cupy.ndarray"):
        gpu.avgpool_forward(x, y, g)
