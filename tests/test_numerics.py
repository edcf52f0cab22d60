"""Guarded exp/log (clip + warn once), stable softmax and log-sum-exp."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from convnet_gpu import numerics
from convnet_gpu.numerics import (
    ClippedWarning,
    checked_exp,
    checked_log,
    exp_limits,
    logsumexp,
    softmax,
)

EDGE_INPUTS = [1000.0, -1000.0, 0.0, -1.0, np.nan]


@pytest.fixture(autouse=True)
def reset_warned():
    """checked_exp/checked_log warn once per process: each test starts and ends clean."""
    saved = set(numerics._warned)
    numerics._warned.clear()
    yield
    numerics._warned.clear()
    numerics._warned.update(saved)


def _clipped_warnings(fn, *args, **kwargs):
    """Call fn, returning (result, [ClippedWarning messages]); other warnings are returned too."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn(*args, **kwargs)
    clipped = [str(w.message) for w in caught if issubclass(w.category, ClippedWarning)]
    others = [
        f"{w.category.__name__}: {w.message}"
        for w in caught
        if not issubclass(w.category, ClippedWarning)
    ]
    return result, clipped, others


# ---- checked_exp -------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_checked_exp_in_range_is_exp_without_warning(dtype):
    x = np.linspace(-20, 20, 41).astype(dtype)
    result, clipped, others = _clipped_warnings(checked_exp, x)
    assert clipped == [] and others == []
    assert result.dtype == dtype
    np.testing.assert_allclose(
        result, np.exp(x.astype(np.float64)), rtol=1e-6 if dtype == np.float32 else 1e-15
    )
    np.testing.assert_array_equal(x, np.linspace(-20, 20, 41).astype(dtype))  # input untouched


def test_checked_exp_clips_and_warns_exactly_once():
    x = np.array([1e6, -1e6, 0.0, -1.0], dtype=np.float64)
    first, clipped_first, _ = _clipped_warnings(checked_exp, x)
    second, clipped_second, _ = _clipped_warnings(checked_exp, x.copy())
    assert len(clipped_first) == 1 and "checked_exp" in clipped_first[0]
    assert clipped_second == []  # once per process, not once per call
    for result in (first, second):
        assert np.all(np.isfinite(result))
        assert result[0] == pytest.approx(np.finfo(np.float64).max, rel=1e-12)
        assert 0.0 < result[1] <= 1.01 * np.finfo(np.float64).tiny
        assert result[2] == 1.0 and result[3] == pytest.approx(np.exp(-1.0), rel=1e-15)


def test_checked_exp_float32_clips_low_side_and_warns_once():
    x = np.array([-1000.0, 0.0, -1.0, -88.0], dtype=np.float32)
    result, clipped, others = _clipped_warnings(checked_exp, x)
    assert len(clipped) == 1 and others == []
    assert result.dtype == np.float32
    assert np.all(np.isfinite(result)) and np.all(result > 0)
    assert result[1] == 1.0 and result[2] == pytest.approx(np.exp(-1.0), rel=1e-6)
    _, clipped_again, _ = _clipped_warnings(checked_exp, x)
    assert clipped_again == []


def test_checked_exp_float32_large_input_is_finite():
    result, clipped, others = _clipped_warnings(checked_exp, np.array([1000.0], dtype=np.float32))
    assert len(clipped) == 1
    assert np.all(np.isfinite(result)), f"checked_exp(float32 1000) = {result}; warnings {others}"
    assert others == []


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_checked_exp_nan_input_is_finite_and_warned(dtype):
    result, clipped, _ = _clipped_warnings(checked_exp, np.array([np.nan, 0.0], dtype=dtype))
    assert np.all(np.isfinite(result)), f"checked_exp(nan) = {result}"
    assert len(clipped) == 1


def test_checked_exp_writes_into_out():
    x = np.array([0.0, 1.0, 2000.0])
    out = np.empty_like(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ClippedWarning)
        returned = checked_exp(x, out=out)
    assert returned is out
    np.testing.assert_allclose(out[:2], [1.0, np.e], rtol=1e-15)
    assert np.isfinite(out[2])
    assert x[2] == 2000.0


