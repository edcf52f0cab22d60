"""Helpers of the distributed tests: tiny runs of `convnet-gpu train` in one process or as
ranks of an mpiexec launch, their checkpoints' arrays, and stand-ins for CuPy and NCCL."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from data_helpers import write_idx_dataset

from convnet_gpu import cli

REPO = Path(__file__).resolve().parents[1]
RANK_SCRIPT = Path(__file__).with_name("mpi_train.py")
LAUNCH_TIMEOUT = 120  # seconds: a launch that hangs (a rank waiting forever) fails the test


def mpiexec() -> str | None:
    """The mpiexec beside this Python (the mpich wheel's), else on PATH."""
    beside = Path(sys.executable).with_name("mpiexec")
    return str(beside) if beside.exists() else shutil.which("mpiexec")


def needs_mpi():
    missing = importlib.util.find_spec("mpi4py") is None
    return pytest.mark.skipif(
        missing or mpiexec() is None,
        reason="needs mpi4py and mpiexec: pip install 'convnet-gpu[mpi]'",
    )


# A simple-cnn in small: two conv-pool stages and two dense layers, on 28x28 images.
SMALL_CNN = """
[[layers]]
type = "conv"
out = 4
kernel = 3
pad = 1
{bn}
[[layers]]
type = "bias"
[[layers]]
type = "relu"
[[layers]]
type = "maxpool"
kernel = 2
[[layers]]
type = "conv"
out = 8
kernel = 3
pad = 1
[[layers]]
type = "bias"
[[layers]]
type = "relu"
[[layers]]
type = "maxpool"
kernel = 2
[[layers]]
type = "flatten"
{dropout}
[[layers]]
type = "dense"
out = 16
[[layers]]
type = "bias"
[[layers]]
type = "relu"
[[layers]]
type = "dense"
out = 10
[[layers]]
type = "bias"
"""


def small_cnn(folder: Path, regularized: bool = False, batchnorm: bool | None = None) -> Path:
    """The model file; regularized: BatchNorm after the first conv and Dropout before the dense
    layers (batchnorm: BatchNorm alone, or none, whatever `regularized` says)."""
    batchnorm = regularized if batchnorm is None else batchnorm
    bn = '[[layers]]\ntype = "batchnorm"\n' if batchnorm else ""
    dropout = '[[layers]]\ntype = "dropout"\np = 0.3\n' if regularized else ""
    path = folder / f"small-cnn{'-bn' if batchnorm else ''}{'-dropout' if regularized else ''}.toml"
    path.write_text(SMALL_CNN.format(bn=bn, dropout=dropout))
    return path


def small_dataset(folder: Path, train: int = 136, test: int = 30) -> Path:
    """A Fashion-MNIST-shaped data folder whose images depend on their label."""
    rng = np.random.default_rng(0)
    arrays = []
    for count in (train, test):
        labels = rng.integers(0, 10, count)
        arrays += [rng.integers(0, 60, (count, 28, 28)) + labels[:, None, None] * 19, labels]
    return write_idx_dataset(folder, *arrays)


def train_argv(data_dir: Path, model: Path, out: Path, *more) -> list[str]:
    return ["train", "--device", "cpu", "--threads", "1", "--data-dir", str(data_dir),
            "--model", str(model), "--out", str(out), "--no-progress", *more]  # fmt: skip


def train_alone(argv: list[str]) -> None:
    """The command in this process, which must succeed."""
    assert cli.main(argv) == 0


def launch(
    ranks: int, argv: list[str], fault: str | None = None, engine: str = "mpi"
) -> subprocess.CompletedProcess:
    """mpiexec -n RANKS of the command, each rank with --distributed ENGINE; waits for all."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("CONVNET_GPU_TEST_FAULT", None)
    if fault:
        env["CONVNET_GPU_TEST_FAULT"] = fault
    command = [mpiexec(), "-n", str(ranks), sys.executable, str(RANK_SCRIPT), *argv,
               "--distributed", engine]  # fmt: skip
    return run_launcher(command, env)


def run_launcher(command: list[str], env: dict) -> subprocess.CompletedProcess:
    """An mpiexec command line, waited for at most LAUNCH_TIMEOUT. It runs in a session of its
    own: on a timeout, mpiexec and every rank it started are killed together."""
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=env, cwd=REPO, start_new_session=True) as ranks:  # fmt: skip
        try:
            stdout, stderr = ranks.communicate(timeout=LAUNCH_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(ranks.pid, signal.SIGKILL)
            ranks.communicate()
            raise AssertionError(
                f"the ranks still ran after {LAUNCH_TIMEOUT} s: one waits forever"
            ) from None
    return subprocess.CompletedProcess(command, ranks.returncode, stdout, stderr)


def nccl_skip_reason(gpus_needed: int) -> str | None:
    """Why NCCL cannot run here on gpus_needed GPUs, or None when it can."""
    from helpers import cuda_skip_reason

    if cuda_skip_reason() is not None:
        return cuda_skip_reason()
    import cupy

    if cupy.cuda.runtime.getDeviceCount() < gpus_needed:
        return f"needs {gpus_needed} GPUs (NCCL refuses two ranks on one GPU)"
    try:
        from cupy.cuda import nccl
    except Exception as exc:
        return f"CuPy has no NCCL ({exc}): pip install 'convnet-gpu[nccl12]'"
    if not getattr(nccl, "available", True):
        return "CuPy finds no NCCL library: pip install 'convnet-gpu[nccl12]'"
    return None


def launch_ok(ranks: int, argv: list[str], engine: str = "mpi") -> subprocess.CompletedProcess:
    done = launch(ranks, argv, engine=engine)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def checkpoint_arrays(run_dir: Path) -> dict:
    with np.load(run_dir / "checkpoint.npz") as saved:
        return {key: saved[key] for key in saved.files if key != "meta"}


def assert_runs_close(a: Path, b: Path, atol: float) -> None:
    """The two runs' checkpoints: the parameters within atol, the optimizer state and
    BatchNorm's running statistics (some near 3) within atol relative too; atol 0: every array
    bit for bit."""
    first, second = checkpoint_arrays(a), checkpoint_arrays(b)
    assert first.keys() == second.keys()
    for key in first:
        if atol == 0:
            assert np.array_equal(first[key], second[key]), key
        else:
            rtol = 0 if key == "params" else atol
            np.testing.assert_allclose(first[key], second[key], rtol=rtol, atol=atol, err_msg=key)


# ---- stand-ins for CuPy and NCCL (no GPU here): what NcclCommunicator calls ----------------
class FakeNcclModule:
    NCCL_FLOAT32, NCCL_FLOAT64, NCCL_SUM = 7, 8, 0
    calls: list = []

    @staticmethod
    def get_unique_id():
        return ("unique", 42)

    class NcclCommunicator:
        def __init__(self, size, unique_id, rank):
            FakeNcclModule.calls.append(("init", size, unique_id, rank))

        def allReduce(self, send, recv, count, dtype, op, stream):  # NCCL's name
            FakeNcclModule.calls.append(("allReduce", send, recv, count, dtype, op, stream))

        def bcast(self, buffer, count, dtype, root, stream):
            FakeNcclModule.calls.append(("bcast", buffer, count, dtype, root, stream))


class FakeCupy:
    class cuda:  # CuPy's names
        used = []

        class runtime:
            @staticmethod
            def getDeviceCount():
                return 2

        class Device:
            def __init__(self, index):
                self.index = index

            def use(self):
                FakeCupy.cuda.used.append(self.index)

        @staticmethod
        def get_current_stream():
            class Stream:
                ptr = 1234

                def synchronize(self):
                    pass

            return Stream()
