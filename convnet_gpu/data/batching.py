"""Minibatch iteration over host (NumPy) arrays."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np


def _check_inputs(x: np.ndarray, y: np.ndarray, batch_size: int) -> None:
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} samples but y has {len(y)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise TypeError(f"batch_size must be an int, got {type(batch_size).__name__}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


def _epoch_order(count: int, shuffle: bool, rng: np.random.Generator | None) -> np.ndarray:
    if not shuffle:
        return np.arange(count)
    if rng is None:
        rng = np.random.default_rng()
    return rng.permutation(count)


def iterate_minibatches(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    shuffle: bool,
    rng: np.random.Generator | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (xb, yb) batches as freshly allocated arrays; the last may be smaller.

    With `shuffle`, one permutation is drawn from `rng` per call (a fresh
    unseeded generator when `rng` is None).
    """
    _check_inputs(x, y, batch_size)
    order = _epoch_order(len(x), shuffle, rng)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        yield x[idx], y[idx]


class MinibatchLoader:
    """Gathers minibatches into two preallocated host buffers.

    `epoch()` yields views of those buffers: each (xb, yb) is OVERWRITTEN by
    the next batch, so copy it (or transfer it to the device) before advancing
    if it must outlive the step.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int):
        _check_inputs(x, y, batch_size)
        self.x = x
        self.y = y
        self.batch_size = int(batch_size)
        buffer_rows = min(self.batch_size, len(x))
        self._x_buffer = np.empty((buffer_rows,) + x.shape[1:], dtype=x.dtype)
        self._y_buffer = np.empty((buffer_rows,) + y.shape[1:], dtype=y.dtype)

    @property
    def num_samples(self) -> int:
        return len(self.x)

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.batch_size)

    def epoch(
        self, rng: np.random.Generator | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield every sample once: in order if `rng` is None, else shuffled by `rng`.

        The permutation is drawn once per call. The last, smaller batch is
        yielded too.
        """
        yield from self.batches(_epoch_order(self.num_samples, rng is not None, rng))

    def batches(
        self, order: np.ndarray, first_batch: int = 0
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield the batches of a given sample order, starting at batch `first_batch`
        (how a resumed run picks up in the middle of an epoch)."""
        for start in range(first_batch * self.batch_size, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            rows = len(idx)
            # mode="clip" avoids numpy's internal buffering of `out` under
            # mode="raise"; idx comes from a permutation so it is always valid.
            np.take(self.x, idx, axis=0, out=self._x_buffer[:rows], mode="clip")
            np.take(self.y, idx, axis=0, out=self._y_buffer[:rows], mode="clip")
            yield self._x_buffer[:rows], self._y_buffer[:rows]

    def rank_batches(self, order: np.ndarray, first_batch: int, rank: int, ranks: int):
        """Like batches(), for rank `rank` of `ranks` training together: yield (images, labels,
        share) of its contiguous block of every global batch (distributed/shares.py), gathering
        only those rows. A rank whose block of a short last batch is empty gets 0 rows and
        still its share, so it joins the step's collectives."""
        from ..distributed.shares import batch_share

        for start in range(first_batch * self.batch_size, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            share = batch_share(len(batch), rank, ranks)
            idx = batch[share.first : share.first + share.rows]
            np.take(self.x, idx, axis=0, out=self._x_buffer[: share.rows], mode="clip")
            np.take(self.y, idx, axis=0, out=self._y_buffer[: share.rows], mode="clip")
            yield self._x_buffer[: share.rows], self._y_buffer[: share.rows], share