# ---- checked_log -------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_checked_log_edge_inputs_are_finite_and_warn_once(dtype):
    x = np.array(EDGE_INPUTS, dtype=dtype)
    result, clipped, others = _clipped_warnings(checked_log, x)
    assert len(clipped) == 1 and "checked_log" in clipped[0]
    assert others == []
    assert result.dtype == dtype
    assert np.all(np.isfinite(result)), result
    log_tiny = np.log(np.finfo(dtype).tiny)
    assert result[0] == pytest.approx(np.log(1000.0), rel=1e-6)
    np.testing.assert_allclose(result[1:], log_tiny, rtol=1e-6)  # -1000, 0, -1, nan -> log(tiny)
    _, clipped_again, _ = _clipped_warnings(checked_log, x)
    assert clipped_again == []
    # the two guards warn independently: a clipped exp still warns after a clipped log
    _, clipped_exp, _ = _clipped_warnings(checked_exp, np.array([-1e6], dtype=dtype))
    assert len(clipped_exp) == 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_checked_log_in_range_is_log_without_warning(dtype):
    x = np.array([1e-30, 0.5, 1.0, 3.0, 1e30], dtype=dtype)
    result, clipped, others = _clipped_warnings(checked_log, x)
    assert clipped == [] and others == []
    np.testing.assert_allclose(
        result, np.log(x.astype(np.float64)), rtol=1e-6 if dtype == np.float32 else 1e-15
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_checked_exp_low_edge_inputs_are_finite(dtype):
    """The float32 edge inputs without the two known failures (large and NaN)."""
    x = np.array([-1000.0, 0.0, -1.0], dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ClippedWarning)
        result = checked_exp(x)
    assert np.all(np.isfinite(result))
    assert result[0] >= 0.0 and result[1] == 1.0


def test_exp_limits_float64_are_safe():
    lo, hi = exp_limits(np.float64)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        assert np.isfinite(np.exp(np.float64(hi)))
        assert np.exp(np.float64(lo)) > 0
    assert lo < -700 and hi > 700


# ---- softmax and logsumexp ---------------------------------------------------------------------
def _softmax_reference(logits):
    z = np.asarray(logits, np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_rows_sum_to_one_and_match_reference_on_huge_logits(dtype):
    rng = np.random.default_rng(0)
    logits = rng.uniform(-1e4, 1e4, size=(5, 7))
    logits[0] = 1e4  # all equal: uniform
    logits[1, :] = -1e4
    logits[1, 3] = 1e4  # one-hot
    logits[2, :2] = [9999.5, 10000.0]  # close at the top
    logits = logits.astype(dtype)
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        probs = softmax(logits)
    assert probs.dtype == dtype and probs.shape == logits.shape
    assert np.all(np.isfinite(probs)) and np.all(probs >= 0)
    tol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=tol)
    np.testing.assert_allclose(probs, _softmax_reference(logits), rtol=tol, atol=tol)
    np.testing.assert_allclose(probs[0], 1.0 / 7, rtol=tol)
    assert probs[1, 3] == 1.0


def test_softmax_moderate_logits_match_naive_formula():
    logits = np.random.default_rng(1).standard_normal((4, 6))
    naive = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(softmax(logits), naive, rtol=1e-14)


def test_logsumexp_matches_naive_on_moderate_inputs():
    x = np.random.default_rng(2).standard_normal((4, 6)) * 5
    np.testing.assert_allclose(logsumexp(x), np.log(np.sum(np.exp(x), axis=-1)), rtol=1e-14)
    np.testing.assert_allclose(logsumexp(x, axis=0), np.log(np.sum(np.exp(x), axis=0)), rtol=1e-14)
    np.testing.assert_allclose(logsumexp(x[0]), np.log(np.sum(np.exp(x[0]))), rtol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_logsumexp_is_finite_on_huge_inputs(dtype):
    x = np.array(
        [[1e4, 1e4, 1e4], [1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e30, 1e30, -1e30]], dtype=dtype
    )
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        result = logsumexp(x)
    assert result.dtype == dtype and result.shape == (4,)
    assert np.all(np.isfinite(result))
    rtol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(result[:3], [1e4 + np.log(3.0), 1e4, -1e4 + np.log(3.0)], rtol=rtol)
    assert result[3] == pytest.approx(1e30, rel=rtol)
