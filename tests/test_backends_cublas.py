"""backends/cublas.py: the ctypes binding loads and binds without a GPU; gemm_plan turns
row-major and transposed views into the right column-major cuBLAS call (checked against a NumPy
model of column-major GEMM); on a GPU, matmul agrees with NumPy in fp32, float64 and tf32."""

from __future__ import annotations

import numpy as np
import pytest

from convnet_gpu.backends.cublas import OP_N, OP_T, gemm_plan

M, K, N = 5, 7, 3


def _cublas():
    try:
        from convnet_gpu.backends import cublas

        cublas.load_library()
    except Exception as exc:  # no CuPy wheel's cuBLAS here: say so
        pytest.skip(f"cuBLAS cannot be loaded here ({exc}); pip install nvidia-cublas-cu12")
    return cublas


def test_the_binding_loads_and_finds_its_symbols_without_a_gpu():
    cublas = _cublas()
    library = cublas.load_library()
    for symbol in ("cublasCreate_v2", "cublasSetStream_v2", "cublasSetWorkspace_v2",
                   "cublasGemmEx", "cublasDestroy_v2"):  # fmt: skip
        assert getattr(library, symbol).restype is not None
    major, minor, patch = cublas.version()
    assert major >= 11 and minor >= 0 and patch >= 0


# ---- gemm_plan against a model of what column-major cuBLAS does with raw memory -------------
def _column_major(memory, rows, cols, ld):
    """The rows x cols column-major matrix at the start of flat `memory`, leading dimension ld."""
    return np.array([[memory[i + j * ld] for j in range(cols)] for i in range(rows)])


def _cublas_gemm(plan, first_memory, second_memory, out_memory):
    """C (m x n, column-major) = op(first) (m x k) @ op(second) (k x n), written into out."""
    first = (_column_major(first_memory, plan.m, plan.k, plan.ld_first) if plan.trans_first == OP_N
             else _column_major(first_memory, plan.k, plan.m, plan.ld_first).T)  # fmt: skip
    second = (_column_major(second_memory, plan.k, plan.n, plan.ld_second)
              if plan.trans_second == OP_N
              else _column_major(second_memory, plan.n, plan.k, plan.ld_second).T)  # fmt: skip
    product = first @ second
    for i in range(plan.m):
        for j in range(plan.n):
            out_memory[i + j * plan.ld_out] = product[i, j]


def _operand(rng, rows, cols, layout):
    """(view, its flat memory): C order, a transposed C array, or C order with padded rows."""
    if layout == "row":
        memory = rng.standard_normal(rows * cols)
        return memory.reshape(rows, cols), memory
    if layout == "transposed":
        memory = rng.standard_normal(rows * cols)
        return memory.reshape(cols, rows).T, memory
    memory = rng.standard_normal(rows * (cols + 2))  # rows padded by 2: ld = cols + 2
    return memory.reshape(rows, cols + 2)[:, :cols], memory


@pytest.mark.parametrize("a_layout", ["row", "transposed", "padded"])
@pytest.mark.parametrize("b_layout", ["row", "transposed", "padded"])
def test_gemm_plan_computes_the_row_major_product(a_layout, b_layout):
    rng = np.random.default_rng(0)
    a, a_memory = _operand(rng, M, K, a_layout)
    b, b_memory = _operand(rng, K, N, b_layout)
    out = np.zeros((M, N))
    plan = gemm_plan(a, b, out)
    assert plan.trans_second == (OP_N if a_layout != "transposed" else OP_T)
    assert plan.trans_first == (OP_N if b_layout != "transposed" else OP_T)
    out_memory = out.reshape(-1)
    _cublas_gemm(plan, b_memory, a_memory, out_memory)
    np.testing.assert_allclose(out, a @ b, rtol=1e-12)


def test_gemm_plan_handles_vectors_and_refuses_what_cublas_cannot_read():
    rng = np.random.default_rng(1)
    row, column = rng.standard_normal((1, K)), rng.standard_normal((K, 1))
    for a, b in [(row, rng.standard_normal((K, N))), (rng.standard_normal((M, K)), column)]:
        out = np.zeros((a.shape[0], b.shape[1]))
        plan = gemm_plan(a, b, out)
        _cublas_gemm(plan, b.reshape(-1), a.reshape(-1), out.reshape(-1))
        np.testing.assert_allclose(out, a @ b, rtol=1e-12)
    strided = np.zeros((4, 6))[::2, ::2]  # neither rows nor columns contiguous
    with pytest.raises(ValueError, match="neither its rows nor its columns"):
        gemm_plan(strided, np.zeros((3, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="do not fit"):
        gemm_plan(np.zeros((2, 3)), np.zeros((4, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="contiguous rows"):
        gemm_plan(np.zeros((2, 3)), np.zeros((3, 2)), np.zeros((2, 2)).T)


# ---- on a GPU: our handle against NumPy ------------------------------------------------------
# tf32 keeps 10 mantissa bits of each operand (2**-11 relative per product): a K-term dot
# product of unit-scale numbers is off by ~sqrt(K) * 2**-11 * |terms|; 1e-2 relative to the
# largest output bounds that for K <= 64 with room, and a wrong index is off by O(1).
GPU_TOLERANCE = {"fp32": dict(rtol=1e-5, atol=1e-5), "tf32": dict(rtol=1e-2, atol=1e-2)}


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "tf32"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["row", "transposed", "padded"])
def test_cuda_matmul_agrees_with_numpy(precision, dtype, layout):
    from helpers import skip_without_cuda

    from convnet_gpu.backends import get_backend

    skip_without_cuda()
    backend = get_backend("cuda", precision=precision)
    rng = np.random.default_rng(2)
    a_host, _ = _operand(rng, 64, 48, layout)
    b_host, _ = _operand(rng, 48, 32, "row")
    a = backend.asarray(np.ascontiguousarray(a_host).astype(dtype))
    if layout == "transposed":
        a = backend.asarray(np.ascontiguousarray(a_host.T).astype(dtype)).T
    b = backend.asarray(b_host.astype(dtype))
    out = backend.xp.full((64, 32), np.nan, dtype=dtype)
    backend.matmul(a, b, out)
    expected = a_host.astype(dtype) @ b_host.astype(dtype)
    bounds = GPU_TOLERANCE["fp32" if dtype == np.float64 else precision]
    np.testing.assert_allclose(backend.to_host(out), expected, **bounds)
