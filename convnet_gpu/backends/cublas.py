"""cuBLAS through ctypes, on a handle the CUDA backend owns.

CuPy refuses its own cuBLAS calls while a stream is being captured into a CUDA graph. Called
directly, on a handle of our own that follows the caller's stream (the capturing one during a
capture) and whose workspace is allocated once, cuBLAS captures fine. So the CUDA backend's
matmul comes here.

The library is the one CuPy's wheel loads (found by cuda.pathfinder, which CuPy uses too, or by
its soname); loading it and binding the symbols needs no GPU, so CPU machines test the binding.
Row-major (NumPy) matrices are handed to column-major cuBLAS by the usual identity: C = A @ B is
C^T = B^T @ A^T, and a row-major matrix is its transpose in column-major order (gemm_plan).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..settings import PRECISIONS

SONAMES = ("libcublas.so.13", "libcublas.so.12", "libcublas.so.11", "libcublas.so")
OP_N, OP_T = 0, 1  # cublasOperation_t
GEMM_DEFAULT = -1  # cublasGemmAlgo_t: let cuBLAS choose
CUDA_R_32F, CUDA_R_64F = 0, 1  # cudaDataType_t
COMPUTE_32F, COMPUTE_64F, COMPUTE_32F_FAST_TF32 = 68, 70, 77  # cublasComputeType_t


class CublasError(RuntimeError):
    """A cuBLAS call failed, or the library could not be loaded."""


def _library_paths():
    try:
        from cuda.pathfinder import load_nvidia_dynamic_lib

        yield load_nvidia_dynamic_lib("cublas").abs_path
    except Exception:  # no pathfinder, or it found nothing: try the sonames
        pass
    yield from SONAMES


@lru_cache(maxsize=1)
def load_library() -> ctypes.CDLL:
    """libcublas with the symbols this module calls bound to their C signatures."""
    problems = []
    for path in _library_paths():
        try:
            library = ctypes.CDLL(path)
            break
        except OSError as exc:
            problems.append(str(exc))
    else:
        raise CublasError(f"cuBLAS could not be loaded ({'; '.join(problems)})")
    _bind(library)
    return library


def _bind(library: ctypes.CDLL) -> None:
    p, i, size_t = ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t
    signatures = {
        "cublasCreate_v2": [ctypes.POINTER(p)],
        "cublasDestroy_v2": [p],
        "cublasSetStream_v2": [p, p],
        "cublasSetWorkspace_v2": [p, p, size_t],
        "cublasGetProperty": [i, ctypes.POINTER(i)],
        # handle, transa, transb, m, n, k, alpha, A, Atype, lda, B, Btype, ldb, beta, C, Ctype,
        # ldc, computeType, algo
        "cublasGemmEx": [p, i, i, i, i, i, p, p, i, i, p, i, i, p, p, i, i, i, i],
    }
    for name, argtypes in signatures.items():
        function = getattr(library, name)  # AttributeError names a missing symbol
        function.argtypes, function.restype = argtypes, i


def version() -> tuple[int, int, int]:
    """(major, minor, patch) of the loaded cuBLAS; needs no GPU."""
    library, value = load_library(), ctypes.c_int()
    parts = []
    for prop in range(3):  # MAJOR_VERSION, MINOR_VERSION, PATCH_LEVEL
        _check(library.cublasGetProperty(prop, ctypes.byref(value)), "cublasGetProperty")
        parts.append(value.value)
    return tuple(parts)


def _check(status: int, call: str) -> None:
    if status != 0:
        raise CublasError(f"{call} failed with cublasStatus {status}")


# ---- row-major matrices as cuBLAS sees them ---------------------------------------------------
@dataclass(frozen=True)
class GemmPlan:
    """The arguments of one column-major GEMM that computes row-major out = a @ b."""

    trans_first: int  # op on b, the first column-major operand
    trans_second: int  # op on a
    m: int  # columns of out (rows of out^T)
    n: int  # rows of out
    k: int
    ld_first: int
    ld_second: int
    ld_out: int


def _layout(array, name: str) -> tuple[bool, int]:
    """(row_major, leading dimension in elements) of a 2-D array; refuses other strides."""
    rows, cols = array.shape
    row_stride, col_stride = (s // array.itemsize for s in array.strides)
    if col_stride == 1 or cols == 1:  # rows are contiguous: row-major, ld = row stride
        return True, max(row_stride, cols, 1) if rows > 1 else max(cols, 1)
    if row_stride == 1 or rows == 1:  # columns are contiguous: a transposed row-major matrix
        return False, max(col_stride, rows, 1) if cols > 1 else max(rows, 1)
    raise ValueError(f"matmul: {name} has strides {array.strides}; neither its rows nor its "
                     f"columns are contiguous")  # fmt: skip


def gemm_plan(a, b, out) -> GemmPlan:
    """How cuBLAS computes out (M, N) = a (M, K) @ b (K, N) for row-major or transposed views.

    Column-major cuBLAS sees a row-major X as X^T, so it computes out^T = b^T @ a^T: b comes
    first. A row-major operand is passed as is (op N); a transposed view (contiguous columns)
    is the column-major matrix itself and needs op T.
    """
    (m_rows, k), (k2, n_cols) = a.shape, b.shape
    if k != k2 or tuple(out.shape) != (m_rows, n_cols):
        raise ValueError(f"matmul: shapes {a.shape} @ {b.shape} -> {out.shape} do not fit")
    out_row_major, ld_out = _layout(out, "out")
    if not out_row_major:
        raise ValueError("matmul: out must have contiguous rows (C order)")
    a_row_major, ld_a = _layout(a, "a")
    b_row_major, ld_b = _layout(b, "b")
    return GemmPlan(
        trans_first=OP_N if b_row_major else OP_T,
        trans_second=OP_N if a_row_major else OP_T,
        m=n_cols, n=m_rows, k=k, ld_first=ld_b, ld_second=ld_a, ld_out=ld_out,
    )  # fmt: skip


class CublasHandle:
    """A cuBLAS handle with one preallocated workspace (kept alive); each product runs on the
    stream it is given."""

    def __init__(self, workspace, precision: str = "fp32"):
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; use one of {PRECISIONS}")
        self.library = load_library()
        self.handle = ctypes.c_void_p()
        _check(self.library.cublasCreate_v2(ctypes.byref(self.handle)), "cublasCreate_v2")
        self.stream_ptr = None  # the stream the handle was last set to
        self.workspace = workspace  # a device array; cuBLAS must never allocate during capture
        _check(
            self.library.cublasSetWorkspace_v2(self.handle, workspace.data.ptr, workspace.nbytes),
            "cublasSetWorkspace_v2",
        )
        self.precision = precision
        self._scalars = {
            np.dtype(np.float32): (ctypes.c_float(1.0), ctypes.c_float(0.0)),
            np.dtype(np.float64): (ctypes.c_double(1.0), ctypes.c_double(0.0)),
        }

    def matmul(self, a, b, out, stream_ptr: int) -> None:
        """out = a @ b on stream `stream_ptr` (2-D device arrays of one float dtype)."""
        plan = gemm_plan(a, b, out)
        if stream_ptr != self.stream_ptr:
            _check(self.library.cublasSetStream_v2(self.handle, stream_ptr), "cublasSetStream_v2")
            self.stream_ptr = stream_ptr
        dtype = out.dtype
        data_type = CUDA_R_32F if dtype == np.float32 else CUDA_R_64F
        if dtype == np.float64:
            compute = COMPUTE_64F
        else:
            compute = COMPUTE_32F_FAST_TF32 if self.precision == "tf32" else COMPUTE_32F
        one, zero = self._scalars[np.dtype(dtype)]
        status = self.library.cublasGemmEx(
            self.handle, plan.trans_first, plan.trans_second, plan.m, plan.n, plan.k,
            ctypes.byref(one), b.data.ptr, data_type, plan.ld_first,
            a.data.ptr, data_type, plan.ld_second,
            ctypes.byref(zero), out.data.ptr, data_type, plan.ld_out,
            compute, GEMM_DEFAULT,
        )  # fmt: skip
        _check(status, "cublasGemmEx")

    def close(self) -> None:
        if self.handle:
            self.library.cublasDestroy_v2(self.handle)
            self.handle = ctypes.c_void_p()
