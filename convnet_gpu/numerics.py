"""A stable softmax and log-sum-exp: the seed's lesson that exp and log must never blow up.

The row max is subtracted before exp, so exp's argument is <= 0 and never overflows, and the
row sum of exp is >= 1 (the max's own term is exp(0) = 1), so log's argument is >= 1. Every
function takes the array module `xp` (numpy or cupy: a backend's `backend.xp`) explicitly.
Where a net has diverged anyway, quiet_float_errors keeps NumPy's warnings from burying the one
line that says so.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager

import numpy as np


def softmax_into(xp, logits, probs, row_max, row_sum) -> None:
    """probs = softmax(logits) along axis 1, the max subtracted first so exp never overflows.

    Leaves row_sum = sum(exp(logits - row_max)) >= 1, so log(row_sum) is safe:
    log_softmax = logits - row_max - log(row_sum).
    """
    xp.max(logits, axis=1, keepdims=True, out=row_max)
    xp.subtract(logits, row_max, out=probs)
    xp.exp(probs, out=probs)
    xp.sum(probs, axis=1, keepdims=True, out=row_sum)
    xp.divide(probs, row_sum, out=probs)


def softmax(xp, logits):
    """Allocating convenience form of softmax_into, for users and tests."""
    probs = xp.empty_like(logits)
    rows = (logits.shape[0], 1)
    softmax_into(xp, logits, probs, xp.empty(rows, logits.dtype), xp.empty(rows, logits.dtype))
    return probs


def logsumexp(xp, logits, axis=-1):
    """log(sum(exp(logits), axis)) with the max subtracted first (finite for finite logits)."""
    row_max = xp.max(logits, axis=axis, keepdims=True)
    return xp.squeeze(row_max, axis) + xp.log(xp.sum(xp.exp(logits - row_max), axis=axis))


@contextmanager
def quiet_float_errors():
    """NumPy's RuntimeWarnings (overflow, invalid value) off while training or evaluating: a
    diverging step would print several before the NaN watch stops the run with the one line that
    names it, and an evaluation reports a non-finite loss itself.
    errstate is per thread, so the warnings filter (process-wide) covers the CPU worker threads."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield
