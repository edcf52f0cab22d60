"""NcclCommunicator: GPU arrays reduced by NCCL (through CuPy), everything else over MPI.

Launched like `distributed` mpi (mpiexec starts the ranks); rank r takes cuda:<its local rank>,
so a host runs at most as many ranks as it has GPUs (NCCL refuses two ranks on one GPU). Rank 0
draws NCCL's unique id and shares it over MPI, then every rank joins the NCCL communicator.
A failure to start is a SetupFailed: taking the GPU or drawing the id, the ranks agree on over
MPI (every rank raises it); joining, a rank fails alone (the others wait inside NCCL, where no
MPI message reaches them: the caller must abort the job).
Device arrays (the flat gradient, BatchNorm's sums, the running statistics) are reduced on the
current CUDA stream, in stream order with the kernels around them; host arrays (figures, flags)
go over MPI. CuPy's wheel does not bring NCCL: the nvidia-nccl wheel of the CUDA version does
(extras nccl12 / nccl13).

Not verified on a GPU when this was written (no GPU at hand): see docs/design.md.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..errors import UserError
from .communicator import Communicator, SetupFailed
from .mpi import MpiCommunicator

NCCL_INSTALL_HINT = (
    "pip install 'convnet-gpu[cuda12,nccl12]' (or [cuda13,nccl13] for CUDA 13), or use "
    "`distributed` mpi"
)


def import_nccl():
    """(cupy, cupy.cuda.nccl) with at least one GPU visible, or a UserError saying what is
    missing. Checked before MPI starts, so every rank fails alike and at once."""
    try:
        with warnings.catch_warnings():  # CuPy warns at length where NCCL is missing: said below
            warnings.simplefilter("ignore")
            import cupy
            from cupy.cuda import nccl
    except Exception as exc:  # ImportError, or a CuPy whose NCCL library is absent
        raise UserError(
            f"`distributed` nccl needs CuPy with NCCL ({exc}); {NCCL_INSTALL_HINT}"
        ) from None
    if not getattr(nccl, "available", True):
        raise UserError(f"`distributed` nccl: CuPy finds no NCCL library; {NCCL_INSTALL_HINT}")
    try:
        gpus = cupy.cuda.runtime.getDeviceCount()
    except Exception:
        gpus = 0
    if gpus == 0:
        raise UserError(
            "`distributed` nccl reduces gradients between GPUs, and no GPU is visible here; "
            "use `distributed` mpi on the CPU"
        )
    return cupy, nccl


def _line(exc: Exception) -> str:
    """An exception as one line: its type and its message's words."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def nccl_dtype(nccl, dtype) -> int:
    """NCCL's data type constant for a NumPy/CuPy dtype."""
    names = {"float32": "NCCL_FLOAT32", "float64": "NCCL_FLOAT64", "float16": "NCCL_FLOAT16",
             "int32": "NCCL_INT32", "int64": "NCCL_INT64"}  # fmt: skip
    name = names.get(np.dtype(dtype).name)
    if name is None:
        raise TypeError(f"NCCL collectives here take {', '.join(names)}, not {np.dtype(dtype)}")
    return getattr(nccl, name)


class NcclCommunicator(Communicator):
    engine = "nccl"
    # NCCL calls can be recorded in a CUDA graph, but that path is unverified: steps run eagerly.
    capturable = False

    def __init__(self, control: MpiCommunicator | None = None):
        self.cupy, self.nccl = cupy, nccl = import_nccl()
        self.control = control if control is not None else MpiCommunicator()
        ctl = self.control
        self.rank, self.size = ctl.rank, ctl.size
        self.local_rank, self.local_size = ctl.local_rank, ctl.local_size
        self.device = f"cuda:{self.local_rank}"
        problem, unique_id = None, None
        try:  # each rank tries, then all learn every rank's outcome (and rank 0's id) at once
            gpus = cupy.cuda.runtime.getDeviceCount()
            if self.local_size > gpus:
                problem = (
                    f"`distributed` nccl takes one GPU per rank, and a host runs more ranks "
                    f"than it has GPUs ({gpus} on rank {self.rank}'s host); start at most that "
                    f"many ranks per host"
                )
            else:
                cupy.cuda.Device(self.local_rank).use()
                unique_id = nccl.get_unique_id() if self.is_root else None
        except Exception as exc:  # a CUDA or NCCL error
            problem = f"`distributed` nccl could not start on rank {self.rank}: {_line(exc)}"
        outcomes = ctl.all_gather((problem, unique_id))
        failed = [line for line, _ in outcomes if line is not None]
        if failed:
            more = f" (and {len(failed) - 1} more rank(s))" if len(failed) > 1 else ""
            raise SetupFailed(failed[0] + more, ctl, together=True)
        try:  # a collective inside NCCL: the others cannot learn that this rank failed
            self.comm = nccl.NcclCommunicator(self.size, outcomes[0][1], self.rank)
        except Exception as exc:
            raise SetupFailed(
                f"`distributed` nccl could not join the other ranks ({_line(exc)})",
                ctl, together=False,
            ) from None  # fmt: skip

    def _stream(self) -> int:
        return self.cupy.cuda.get_current_stream().ptr

    def all_reduce_sum(self, array) -> None:
        if isinstance(array, np.ndarray):
            self.control.all_reduce_sum(array)
            return
        ptr = array.data.ptr  # NCCL even alone: one rank's run checks the path (a copy)
        dtype = nccl_dtype(self.nccl, array.dtype)
        self.comm.allReduce(ptr, ptr, array.size, dtype, self.nccl.NCCL_SUM, self._stream())

    def broadcast_array(self, array) -> None:
        if isinstance(array, np.ndarray):
            self.control.broadcast_array(array)
            return
        dtype = nccl_dtype(self.nccl, array.dtype)
        self.comm.bcast(array.data.ptr, array.size, dtype, 0, self._stream())

    def any(self, flag: bool) -> bool:
        return self.control.any(flag)

    def all_gather(self, obj) -> list:
        return self.control.all_gather(obj)

    def broadcast(self, obj):
        return self.control.broadcast(obj)

    def barrier(self) -> None:
        self.cupy.cuda.get_current_stream().synchronize()
        self.control.barrier()

    def abort(self, code: int):
        self.control.abort(code)
