"""Guarded exp/log and a stable softmax: the seed's lesson that exp and log must never blow up.

`checked_exp` and `checked_log` clip their input to the range where the result is finite and
non-zero for the array's dtype, and warn once per process when they had to clip, so a diverging
run says so instead of silently producing inf/NaN.
"""

from __future__ import annotations

import warnings
from functools import cache

import numpy as np

_warned: set[str] = set()


class ClippedWarning(RuntimeWarning):
    """An input to checked_exp/checked_log was outside the dtype's safe range and was clipped."""


def _xp_of(array):
    """numpy or cupy, whichever owns `array` (cupy is only imported if the array is cupy's)."""
    if type(array).__module__.split(".")[0] == "cupy":
        import cupy

        return cupy
    return np


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, ClippedWarning, stacklevel=3)


@cache
def exp_limits(dtype) -> tuple[float, float]:
    """[lo, hi], exact in `dtype`, such that exp(x) stays a finite, normal number of `dtype`.

    log(max) rounded to float32 lands just above the true limit, so step inward until exp fits.
    """
    kind = np.dtype(dtype).type
    info = np.finfo(kind)
    lo, hi = kind(np.log(info.tiny)), kind(np.log(info.max))
    with np.errstate(over="ignore", under="ignore"):
        while not np.isfinite(np.exp(hi)):
            hi = np.nextafter(hi, kind(0))
        while np.exp(lo) < info.tiny:
            lo = np.nextafter(lo, kind(0))
    return float(lo), float(hi)


def checked_exp(x, out=None):
    """exp(x) with x clipped to exp_limits(x.dtype) (NaN read as 0); warns once if it clipped."""
    xp = _xp_of(x)
    lo, hi = exp_limits(x.dtype)
    if bool(xp.any(~((x >= lo) & (x <= hi)))):  # also catches NaN
        _warn_once(
            "exp",
            f"checked_exp: inputs outside [{lo:.1f}, {hi:.1f}] (or NaN) were "
            f"clipped (the values are diverging; lower the learning rate)",
        )
    out = xp.clip(x, lo, hi, out=out)
    out = xp.nan_to_num(out, copy=False, nan=0.0)
    return xp.exp(out, out=out)


def checked_log(x, out=None):
    """log(x), x clipped to [tiny, max] of its dtype (NaN as tiny); warns once if it clipped."""
    xp = _xp_of(x)
    info = np.finfo(x.dtype)
    if bool(xp.any(~(x >= info.tiny))):  # also catches NaN
        _warn_once(
            "log",
            "checked_log: inputs <= 0 (or NaN) were clipped to the smallest "
            "positive number; a probability reached zero",
        )
    out = xp.clip(x, float(info.tiny), float(info.max), out=out)
    out = xp.nan_to_num(out, copy=False, nan=float(info.tiny))
    return xp.log(out, out=out)


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


def softmax(logits):
    """Allocating convenience form of softmax_into, for users and tests (host or device arrays)."""
    xp = _xp_of(logits)
    probs = xp.empty_like(logits)
    rows = (logits.shape[0], 1)
    softmax_into(xp, logits, probs, xp.empty(rows, logits.dtype), xp.empty(rows, logits.dtype))
    return probs


def logsumexp(logits, axis=-1):
    xp = _xp_of(logits)
    row_max = xp.max(logits, axis=axis, keepdims=True)
    return xp.squeeze(row_max, axis) + xp.log(xp.sum(xp.exp(logits - row_max), axis=axis))
