"""The distributed pieces that run in one process: the single-process communicator, how a
batch is split over ranks, a net computing one share of a global batch, and the CLI's refusals.
(tests/test_distributed_mpi.py launches real ranks.)"""

from __future__ import annotations

import sys

import numpy as np
import pytest
from distributed_helpers import FakeCupy, FakeNcclModule, nccl_skip_reason
from test_cli import run_cli
from test_train import tiny_dataset

from convnet_gpu import Net, SoftmaxCrossEntropy
from convnet_gpu.augment import Jitter
from convnet_gpu.backends import NumpyBackend
from convnet_gpu.distributed import (
    BatchShare,
    Local,
    SetupFailed,
    batch_share,
    largest_share,
    open_communicator,
)
from convnet_gpu.distributed.nccl import nccl_dtype
from convnet_gpu.errors import UserError
from convnet_gpu.layers import (
    BatchNorm,
    Bias,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    MaxPool2D,
    ReLU,
)
from convnet_gpu.run import TrainingData
from convnet_gpu.settings import RunSettings, SettingError


# ---- the single-process communicator ------------------------------------------------------
def test_local_is_a_world_of_one_rank_whose_collectives_change_nothing():
    comm = open_communicator("none")
    assert isinstance(comm, Local)
    assert (comm.rank, comm.size, comm.local_rank, comm.local_size) == (0, 1, 0, 1)
    assert comm.is_root and comm.capturable
    grad = np.arange(5, dtype=np.float32)
    comm.all_reduce_sum(grad)
    comm.broadcast_array(grad)
    assert np.array_equal(grad, np.arange(5, dtype=np.float32))
    assert comm.any(True) and not comm.any(False)
    assert comm.all(True) and not comm.all(False)
    assert comm.all_gather({"a": 1}) == [{"a": 1}]
    assert comm.broadcast("x") == "x"
    comm.barrier()
    with pytest.raises(SystemExit) as exit_:
        comm.abort(3)
    assert exit_.value.code == 3


def test_an_unknown_engine_is_refused_by_name():
    with pytest.raises(SettingError, match="`distributed`: unknown 'gloo'"):
        open_communicator("gloo")


# ---- shares of a batch --------------------------------------------------------------------
@pytest.mark.parametrize("total, ranks", [(8, 2), (10, 3), (2, 3), (1, 2), (17, 4)])
def test_shares_are_contiguous_blocks_covering_the_batch_the_first_ranks_one_row_more(total, ranks):
    shares = [batch_share(total, rank, ranks) for rank in range(ranks)]
    assert shares[0].first == 0 and all(s.total == total for s in shares)
    for before, after in zip(shares, shares[1:]):
        assert after.first == before.first + before.rows  # contiguous, in rank order
        assert before.rows in (after.rows, after.rows + 1)  # the extra rows go first
    assert sum(s.rows for s in shares) == total
    assert max(s.rows for s in shares) == largest_share(total, ranks) == shares[0].rows


def test_a_short_batch_leaves_the_last_ranks_an_empty_share():
    assert batch_share(1, 1, 2) == BatchShare(1, 0, 1)
    assert [batch_share(2, r, 3).rows for r in range(3)] == [1, 1, 0]


def test_the_loader_gives_each_rank_its_block_of_every_batch_of_one_order():
    data = TrainingData.split(tiny_dataset(train=10), RunSettings(batch_size=4))
    loader, order = data.train, np.random.default_rng(0).permutation(10)
    whole = [labels.copy() for _, labels in loader.batches(order)]
    for ranks in (2, 3):
        parts = [[(labels.copy(), share) for _, labels, share in
                  loader.rank_batches(order, 0, rank, ranks)] for rank in range(ranks)]  # fmt: skip
        for index, batch in enumerate(whole):
            joined = np.concatenate([parts[rank][index][0] for rank in range(ranks)])
            assert np.array_equal(joined, batch)
            assert all(parts[rank][index][1].total == len(batch) for rank in range(ranks))


