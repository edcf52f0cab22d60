"""Helpers shared by several test modules (import as `from helpers import ...`).

NumPy-vs-CuPy agreement is written one way, with assert_backends_agree(run, *inputs): it runs
`run(backend, *inputs)` on both backends, the inputs in one of LAYOUTS, and compares what run
returns within TOLERANCE. Without a usable GPU it skips with cuda_skip_reason().
"""

from __future__ import annotations

import shutil
import subprocess
from functools import lru_cache

import numpy as np
import pytest

from convnet_gpu.backends import NumpyBackend, cuda_problem, get_backend


def assert_one_line_mentioning(error: pytest.ExceptionInfo, *fragments: str) -> str:
    message = str(error.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def run_host_harness(source: str, tmp_path, include_dir, ragged: bool = False):
    """Build a C++ harness around CUDA sources with the host compiler, run it, and return the
    numbers it prints (one row per line: a 2-D array, or a list of rows when `ragged`). Skips
    when there is no host C++ compiler."""
    compiler = shutil.which("g++") or shutil.which("clang++")
    if compiler is None:
        pytest.skip("no host C++ compiler (g++ or clang++) to build the CUDA code for the CPU")
    (tmp_path / "harness.cpp").write_text(source)
    binary = tmp_path / "harness"
    subprocess.run(
        [
            compiler,
            "-std=c++17",
            "-O1",
            "-ffp-contract=off",  # each product and sum rounded alone, as NVRTC's --fmad=false
            "-I",
            str(include_dir),
            "-o",
            str(binary),
            str(tmp_path / "harness.cpp"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    lines = subprocess.run(
        [str(binary)], check=True, capture_output=True, text=True, timeout=10
    ).stdout.split("\n")
    rows = [np.array([float(v) for v in line.split()]) for line in lines if line]
    return rows if ragged else np.array(rows)


# ---- NumPy vs CuPy agreement ------------------------------------------------------------------
@lru_cache(maxsize=1)
def cuda_skip_reason() -> str | None:
    """Why the CUDA backend cannot be tested here, or None when it can (computed once)."""
    problem = cuda_problem(0)
    if problem is None:
        return None
    return f"the CUDA backend cannot run here: {problem}"


def skip_without_cuda() -> None:
    reason = cuda_skip_reason()
    if reason is not None:
        pytest.skip(reason)


# How close a CuPy float result must be to the NumPy one, per kind of computation and dtype.
# Integer and boolean results (argmax, counts) are always compared exactly.
#   "exact":  values moved or hashed, never rounded (jitter, uniform): bit for bit.
#   "kernel": one window kernel. Its terms are NumPy's, but a sum may be added in another order
#             (the GPU gathers per output element, NumPy adds one slab per window offset) and
#             average pooling divides by KH*KW where NumPy multiplies by the reciprocal: a few
#             ulp apart. rtol is ~100 ulp (float32 ulp 1.2e-7, float64 2.2e-16); atol covers
#             sums that cancel to ~0.
#   "net":    whole layers and nets. cuBLAS and NumPy's BLAS add a GEMM's products in other
#             orders, and those rounding differences grow through the layers, the loss and the
#             backward pass; still far below the O(1) error of a wrong index or a missed term.
#             A sum's rounding error scales with its terms, not its result, so for "net" atol is
#             taken relative to the array's largest value: a logit of -0.43 among logits of +-40
#             differs by 6e-5 between cuBLAS and the CPU's blocked convolution (H200, float32).
TOLERANCE = {
    "kernel": {
        np.dtype(np.float32): dict(rtol=1e-5, atol=1e-6),
        np.dtype(np.float64): dict(rtol=1e-12, atol=1e-13),
    },
    "net": {
        np.dtype(np.float32): dict(rtol=1e-4, atol=1e-5),
        np.dtype(np.float64): dict(rtol=1e-10, atol=1e-12),
    },
}


# Input layouts: the same values as a contiguous array or as a strided view. Each takes the host
# values and `place` (host array -> backend array) and returns the view, so a CuPy kernel sees a
# strided device view, not a host view copied contiguous on the way in.
def _contiguous(values, place):
    return place(np.ascontiguousarray(values))


def _transposed(values, place):
    """Stored with the axes reversed, viewed back: Fortran-ordered, not C-contiguous."""
    return place(np.ascontiguousarray(values.T)).T


def _sliced(values, place):
    """Every other element of the last axis of a buffer twice as wide; the rest is garbage."""
    wide_shape = values.shape[:-1] + (2 * values.shape[-1],)
    garbage = np.nan if values.dtype.kind in "fc" else np.iinfo(values.dtype).max
    wide = np.full(wide_shape, garbage, dtype=values.dtype)
    wide[..., ::2] = values
    return place(wide)[..., ::2]


LAYOUTS = {"contiguous": _contiguous, "transposed": _transposed, "sliced": _sliced}


def in_layout(values, layout: str, place=np.asarray):
    """`values` (host) as a `layout` view of an array that `place` makes (np.asarray: host)."""
    values = np.asarray(values)
    view = LAYOUTS[layout](values, place)
    assert view.shape == values.shape and view.dtype == values.dtype
    if layout != "contiguous" and values.ndim > 1 and min(values.shape) > 1:
        assert not view.flags.c_contiguous  # the code under test really sees a strided view
    return view


def output_buffer(backend, shape, dtype):
    """An output array full of garbage the code under test must overwrite; another garbage on
    each backend, so that an element both leave unwritten cannot agree by accident."""
    return backend.xp.full(shape, 7 if backend.name == "cpu" else -3, dtype=dtype)


def assert_backends_agree(run, *inputs, layout="contiguous", tolerance="net", on_device=True):
    """Run `run(backend, *inputs)` on the NumPy (lowering its convolutions) and the CuPy backend
    and compare the results.

    inputs: host arrays, each handed to run as a `layout` view (LAYOUTS) on the backend's device,
    or on the host with on_device=False (for run functions that load host data themselves, as
    Net.load_batch does). run returns an array, a tuple or a dict of arrays (on the device or
    the host); each comes back to the host and must match the NumPy backend's: same shape and
    dtype, integers and booleans exactly, floats within TOLERANCE[tolerance] ("exact": bit for
    bit). The inputs must come out of run unchanged (a kernel may copy a view, never write it).
    Skips with cuda_skip_reason() where CUDA is unusable. Returns (numpy, cupy) results as dicts
    of host arrays, for checks beyond agreement.
    """
    skip_without_cuda()
    # The oracle lowers every convolution, as CUDA does: Winograd's (a few 1e-6 of the largest
    # value from lowering in float32, checked in tests/test_winograd.py) stacked on cuBLAS's
    # rounding would leave only ~25% of the "net" tolerance in the simple-cnn step.
    oracle = NumpyBackend(winograd=False)
    expected = _run_on(oracle, run, inputs, layout, on_device)
    actual = _run_on(get_backend("cuda"), run, inputs, layout, on_device)
    assert actual.keys() == expected.keys()
    for key, want in expected.items():
        _assert_close(actual[key], want, tolerance, f"{key} (CuPy vs NumPy)")
    return expected, actual


def _run_on(backend, run, inputs, layout, on_device) -> dict:
    place = backend.asarray if on_device else np.asarray
    given = [in_layout(values, layout, place) for values in inputs]
    results = run(backend, *given)
    backend.synchronize()
    if isinstance(results, dict):
        named = results
    elif isinstance(results, (tuple, list)):
        named = {f"result {i}": value for i, value in enumerate(results)}
    else:
        named = {"result": results}
    for i, (values, view) in enumerate(zip(inputs, given)):
        np.testing.assert_array_equal(
            backend.to_host(view), values, err_msg=f"input {i} was written on {backend.name}"
        )
    return {key: np.array(backend.to_host(value)) for key, value in named.items()}  # copies


def _assert_close(actual, expected, tolerance: str, what: str) -> None:
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, (
        f"{what}: {actual.dtype}{actual.shape}, expected {expected.dtype}{expected.shape}"
    )
    if tolerance == "exact" or expected.dtype.kind not in "fc":
        np.testing.assert_array_equal(actual, expected, err_msg=what)
    else:
        bounds = dict(TOLERANCE[tolerance][expected.dtype])
        if tolerance == "net" and expected.size:
            bounds["atol"] *= max(1.0, float(np.nanmax(np.abs(expected))))
        np.testing.assert_allclose(actual, expected, **bounds, err_msg=what)
