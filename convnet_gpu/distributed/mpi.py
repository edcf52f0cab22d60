"""MpiCommunicator: the ranks of an MPI launch (mpiexec -n N ...) through mpi4py.

mpi4py is imported when one is made, never by `import convnet_gpu`. Host (NumPy) arrays go to
MPI as they are; device (CuPy) arrays are staged through host buffers kept per shape, which is
what `distributed` mpi on GPUs costs (a copy each way per collective); `distributed` nccl keeps
GPU gradients on the device.

A rank that fails alone must end the others (they would wait in their next collective forever):
the CLI calls abort() for any error that is not a collective decision, and a library user
launches with `python -m mpi4py script.py`, which aborts every rank on an uncaught exception.
"""

from __future__ import annotations

import numpy as np

from ..errors import UserError
from .communicator import Communicator

MPI_INSTALL_HINT = (
    "pip install 'convnet-gpu[mpi]' (mpi4py with the MPICH wheel), or on a cluster "
    "`pip install mpi4py` built against the site's MPI"
)


def import_mpi():
    """mpi4py's MPI module (which initializes MPI), or a UserError saying how to install it."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise UserError(f"`distributed` needs mpi4py ({exc}); {MPI_INSTALL_HINT}") from None
    return MPI


class MpiCommunicator(Communicator):
    engine = "mpi"
    capturable = False  # MPI calls are host work: a step that makes them runs eagerly

    def __init__(self, comm=None):
        self.MPI = MPI = import_mpi()
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        # The ranks sharing this host (shared memory): which GPU a rank takes, how many cores.
        local = self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank, self.local_size = local.Get_rank(), local.Get_size()
        local.Free()
        # BatchNorm's sums are all-reduced by worker thread 0 when a rank runs on threads:
        # that needs an MPI that takes calls from any one thread at a time.
        self.threads_may_call = MPI.Query_thread() >= MPI.THREAD_SERIALIZED
        self._flag = np.zeros(1, np.int32)
        self._staging = {}  # (shape, dtype) -> host buffer for a device array

    # ---- arrays -----------------------------------------------------------------------------
    def all_reduce_sum(self, array) -> None:
        if self.size == 1:
            return
        host = self._host(array)
        self.comm.Allreduce(self.MPI.IN_PLACE, host, op=self.MPI.SUM)
        self._back(host, array)

    def broadcast_array(self, array) -> None:
        if self.size == 1:
            return
        host = self._host(array)
        self.comm.Bcast(host, root=0)
        self._back(host, array)

    def _host(self, array) -> np.ndarray:
        """The array itself when it is a host one, else its copy in a host buffer."""
        if isinstance(array, np.ndarray):
            if not array.flags.c_contiguous:
                raise ValueError("MPI collectives take C-contiguous arrays")
            return array
        key = (array.shape, str(array.dtype))
        if key not in self._staging:  # allocated once per shape: the gradient, a few small ones
            self._staging[key] = np.empty(array.shape, array.dtype)
        host = self._staging[key]
        array.get(out=host)
        return host

    @staticmethod
    def _back(host, array) -> None:
        if host is not array:
            array.set(host)

    # ---- decisions and small objects ---------------------------------------------------------
    def any(self, flag: bool) -> bool:
        if self.size == 1:
            return bool(flag)
        self._flag[0] = 1 if flag else 0
        self.comm.Allreduce(self.MPI.IN_PLACE, self._flag, op=self.MPI.MAX)
        return bool(self._flag[0])

    def all_gather(self, obj) -> list:
        return self.comm.allgather(obj)

    def broadcast(self, obj):
        return self.comm.bcast(obj, root=0)

    def barrier(self) -> None:
        self.comm.Barrier()

    def abort(self, code: int):
        self.comm.Abort(code)