# ---- a net computing one share ------------------------------------------------------------
def small_net(backend, batch_size, batchnorm=False):
    layers = [Conv2D(4, 3, pad=1), *([BatchNorm()] if batchnorm else []), Bias(), ReLU(),
              MaxPool2D(2), Flatten(), Dropout(0.4), Dense(3), Bias()]  # fmt: skip
    net = Net(layers, SoftmaxCrossEntropy(), backend, seed=3)
    return net.setup(batch_size, (1, 12, 12))


@pytest.mark.parametrize("threads", [None, 2])
def test_a_share_of_a_batch_draws_dropout_and_divides_the_loss_as_the_whole_batch(threads):
    data = tiny_dataset(train=8)
    images, labels = data.train_x[:8], data.train_y[:8]

    def forward(rows: slice, share=None, batch_size=4):
        net = small_net(NumpyBackend(threads), batch_size)  # a fresh net: Dropout's step 0
        n = net.load_batch(images[rows], labels[rows])
        logits = net.backend.to_host(net.forward(n, train=True, share=share)).copy()
        return logits, float(net.loss.loss)

    whole_logits, whole_loss = forward(slice(0, 8), batch_size=8)
    head_logits, head_loss = forward(slice(0, 4), BatchShare(0, 4, 8))
    tail_logits, tail_loss = forward(slice(4, 8), BatchShare(4, 4, 8))
    assert np.array_equal(head_logits, whole_logits[:4])
    assert np.array_equal(tail_logits, whole_logits[4:])  # Dropout drew rows 4..7's masks
    assert head_loss + tail_loss == pytest.approx(whole_loss, rel=1e-6)
    alone_logits, _ = forward(slice(4, 8))  # the same rows as a batch of their own
    assert not np.array_equal(alone_logits, tail_logits)  # draw rows 0..3's masks


def test_jitter_of_a_share_is_its_rows_of_the_whole_batch_jitter():
    be = NumpyBackend()
    images = np.random.default_rng(0).standard_normal((6, 1, 8, 8)).astype(np.float32)
    jitter = Jitter(pad=2, flip=True, seed=5).setup(be, 6, (1, 8, 8), np.float32)
    whole = images.copy()
    jitter.apply(whole, 7)
    tail = images[2:].copy()
    jitter.apply(tail, 7, first=2)
    assert np.array_equal(tail, whole[2:])


def test_per_rank_batchnorm_refuses_a_batch_that_leaves_a_rank_no_rows():
    net = small_net(NumpyBackend(), 8, batchnorm=True)
    data = TrainingData.split(tiny_dataset(train=17), RunSettings(batch_size=8))
    data.check_last_batch(net, ranks=3)  # synchronized statistics: any share will do
    with pytest.raises(SettingError, match="`bn` local each of the 3 ranks"):
        data.check_last_batch(net, ranks=3, per_rank_statistics=True)


# ---- NCCL without a GPU ---------------------------------------------------------------------
@pytest.mark.skipif(
    nccl_skip_reason(1) is None, reason="a GPU and NCCL are here: open_communicator('nccl') starts"
)
def test_nccl_without_a_gpu_or_nccl_is_a_user_error_before_mpi_starts():
    with pytest.raises(UserError, match="`distributed` nccl"):
        open_communicator("nccl")


def test_nccl_data_types_by_dtype():
    class FakeNccl:
        NCCL_FLOAT32, NCCL_FLOAT64, NCCL_INT64 = 7, 8, 4

    assert nccl_dtype(FakeNccl, np.float32) == 7
    assert nccl_dtype(FakeNccl, "float64") == 8
    with pytest.raises(TypeError, match="not bool"):
        nccl_dtype(FakeNccl, np.bool_)


# ---- the CLI's refusals -------------------------------------------------------------------
def test_distributed_without_mpi4py_names_the_extra(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # an import of it fails
    code, _, err = run_cli(capsys, "train", "--device", "cpu", "--distributed", "mpi")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--distributed needs mpi4py" in err and "pip install 'convnet-gpu[mpi]'" in err


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--distributed", "nccl", "--device", "cpu"], "give --device cuda, not cpu"),
        (["--distributed", "nccl", "--device", "cuda:1"], "give --device cuda, not cuda:1"),
        (["--distributed", "mpi", "--cuda-graph", "on"], "drop --cuda-graph on"),
        (["--distributed", "gloo"], "invalid choice: 'gloo'"),
        (["--bn", "half"], "invalid choice: 'half'"),
    ],
)
def test_distributed_usage_errors_are_one_line(capsys, argv, fragment):
    code, _, err = run_cli(capsys, "train", *argv)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert fragment in err


