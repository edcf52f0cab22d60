"""Data-parallel training over processes: each rank computes a contiguous share of every global
batch, and the ranks meet through a Communicator (communicator.py).

    Local()           one process: every collective is a no-op (the default everywhere)
    MpiCommunicator   mpi4py (mpi.py): launching, control messages, CPU gradients (GPU ones
                      staged through the host)
    NcclCommunicator  NCCL through CuPy (nccl.py): GPU gradients, control messages over MPI

mpi4py and CuPy are optional; they are imported only when open_communicator() is asked for an
engine that needs them. shares.py splits a global batch into the ranks' row blocks.
"""

from __future__ import annotations

from .communicator import ENGINES, Communicator, Local, SetupFailed, open_communicator
from .shares import BatchShare, batch_share, largest_share

__all__ = [
    "ENGINES",
    "BatchShare",
    "Communicator",
    "Local",
    "SetupFailed",
    "batch_share",
    "largest_share",
    "open_communicator",
]
