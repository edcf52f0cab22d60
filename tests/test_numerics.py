"""Stable softmax and log-sum-exp (convnet_gpu.numerics): finite on huge logits, exact on small."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from convnet_gpu.numerics import logsumexp, softmax


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
        probs = softmax(np, logits)
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
    np.testing.assert_allclose(softmax(np, logits), naive, rtol=1e-14)


def test_logsumexp_matches_naive_on_moderate_inputs():
    x = np.random.default_rng(2).standard_normal((4, 6)) * 5
    np.testing.assert_allclose(logsumexp(np, x), np.log(np.sum(np.exp(x), axis=-1)), rtol=1e-14)
    np.testing.assert_allclose(
        logsumexp(np, x, axis=0), np.log(np.sum(np.exp(x), axis=0)), rtol=1e-14
    )
    np.testing.assert_allclose(logsumexp(np, x[0]), np.log(np.sum(np.exp(x[0]))), rtol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_logsumexp_is_finite_on_huge_inputs(dtype):
    x = np.array(
        [[1e4, 1e4, 1e4], [1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e30, 1e30, -1e30]], dtype=dtype
    )
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        result = logsumexp(np, x)
    assert result.dtype == dtype and result.shape == (4,)
    assert np.all(np.isfinite(result))
    rtol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(result[:3], [1e4 + np.log(3.0), 1e4, -1e4 + np.log(3.0)], rtol=rtol)
    assert result[3] == pytest.approx(1e30, rel=rtol)