# ---- a rank's device and threads ----------------------------------------------------------
class SecondRankOfTwo(Local):
    """What a rank's device and threads depend on: its place on its host."""

    rank = local_rank = 1
    size = local_size = 2

    def __init__(self, threads_may_call: bool = True):
        self.threads_may_call = threads_may_call


def test_a_rank_takes_the_gpu_of_its_local_rank_and_its_share_of_the_cores():
    from convnet_gpu.backends import cuda_problem
    from convnet_gpu.cli.ranks import rank_device, rank_threads
    from convnet_gpu.machine import machine_cores

    comm = SecondRankOfTwo()
    assert rank_device("cuda", comm) == "cuda:1"
    assert rank_device("cpu", comm) == "cpu"
    assert rank_device("cuda", Local()) == "cuda"  # alone: the device as given
    if cuda_problem(1) is not None:
        assert rank_device("auto", comm) == "cpu"  # no second GPU here: the CPU
    assert rank_threads(None, comm) == max(1, machine_cores() // 2)
    assert rank_threads(3, comm) == 3


@pytest.mark.parametrize("gpus", [1, 2])
def test_auto_takes_the_cpu_for_a_rank_whose_local_gpu_is_missing_not_gpu_0(
    monkeypatch, capsys, gpus
):
    import convnet_gpu.backends as backends
    from convnet_gpu.cli.ranks import rank_device

    asked = []

    def cuda_problem(index=0):  # a host with `gpus` GPUs
        asked.append(index)
        return None if index < gpus else f"no CUDA device {index}; use `device` cpu"

    monkeypatch.setattr(backends, "cuda_problem", cuda_problem)
    assert rank_device("auto", SecondRankOfTwo()) == ("cuda:1" if gpus == 2 else "cpu")
    assert asked == [1]  # the rank's own GPU, not GPU 0
    if gpus == 1:
        assert capsys.readouterr().out == "device auto: using the CPU (no CUDA device 1)\n"


def test_a_sweep_over_mpi_takes_cuda_graph_on_which_training_over_ranks_refuses():
    import argparse

    from convnet_gpu.cli.common import UsageError
    from convnet_gpu.cli.ranks import check_rank_flags

    args = argparse.Namespace(distributed="mpi", cuda_graph="on", device="auto")
    check_rank_flags(args, "sweep")  # its points train alone, with Local: steps can be captured
    with pytest.raises(UsageError, match="drop --cuda-graph on"):
        check_rank_flags(args, "train")


def test_an_mpi_taking_calls_from_the_main_thread_only_keeps_a_rank_on_one_thread():
    from convnet_gpu.cli.common import UsageError
    from convnet_gpu.cli.ranks import rank_threads

    comm = SecondRankOfTwo(threads_may_call=False)
    assert rank_threads(None, comm) == 1
    with pytest.raises(UsageError, match="drop --threads 2"):
        rank_threads(2, comm)


def test_mpi4py_and_cupy_are_imported_only_when_an_engine_asks_for_them():
    import subprocess

    script = ("import sys; import convnet_gpu.train, convnet_gpu.cli, convnet_gpu.distributed; "
              "convnet_gpu.distributed.open_communicator('none'); "
              "print(sorted(m for m in ('mpi4py', 'cupy') if m in sys.modules))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.stdout.strip() == "[]", done.stderr


# ---- NCCL's calls, with stand-ins for CuPy and NCCL (no GPU here) --------------------------
class DeviceArray:
    """What NCCL is handed of a CuPy array: its pointer, size and dtype."""

    def __init__(self, ptr, size, dtype):
        self.data = type("Memory", (), {"ptr": ptr})()
        self.size, self.dtype = size, np.dtype(dtype)


class SecondHostRank(Local):
    """The MPI side of rank 3 of 4, the second of two on its host."""

    rank, size, local_rank, local_size = 3, 4, 1, 2
    host_reduced = []

    def all_gather(self, obj):
        return [obj] * self.size

    def all_reduce_sum(self, array):
        SecondHostRank.host_reduced.append(array)


def test_nccl_joins_with_rank_0s_id_takes_its_local_gpu_and_reduces_on_the_current_stream(
    monkeypatch,
):
    from convnet_gpu.distributed import nccl as nccl_module

    FakeNcclModule.calls.clear()
    monkeypatch.setattr(nccl_module, "import_nccl", lambda: (FakeCupy, FakeNcclModule))
    comm = nccl_module.NcclCommunicator(control=SecondHostRank())
    assert (comm.rank, comm.size, comm.device) == (3, 4, "cuda:1")
    assert FakeCupy.cuda.used[-1] == 1
    # rank 3 is not the root: it joins with rank 0's id as gathered (Local's: its own None)
    assert FakeNcclModule.calls[0] == ("init", 4, None, 3)
    comm.all_reduce_sum(DeviceArray(ptr=99, size=6802, dtype=np.float32))
    assert FakeNcclModule.calls[-1] == ("allReduce", 99, 99, 6802, 7, 0, 1234)  # in place
    comm.broadcast_array(DeviceArray(ptr=55, size=8, dtype=np.float64))
    assert FakeNcclModule.calls[-1] == ("bcast", 55, 8, 8, 0, 1234)
    figures = np.zeros(2)
    comm.all_reduce_sum(figures)  # host arrays: over MPI
    assert SecondHostRank.host_reduced[-1] is figures


def test_nccl_refuses_more_ranks_on_a_host_than_it_has_gpus(monkeypatch):
    from convnet_gpu.distributed import nccl as nccl_module

    class ThreeOnAHost(SecondHostRank):
        local_size = 3

    monkeypatch.setattr(nccl_module, "import_nccl", lambda: (FakeCupy, FakeNcclModule))
    with pytest.raises(SetupFailed, match="one GPU per rank.*2 on rank 3's host") as failed:
        nccl_module.NcclCommunicator(control=ThreeOnAHost())
    assert failed.value.together  # every rank learns it from the all_gather


@pytest.mark.parametrize("where, together", [("use", True), ("get_unique_id", True),
                                             ("NcclCommunicator", False)])  # fmt: skip
def test_nccl_failing_to_start_says_whether_the_ranks_fail_together(monkeypatch, where, together):
    from convnet_gpu.distributed import nccl as nccl_module

    def broken(*args):
        raise RuntimeError("NCCL error:\n unhandled system error")

    class Root(SecondHostRank):
        rank = local_rank = 0  # rank 0 draws the id; the 3 others start well

        def all_gather(self, obj):
            return [obj] + [(None, None)] * (self.size - 1)

    nccl = FakeNcclModule
    if where == "use":  # the rank's GPU
        monkeypatch.setattr(FakeCupy.cuda.Device, "use", broken)
    else:
        nccl = type("Nccl", (FakeNcclModule,), {where: staticmethod(broken)})
    monkeypatch.setattr(nccl_module, "import_nccl", lambda: (FakeCupy, nccl))
    with pytest.raises(SetupFailed) as failed:
        nccl_module.NcclCommunicator(control=Root())
    assert failed.value.together == together and isinstance(failed.value.control, Root)
    line = "RuntimeError: NCCL error: unhandled system error"  # one line
    assert str(failed.value) == (
        f"`distributed` nccl could not start on rank 0: {line}" if together
        else f"`distributed` nccl could not join the other ranks ({line})"
    )  # fmt: skip


@pytest.mark.parametrize("command", ["train", "sweep"])
def test_an_mpi_launch_without_distributed_is_refused(capsys, monkeypatch, tmp_path, command):
    monkeypatch.setenv("PMI_SIZE", "2")  # what mpiexec -n 2 tells each process
    (tmp_path / "grid.toml").write_text("[grid]\nlr = [0.1]\n")
    argv = (
        ["train", "--device", "cpu"]
        if command == "train"
        else ["sweep", str(tmp_path / "grid.toml")]
    )
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"one of 2 processes, each of which would {command} alone" in err
    assert "add --distributed mpi" in err
