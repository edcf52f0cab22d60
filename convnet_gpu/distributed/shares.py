"""How a global batch is split over the ranks: contiguous blocks, the first ranks one row more.

Every rank walks the one global sample order (position.py) and takes its block of each batch, so
the rank count is not part of a run's state: a checkpoint resumes on any number of ranks.
"""

from __future__ import annotations

from typing import NamedTuple


class BatchShare(NamedTuple):
    """Rows [first, first + rows) of a global batch of `total` rows (all of them: 0, n, n)."""

    first: int
    rows: int
    total: int


def batch_share(total: int, rank: int = 0, ranks: int = 1) -> BatchShare:
    """Rank `rank`'s block of a batch of `total` rows split over `ranks`: 10 rows over 3 ranks
    are 4 + 3 + 3; 2 rows over 3 ranks are 1 + 1 + 0 (a rank may hold none)."""
    base, extra = divmod(total, ranks)
    first = rank * base + min(rank, extra)
    return BatchShare(first, base + (1 if rank < extra else 0), total)


def largest_share(batch_size: int, ranks: int) -> int:
    """The most rows any rank holds of a batch of batch_size (rank 0's): what its net is set up
    for."""
    return -(-batch_size // ranks)
