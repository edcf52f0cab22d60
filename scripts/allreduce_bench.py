"""What summing the flat gradient over ranks costs against a training step, measured at the
ranks it is launched on, and a projection to more ranks from the measured parts.

    mpiexec -n 2 python scripts/allreduce_bench.py [--models simple-cnn,mini-resnet]
        [--batch 64] [--steps 10] [--project 8]

Every rank builds the model (synthetic 1x28x28 Fashion-MNIST-shaped batches, float32, SGD with
momentum, the CPU with cores / local ranks threads) and, with a barrier before each timed
piece, measures the median of --steps repeats of:
  compute    forward + backward + optimizer step of its --batch rows, no collective
             (BatchNorm over the rank's own rows)
  all-reduce the SUM all-reduce of the flat gradient (distributed/mpi.py, as the Trainer does)
  step       the distributed step as `train --distributed mpi` runs it: forward and backward
             (BatchNorm's statistics synchronized: 3 small all-reduces per BatchNorm layer),
             the gradient's all-reduce, the optimizer step
  latency    the all-reduce of one float (what any collective costs at least)
Rank 0 prints them, the all-reduce's share of the step, and its bandwidth. The projection to
--project ranks, each with --batch rows (a global batch growing with the ranks), takes the
measured compute per rank as it is and a ring all-reduce over links as fast as the measured
one: a ring moves 2 (p - 1) / p of the gradient in and out of each rank in 2 (p - 1) steps, so
  all-reduce(p) = 2 (p - 1) / p * bytes / bandwidth + 2 (p - 1) * latency,
where bandwidth and latency come from the measured 2-rank figures. It is a model, not a
measurement: a real cluster's links, a GPU's NCCL and contention for memory differ.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from convnet_gpu import Net, SoftmaxCrossEntropy, build_model
from convnet_gpu.backends import NumpyBackend
from convnet_gpu.distributed import Local, batch_share, open_communicator
from convnet_gpu.machine import machine_cores, provenance, summary_line
from convnet_gpu.optim import SGD

INPUT_SHAPE, CLASSES = (1, 28, 28), 10


def timed(comm, job, repeats: int) -> float:
    """Median seconds of job() over `repeats`, every rank starting each one together; the
    slowest rank's time is the one that counts (a collective waits for it)."""
    times = []
    for _ in range(repeats):
        comm.barrier()
        start = time.perf_counter()
        job()
        times.append(time.perf_counter() - start)
    return max(comm.all_gather(statistics.median(times)))


def measure(comm, model: str, batch: int, steps: int) -> dict:
    threads = max(1, machine_cores() // comm.local_size)
    net = Net(build_model(model, CLASSES), SoftmaxCrossEntropy(), NumpyBackend(threads), seed=0)
    net.setup(batch, INPUT_SHAPE)
    optimizer = SGD(0.01, momentum=0.9).setup(net)
    rng = np.random.default_rng(comm.rank)
    net.load_batch(rng.standard_normal((batch, *INPUT_SHAPE)).astype(np.float32),
                   rng.integers(0, CLASSES, batch).astype(np.int32))  # fmt: skip
    grad, one = net.params.grad, np.zeros(1, np.float32)
    # This rank's block of the global batch (--batch rows per rank), as training passes it: the
    # loss divides by the global total, and synchronized BatchNorm counts every rank's rows.
    share = batch_share(batch * comm.size, comm.rank, comm.size)

    def compute():
        net.forward(batch, train=True)
        net.backward(batch)
        optimizer.step()

    def step():
        net.forward(batch, train=True, share=share)
        net.backward(batch)
        comm.all_reduce_sum(grad)
        optimizer.step()

    for _ in range(2):  # warm up: caches, compiled kernels, MPI's buffers
        step()
    net.span_ranks(Local())  # compute alone: BatchNorm's statistics of this rank's rows
    alone = timed(comm, compute, steps)
    net.span_ranks(comm)  # the step as training runs it: BatchNorm's sums over the ranks too
    return {
        "model": model,
        "parameters": net.params.size,
        "bytes": grad.nbytes,
        "threads": threads,
        "compute": alone,
        "allreduce": timed(comm, lambda: comm.all_reduce_sum(grad), steps),
        "step": timed(comm, step, steps),
        "latency": timed(comm, lambda: comm.all_reduce_sum(one), 5 * steps),
    }


def ring_allreduce(ranks: int, nbytes: int, bandwidth: float, latency: float) -> float:
    """Seconds of a ring all-reduce of nbytes over `ranks` (see the module docstring)."""
    return 2 * (ranks - 1) / ranks * nbytes / bandwidth + 2 * (ranks - 1) * latency


def report(row: dict, ranks: int, batch: int, project: int) -> list[str]:
    ms = lambda seconds: f"{seconds * 1e3:.2f} ms"
    # Measured at `ranks`: all-reduce = 2 (p-1)/p * bytes / bandwidth + 2 (p-1) * latency.
    per_hop_latency = row["latency"] / (2 * (ranks - 1))
    moved = 2 * (ranks - 1) / ranks * row["bytes"]
    bandwidth = moved / max(row["allreduce"] - row["latency"], 1e-9)
    projected = ring_allreduce(project, row["bytes"], bandwidth, per_hop_latency)
    projected_step = row["compute"] + projected
    return [
        f"{row['model']}: {row['parameters']} parameters ({row['bytes'] / 1e6:.1f} MB of "
        f"gradient), {batch} rows per rank, {row['threads']} thread(s) per rank",
        f"  measured at {ranks} ranks: compute {ms(row['compute'])}, all-reduce "
        f"{ms(row['allreduce'])} ({row['allreduce'] / row['step']:.1%} of the step), step "
        f"{ms(row['step'])}; latency {row['latency'] * 1e6:.1f} us, bandwidth "
        f"{bandwidth / 1e9:.2f} GB/s per rank",
        f"  PROJECTION to {project} ranks (a model from the measured parts, not a measurement): "
        f"all-reduce {ms(projected)}, step {ms(projected_step)} "
        f"({projected / projected_step:.1%} all-reduce), {project * batch / projected_step:.0f} "
        f"img/s against {ranks * batch / row['step']:.0f} measured at {ranks}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="simple-cnn,mini-resnet")
    parser.add_argument("--batch", type=int, default=64, help="rows per rank (default: 64)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--project", type=int, default=8, help="ranks to project to")
    args = parser.parse_args()
    comm = open_communicator("mpi")
    if comm.size < 2:
        raise SystemExit("launch it on 2 ranks or more: mpiexec -n 2 python " + __file__)
    rows = [measure(comm, model, args.batch, args.steps) for model in args.models.split(",")]
    if comm.is_root:
        print(f"{comm.describe()} on {summary_line(provenance())}")
        for row in rows:
            print("\n".join(report(row, comm.size, args.batch, args.project)))


if __name__ == "__main__":
    main()
