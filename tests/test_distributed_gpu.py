"""NCCL on GPUs: the one-rank path where a GPU is at hand, two ranks where two GPUs are (NCCL
refuses two ranks on one GPU). Skipped, with the reason, anywhere else."""

from __future__ import annotations

import os
import sys

import pytest
from distributed_helpers import (
    REPO,
    assert_runs_close,
    launch_ok,
    mpiexec,
    nccl_skip_reason,
    needs_mpi,
    run_launcher,
    small_cnn,
    small_dataset,
    train_alone,
    train_argv,
)

pytestmark = [pytest.mark.gpu, needs_mpi()]


ONE_RANK = """
import cupy, numpy as np
from convnet_gpu.distributed import open_communicator
comm = open_communicator("nccl")
assert (comm.rank, comm.size, comm.device) == (0, 1, "cuda:0")
values = cupy.arange(5, dtype=cupy.float32)
comm.all_reduce_sum(values)
comm.broadcast_array(values)
host = np.ones(3)
comm.all_reduce_sum(host)
assert np.array_equal(cupy.asnumpy(values), np.arange(5)) and np.array_equal(host, np.ones(3))
assert comm.any(True) and comm.all_gather(7) == [7]
print("one rank ok")
"""


def test_one_nccl_rank_reduces_and_broadcasts_device_arrays_in_place():
    reason = nccl_skip_reason(1)
    if reason:
        pytest.skip(reason)
    done = run_launcher([mpiexec(), "-n", "1", sys.executable, "-c", ONE_RANK],
                        dict(os.environ, PYTHONPATH=str(REPO)))  # fmt: skip
    assert done.returncode == 0 and "one rank ok" in done.stdout, done.stderr[-2000:]


def test_two_nccl_ranks_train_as_one_gpu(tmp_path):
    reason = nccl_skip_reason(2)
    if reason:
        pytest.skip(reason)
    data_dir = small_dataset(tmp_path / "data")
    model = small_cnn(tmp_path, regularized=True)
    argv = lambda out, device: [*train_argv(data_dir, model, tmp_path / out, "--epochs", "1",
                                            "--batch-size", "8", "--train-subset", "128",
                                            "--jitter", "2"), "--device", device]  # fmt: skip
    train_alone([*argv("alone", "cuda"), "--cuda-graph", "off"])
    done = launch_ok(2, [*argv("ranks", "cuda")], engine="nccl")
    assert "x 2 ranks (nccl)" in done.stdout
    assert_runs_close(tmp_path / "alone", tmp_path / "ranks", atol=1e-5)
