"""The Communicator interface and Local, the single-process one whose collectives do nothing.

The Trainer, the layers that look across rows (layers/base.py BatchRows) and the CLI always talk
to a Communicator, so no code path asks "is this run distributed?": alone, Local answers as a
world of one rank would.

Collectives must be called by every rank, in the same order; each says which arrays it takes:
  all_reduce_sum(array)     in place, the sum over the ranks, the same bits on every rank: the
                            flat gradient, BatchNorm's per-channel sums (device arrays), or
                            host (NumPy) arrays of figures
  any(flag) / all(flag)     a decision every rank takes together (Ctrl-C, early stopping)
  all_gather(obj)           a small Python object from each rank, as a list in rank order
  broadcast(obj)            a small Python object from the root
  broadcast_array(array)    an array from the root, in place (BatchNorm's running statistics)
  barrier()
  same_on_every_rank(arrays)  whether every rank holds the same bits (a digest gathered)
abort(code) ends every rank at once: what a rank that fails alone must do, since the others
would wait for it in their next collective forever. A communicator that fails to start after MPI
has started raises SetupFailed, which says whether the ranks fail together or this one alone.
"""

from __future__ import annotations

import hashlib

import numpy as np

from ..errors import UserError

ENGINES = ("none", "mpi", "nccl")  # the values of `distributed`


class Communicator:
    """What a rank knows of the others and how it meets them (see the module docstring)."""

    engine = "none"
    rank = 0
    size = 1
    local_rank = 0  # the rank among those on this host (picks the GPU, shares the cores)
    local_size = 1
    # Whether all_reduce_sum on device arrays may be recorded in a CUDA graph (replay.py).
    capturable = True

    @property
    def is_root(self) -> bool:
        """Rank 0: the one that writes the run folder and prints."""
        return self.rank == 0

    def all_reduce_sum(self, array) -> None:
        raise NotImplementedError

    def any(self, flag: bool) -> bool:
        raise NotImplementedError

    def all(self, flag: bool) -> bool:
        return not self.any(not flag)

    def all_gather(self, obj) -> list:
        raise NotImplementedError

    def broadcast(self, obj):
        raise NotImplementedError

    def broadcast_array(self, array) -> None:
        raise NotImplementedError

    def barrier(self) -> None:
        raise NotImplementedError

    def abort(self, code: int):
        raise NotImplementedError

    def same_on_every_rank(self, arrays) -> bool:
        """Whether every rank holds the same bits in these host arrays (a digest of each
        rank's, gathered): the check that the ranks' parameters have not drifted apart."""
        digest = hashlib.sha256()
        for array in arrays:
            digest.update(np.ascontiguousarray(array).tobytes())
        return len(set(self.all_gather(digest.hexdigest()))) == 1

    def describe(self) -> str:
        """'2 ranks (mpi)': how the run header names it."""
        return f"{self.size} rank{'s' if self.size > 1 else ''} ({self.engine})"


class SetupFailed(UserError):
    """A communicator that could not start once MPI had (one line). together: every rank raises
    it at the same point, having agreed over `control` (the MPI communicator); else this rank
    fails alone while the others may wait for it forever, and control.abort() must end them."""

    def __init__(self, message: str, control: Communicator, together: bool):
        super().__init__(message)
        self.control, self.together = control, together


class Local(Communicator):
    """One process alone: every collective returns what a world of one rank would."""

    def all_reduce_sum(self, array) -> None:
        pass

    def any(self, flag: bool) -> bool:
        return bool(flag)

    def all_gather(self, obj) -> list:
        return [obj]

    def broadcast(self, obj):
        return obj

    def broadcast_array(self, array) -> None:
        pass

    def barrier(self) -> None:
        pass

    def abort(self, code: int):
        raise SystemExit(code)

    def same_on_every_rank(self, arrays) -> bool:
        return True  # one rank: nothing to compare, nothing to hash


def open_communicator(engine: str = "none") -> Communicator:
    """The communicator of an engine (one of ENGINES). "mpi" and "nccl" need mpi4py, "nccl" also
    CuPy with NCCL and a GPU per rank on each host (rank r takes cuda:<its local rank>); a
    missing piece is a UserError naming what to install."""
    if engine == "none":
        return Local()
    if engine == "mpi":
        from .mpi import MpiCommunicator

        return MpiCommunicator()
    if engine == "nccl":
        from .nccl import NcclCommunicator

        return NcclCommunicator()
    from ..settings import SettingError

    raise SettingError("distributed", f"unknown {engine!r}; use one of: {', '.join(ENGINES)}")
