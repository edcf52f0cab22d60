"""`convnet-gpu` as one rank of an mpiexec launch, for tests/test_distributed_mpi.py, with a
fault injected where CONVNET_GPU_TEST_FAULT="KIND:RANK:STEP" says: during the STEP-th training
step (1-based) rank RANK gets a SIGINT (KIND sigint: a Ctrl-C on one rank), raises (KIND raise:
a rank that fails alone) or changes a parameter (KIND drift: ranks whose parameters differ).
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


if __name__ == "__main__":
    fault = os.environ.get("CONVNET_GPU_TEST_FAULT")
    if fault:
        kind, rank, step = fault.split(":")
        inject(kind, int(rank), int(step))
    sys.exit(cli.main(sys.argv[1:]))
