"""SoftmaxCrossEntropy (layers/loss.py) against a numpy reference and torch."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from layer_helpers import CPU, torch_run

from convnet_gpu import SoftmaxCrossEntropy


def _loss_on(logits, labels, dtype=np.float64, batch=None):
    loss = SoftmaxCrossEntropy()
    loss.setup(CPU, logits.shape[1:], batch or len(logits), dtype)
    logits = np.ascontiguousarray(logits, dtype=dtype)
    value = float(loss.forward(logits, labels.astype(np.int32)))
    d_logits = np.full_like(logits, np.nan)
    loss.backward(d_logits)
    return loss, value, d_logits


def test_softmax_cross_entropy_agrees_with_torch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(10)
    logits = 3 * rng.standard_normal((6, 5))
    labels = rng.integers(0, 5, size=6)
    _, value, d_logits = _loss_on(logits, labels)
    out, (tz,) = torch_run(lambda z: F.cross_entropy(z, torch.from_numpy(labels)), logits)
    out.backward()
    assert value == pytest.approx(out.item(), rel=1e-12)
    np.testing.assert_allclose(d_logits, tz.grad.numpy(), rtol=1e-12, atol=1e-14)


# ---- softmax cross-entropy ---------------------------------------------------------------------
def _reference_loss(logits, labels):
    z = np.asarray(logits, np.float64)
    m = z.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(z - m).sum(axis=1))
    return float(np.mean(lse - z[np.arange(len(z)), labels]))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_softmax_cross_entropy_huge_logits(dtype):
    rng = np.random.default_rng(13)
    logits = rng.uniform(-1e4, 1e4, size=(6, 5))
    logits[0] = [1e4, -1e4, 0.0, 1e4 - 1.0, 5e3]  # near-tie at the top
    logits[1] = [-1e4, -1e4, -1e4, -1e4, -1e4]  # all equal: log(5)
    labels = np.array([1, 2, 0, 3, 4, 1])
    logits = logits.astype(dtype)
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        loss, value, d_logits = _loss_on(logits, labels, dtype=dtype)
    expected = _reference_loss(logits, labels)
    assert np.isfinite(value)
    assert value == pytest.approx(expected, rel=1e-6 if dtype == np.float32 else 1e-12)
    assert np.all(np.isfinite(d_logits))
    np.testing.assert_allclose(d_logits.sum(axis=1), 0.0, atol=1e-6)
    _, tied_row, d_tied = _loss_on(logits[1:2], labels[1:2], dtype=dtype)  # all logits equal
    assert tied_row == pytest.approx(np.log(5.0), rel=1e-6)
    np.testing.assert_allclose(d_tied, np.eye(5)[labels[1:2]] * -1 + 0.2, rtol=1e-6, atol=1e-7)


def test_softmax_cross_entropy_moderate_logits_match_reference():
    rng = np.random.default_rng(14)
    logits = rng.standard_normal((7, 10))
    labels = rng.integers(0, 10, size=7)
    _, value, d_logits = _loss_on(logits, labels)
    assert value == pytest.approx(_reference_loss(logits, labels), rel=1e-13)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    onehot = np.eye(10)[labels]
    np.testing.assert_allclose(d_logits, (probs - onehot) / 7, rtol=1e-12, atol=1e-15)


def test_softmax_cross_entropy_uses_only_first_n_rows():
    """A loss set up for 8 rows run on 5: mean over the 5, gradient only in their rows."""
    rng = np.random.default_rng(15)
    logits = rng.standard_normal((5, 4))
    labels = rng.integers(0, 4, size=5)
    _, value, d_logits = _loss_on(logits, labels, batch=8)
    assert value == pytest.approx(_reference_loss(logits, labels), rel=1e-13)
    np.testing.assert_allclose(d_logits.sum(axis=1), 0.0, atol=1e-15)


def test_count_correct_counts_argmax_hits():
    loss = SoftmaxCrossEntropy()
    loss.setup(CPU, (4,), 8, np.float64)
    logits = np.array(
        [[5, 1, 0, 0], [0, 9, 1, 2], [0, 0, 0, 3], [1, 2, 3, 0], [7, 0, 0, 0], [0, 0, 1, 0]],
        dtype=np.float64,
    )
    argmax = logits.argmax(axis=1)  # [0, 1, 3, 2, 0, 2]
    labels = np.array([0, 1, 2, 2, 3, 2], dtype=np.int32)  # hits at rows 0, 1, 3, 5
    assert int(loss.count_correct(logits, labels)) == int(np.sum(argmax == labels)) == 4
    assert int(loss.count_correct(logits[:2], labels[:2])) == 2
    assert int(loss.count_correct(logits, (labels + 1) % 4)) == int(
        np.sum(argmax == (labels + 1) % 4)
    )


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_label_smoothing_matches_torch(smoothing):
    torch = pytest.importorskip("torch")
    from convnet_gpu.backends import get_backend
    from convnet_gpu.layers import SoftmaxCrossEntropy

    rng = np.random.default_rng(3)
    logits = rng.standard_normal((6, 5)) * 3
    labels = rng.integers(0, 5, 6).astype(np.int32)
    loss_layer = SoftmaxCrossEntropy(label_smoothing=smoothing)
    loss_layer.setup(get_backend("cpu"), (5,), 8, np.float64)
    loss = float(loss_layer.forward(logits, labels))
    d_logits = np.empty_like(logits)
    loss_layer.backward(d_logits)
    z = torch.tensor(logits, requires_grad=True)
    expected = torch.nn.functional.cross_entropy(
        z, torch.tensor(labels).long(), label_smoothing=smoothing
    )
    expected.backward()
    assert loss == pytest.approx(expected.item(), rel=1e-12)
    np.testing.assert_allclose(d_logits, z.grad.numpy(), rtol=1e-10, atol=1e-15)
