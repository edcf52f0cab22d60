"""`convnet-gpu` as one rank of an mpiexec launch, for tests/test_distributed_mpi.py, with a
fault injected where CONVNET_GPU_TEST_FAULT="KIND:RANK:STEP" says: during the STEP-th training
step (1-based) rank RANK gets a SIGINT (KIND sigint: a Ctrl-C on one rank), raises (KIND raise:
a rank that fails alone) or changes a parameter (KIND drift: ranks whose parameters differ).
KIND nccl-device, nccl-id or nccl-join: `distributed` nccl runs on stand-ins for CuPy and NCCL
(tests/distributed_helpers.py) where rank RANK fails to take its GPU, to draw the unique id (rank
0's work) or to join, while the other ranks' join waits as NCCL's does (STEP is not used).
Without the variable it is the plain command."""

from __future__ import annotations

import os
import signal
import sys

from convnet_gpu import cli
from convnet_gpu.train import Trainer


def inject(kind: str, rank: int, step: int) -> None:
    plain_step = Trainer._train_work

    def step_with_fault(self, total):
        plain_step(self, total)
        if self.comm.rank == rank and self.position.step + 1 == step:  # counted after the work
            if kind == "sigint":
                os.kill(os.getpid(), signal.SIGINT)
            elif kind == "drift":  # this rank's parameters no longer those of the others
                self.net.params.data[0] += 1e-3
            else:
                raise RuntimeError(f"injected failure at step {step}")

    Trainer._train_work = step_with_fault


def stand_in_nccl(kind: str, rank: int) -> None:
    import time

    from distributed_helpers import FakeCupy, FakeNcclModule

    from convnet_gpu.distributed import nccl

    def this_rank() -> int:
        from mpi4py import MPI  # started by then: NCCL is set up after MPI

        return MPI.COMM_WORLD.Get_rank()

    def fail_on(what: str, where: str):
        if kind == what and this_rank() == rank:
            raise RuntimeError(f"NCCL error: unhandled system error (injected in {where})")

    class Device(FakeCupy.cuda.Device):
        def use(self):
            fail_on("nccl-device", "cudaSetDevice")

    class Cupy(FakeCupy):
        class cuda(FakeCupy.cuda):
            pass

    Cupy.cuda.Device = Device

    class Nccl(FakeNcclModule):
        @staticmethod
        def get_unique_id():
            fail_on("nccl-id", "ncclGetUniqueId")
            return ("unique", 42)

        class NcclCommunicator:
            def __init__(self, size, unique_id, rank):
                fail_on("nccl-join", "ncclCommInitRank")
                time.sleep(3600)  # the others wait for the rank that failed, as NCCL's do

    nccl.import_nccl = lambda: (Cupy, Nccl)


if __name__ == "__main__":
    fault = os.environ.get("CONVNET_GPU_TEST_FAULT")
    if fault:
        kind, rank, step = fault.split(":")
        if kind.startswith("nccl-"):
            stand_in_nccl(kind, int(rank))
        else:
            inject(kind, int(rank), int(step))
    sys.exit(cli.main(sys.argv[1:]))
