"""Training as ranks of an mpiexec launch equals training in one process: the same parameters
(to float rounding, or bit for bit against one process that sums the same half-batches), the
same run after a stop and a resume on any number of ranks, and every rank stopping together.

Each test launches `convnet-gpu train --distributed mpi` (tests/mpi_train.py) on 2 or 3 ranks
with tiny data, one thread per rank."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from distributed_helpers import (
    assert_runs_close,
    checkpoint_arrays,
    launch,
    launch_ok,
    needs_mpi,
    small_cnn,
    small_dataset,
    train_alone,
    train_argv,
)

from convnet_gpu import cli
from convnet_gpu.backends import NumpyBackend
from convnet_gpu.checkpoint import read_checkpoint
from convnet_gpu.distributed import batch_share
from convnet_gpu.position import Position
from convnet_gpu.run import build_net, build_run_optimizer, load_dataset
from convnet_gpu.settings import RunSettings

pytestmark = needs_mpi()

BATCH = 8


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return small_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture
def models(tmp_path):
    return {
        "plain": small_cnn(tmp_path),
        "regularized": small_cnn(tmp_path, regularized=True),
        "batchnorm": small_cnn(tmp_path, batchnorm=True),
    }


def test_two_ranks_of_half_batches_equal_one_process_after_16_sgd_steps(data_dir, models, tmp_path):
    argv = lambda out: train_argv(data_dir, models["plain"], tmp_path / out, "--epochs", "1",
                                  "--batch-size", str(BATCH), "--train-subset", "128")  # fmt: skip
    train_alone(argv("alone"))
    done = launch_ok(2, argv("ranks"))
    assert_runs_close(tmp_path / "alone", tmp_path / "ranks", atol=1e-6)
    assert "x 2 ranks (mpi)" in done.stdout  # rank 0's header; the other rank printed nothing
    assert done.stdout.count("test accuracy") == 1
    meta, _ = read_checkpoint(tmp_path / "ranks")
    assert meta["position"]["step"] == 16


@pytest.mark.parametrize("threads", ["1", "2"])  # 2: each rank's rows split over 2 threads
def test_sync_batchnorm_dropout_and_jitter_draw_and_normalize_as_one_process(
    data_dir, models, tmp_path, threads
):
    argv = lambda out: train_argv(data_dir, models["regularized"], tmp_path / out, "--epochs", "1",
                                  "--batch-size", str(BATCH), "--train-subset", "128",
                                  "--jitter", "2", "--threads", threads)  # fmt: skip
    train_alone(argv("alone"))
    launch_ok(2, argv("ranks"))
    assert_runs_close(tmp_path / "alone", tmp_path / "ranks", atol=1e-6)
    # the running statistics are part of the comparison: they agree with one process's
    assert "layer1.running_var" in checkpoint_arrays(tmp_path / "ranks")


def halves_summed_in_one_process(data_dir, settings: RunSettings, steps: int) -> np.ndarray:
    """The parameters after `steps` steps of one process that computes each global batch as
    two half-batches (each as its rank would: its rows, the loss over the whole batch) and
    adds their gradients before the optimizer: the ranks' arithmetic, without MPI."""
    dataset = load_dataset(settings.dataset, data_dir, settings.train_subset)
    net = build_net(settings, NumpyBackend(threads=1), dataset, BATCH // 2)
    optimizer = build_run_optimizer(settings, net)
    order = Position.start(settings.seed).draw_order(len(dataset.train_y))
    grad = net.params.grad
    for step in range(steps):
        batch = order[step * BATCH : (step + 1) * BATCH]
        for rank in (0, 1):
            share = batch_share(len(batch), rank, 2)
            rows = batch[share.first : share.first + share.rows]
            net.load_batch(dataset.train_x[rows], dataset.train_y[rows])
            net.forward(share.rows, train=True, share=share)
            if rank == 0:
                net.backward(share.rows)
                first_half = grad.copy()
            else:
                net.backward(share.rows)
                np.add(first_half, grad, out=grad)  # rank 0's + rank 1's, as MPI's sum
        optimizer.step()
    return net.backend.to_host(net.params.data)


@pytest.mark.parametrize(
    "model, more",
    [
        ("plain", ["--optimizer", "sgd"]),
        ("plain", ["--optimizer", "adam", "--max-grad-norm", "0.05", "--lr", "0.001"]),
        # per-rank BatchNorm statistics: each half normalized alone, as one process does it
        ("batchnorm", ["--optimizer", "sgd", "--bn", "local"]),
    ],
)
def test_two_ranks_equal_one_process_summing_the_same_halves_bit_for_bit(
    data_dir, models, tmp_path, model, more
):
    steps = 16
    argv = train_argv(data_dir, models[model], tmp_path / "ranks", "--epochs", "1",
                      "--batch-size", str(BATCH), "--train-subset", str(steps * BATCH),
                      "--schedule", "constant", *more)  # fmt: skip
    launch_ok(2, argv)
    meta, _ = read_checkpoint(tmp_path / "ranks")
    settings = RunSettings.from_meta(meta["settings"])
    expected = halves_summed_in_one_process(data_dir, settings, steps)
    assert np.array_equal(checkpoint_arrays(tmp_path / "ranks")["params"], expected)


def test_ctrl_c_on_one_rank_stops_all_at_one_step_and_the_run_resumes_on_1_2_or_3_ranks(
    data_dir, models, tmp_path
):
    argv = lambda out: train_argv(data_dir, models["regularized"], tmp_path / out, "--epochs", "1",
                                  "--batch-size", str(BATCH), "--train-subset", "80",
                                  "--jitter", "2")  # fmt: skip
    launch_ok(2, argv("straight"))
    stopped = launch(2, argv("stopped"), fault="sigint:1:5")  # Ctrl-C on rank 1 in step 5
    assert stopped.returncode == 130, stopped.stderr[-2000:]
    assert "interrupted in epoch 1 after batch 5" in stopped.stderr
    meta, _ = read_checkpoint(tmp_path / "stopped")  # loadable, and at step 5 on every rank
    assert meta["position"]["step"] == 5
    for name in ("alone", "two", "three"):
        shutil.copytree(tmp_path / "stopped", tmp_path / name)
    resume = lambda name: [
        "train", "--device", "cpu", "--threads", "1", "--no-progress",
        "--data-dir", str(data_dir), "--resume", str(tmp_path / name),
    ]  # fmt: skip
    launch_ok(2, resume("two"))
    assert_runs_close(tmp_path / "straight", tmp_path / "two", atol=0)
    train_alone(resume("alone"))
    assert_runs_close(tmp_path / "straight", tmp_path / "alone", atol=1e-5)
    launch_ok(3, resume("three"))
    assert_runs_close(tmp_path / "straight", tmp_path / "three", atol=1e-5)


def test_a_resumed_run_keeps_its_per_rank_batchnorm_and_refuses_another(
    data_dir, models, tmp_path, capsys
):
    argv = lambda out: train_argv(data_dir, models["batchnorm"], tmp_path / out, "--epochs", "1",
                                  "--batch-size", str(BATCH), "--train-subset", "80",
                                  "--bn", "local")  # fmt: skip
    launch_ok(2, argv("straight"))
    stopped = launch(2, argv("stopped"), fault="sigint:1:5")
    assert stopped.returncode == 130, stopped.stderr[-2000:]
    resume = ["train", "--device", "cpu", "--threads", "1", "--no-progress",
              "--data-dir", str(data_dir), "--resume", str(tmp_path / "stopped")]  # fmt: skip
    assert cli.main([*resume, "--bn", "sync"]) == 2  # in this process (no MPI): refused alike
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "trained with --bn local; drop --bn sync" in err
    done = launch_ok(2, resume)  # no --bn: the run's own
    assert "BatchNorm local" in done.stdout
    assert_runs_close(tmp_path / "straight", tmp_path / "stopped", atol=0)


@pytest.mark.parametrize("ranks", [2, 3])
def test_a_short_last_batch_leaves_ranks_without_rows_that_still_join(
    data_dir, models, tmp_path, ranks
):
    # 17 images in batches of 8: the last batch has 1 row, so ranks 1 (and 2) hold none of it.
    argv = lambda out: train_argv(data_dir, models["regularized"], tmp_path / out, "--epochs", "2",
                                  "--batch-size", str(BATCH), "--train-subset", "17",
                                  "--jitter", "1")  # fmt: skip
    train_alone(argv("alone"))
    launch_ok(ranks, argv("ranks"))
    assert_runs_close(tmp_path / "alone", tmp_path / "ranks", atol=1e-6)
    alone = [json.loads(line) for line in (tmp_path / "alone/metrics.jsonl").open()]
    ranked = [json.loads(line) for line in (tmp_path / "ranks/metrics.jsonl").open()]
    for one, other in zip(alone, ranked):  # the figures are summed over the ranks
        assert other["test_accuracy"] == one["test_accuracy"]
        assert other["train_loss"] == pytest.approx(one["train_loss"], rel=1e-5)


def test_ranks_without_rows_of_the_last_test_batch_still_evaluate_as_one_process(
    tmp_path_factory, models, tmp_path
):
    # 25 test images in batches of 8: the last test batch has 1 row, ranks 1 and 2 hold none
    data_dir = small_dataset(tmp_path_factory.mktemp("data25"), train=24, test=25)
    argv = lambda out: train_argv(data_dir, models["regularized"], tmp_path / out, "--epochs", "2",
                                  "--batch-size", str(BATCH))  # fmt: skip
    train_alone(argv("alone"))
    launch_ok(3, argv("ranks"))
    alone = [json.loads(line) for line in (tmp_path / "alone/metrics.jsonl").open()]
    ranked = [json.loads(line) for line in (tmp_path / "ranks/metrics.jsonl").open()]
    assert len(alone) == len(ranked) == 2
    for one, other in zip(alone, ranked):
        assert other["test_accuracy"] == one["test_accuracy"]  # counts: exact
        assert other["test_loss"] == pytest.approx(one["test_loss"], rel=1e-5)
    assert_runs_close(tmp_path / "alone", tmp_path / "ranks", atol=1e-6)


def test_a_rank_that_raises_ends_every_rank_and_the_checkpoint_stays_loadable(
    data_dir, models, tmp_path
):
    # epochs of 4 steps: rank 1 fails in step 6, after epoch 1's checkpoint
    argv = train_argv(data_dir, models["plain"], tmp_path / "run", "--epochs", "2",
                      "--batch-size", str(BATCH), "--train-subset", "32")  # fmt: skip
    failed = launch(2, argv, fault="raise:1:6")  # within LAUNCH_TIMEOUT, or the test fails
    assert failed.returncode != 0
    assert "rank 1: injected failure at step 6; ending every rank" in failed.stderr
    meta, _ = read_checkpoint(tmp_path / "run")
    assert meta["position"]["step"] == 4


def test_a_sweep_spreads_its_points_over_the_ranks_and_rank_0_writes_the_table(
    data_dir, models, tmp_path
):
    grid = tmp_path / "grid.toml"
    grid.write_text(f'[base]\nmodel = "{models["plain"]}"\nepochs = 1\nbatch_size = 8\n'
                    f"train_subset = 16\n[grid]\nlr = [0.01, 0.02, 0.05]\n")  # fmt: skip
    done = launch_ok(2, ["sweep", str(grid), "--device", "cpu", "--data-dir", str(data_dir),
                         "--out", str(tmp_path / "sweep")])  # fmt: skip
    table = json.loads((tmp_path / "sweep/sweep.json").read_text())
    assert [(run["name"], run["rank"], run["status"]) for run in table["runs"]] == [
        ("lr-0.01", 0, "done"), ("lr-0.02", 1, "done"), ("lr-0.05", 0, "done")
    ]  # fmt: skip
    assert done.stdout.count("wrote") == 3  # rank 0's two runs and its table; rank 1 is silent


def test_ranks_whose_parameters_drift_apart_all_stop_before_saving(data_dir, models, tmp_path):
    argv = train_argv(data_dir, models["plain"], tmp_path / "run", "--epochs", "2",
                      "--batch-size", str(BATCH), "--train-subset", "32")  # fmt: skip
    drifted = launch(2, argv, fault="drift:1:2")
    assert drifted.returncode == 1
    assert "the ranks' parameters differ after epoch 1" in drifted.stderr
    assert "lower --lr" not in drifted.stderr  # not a divergence a learning rate fixes
    assert not (tmp_path / "run/checkpoint.npz").exists()  # never saved


def test_validation_early_stopping_and_the_plateau_rule_decide_as_one_process(
    data_dir, models, tmp_path
):
    argv = lambda out: train_argv(data_dir, models["regularized"], tmp_path / out, "--epochs", "4",
                                  "--batch-size", str(BATCH), "--train-subset", "40",
                                  "--val-split", "0.25", "--early-stop", "1", "--plateau",
                                  "--lr", "0.2")  # fmt: skip
    train_alone(argv("alone"))
    launch_ok(2, argv("ranks"))
    alone = json.loads((tmp_path / "alone/summary.json").read_text())
    ranked = json.loads((tmp_path / "ranks/summary.json").read_text())
    # epoch 2's validation accuracy falls: the plateau rule restores epoch 1's state, and
    # early stopping (patience 1) ends the run there, on every rank
    assert alone["stopped_early"] and alone["epochs_run"] == 2
    assert (ranked["epochs_run"], ranked["stopped_early"]) == (2, True)
    metrics = lambda run: [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").open()]
    assert [m["val_accuracy"] for m in metrics("ranks")] == [
        m["val_accuracy"] for m in metrics("alone")
    ]
    assert_runs_close(tmp_path / "alone", tmp_path / "ranks", atol=1e-5)


@pytest.mark.parametrize(
    "fault, together",
    [
        ("nccl-id:0:0", True),  # rank 0 cannot draw NCCL's unique id
        ("nccl-device:1:0", True),  # rank 1 cannot take its GPU
        ("nccl-join:1:0", False),  # rank 1 cannot join; rank 0 waits inside NCCL's start-up
    ],
)
def test_nccl_failing_to_start_on_one_rank_ends_every_rank_with_one_line(
    data_dir, models, tmp_path, fault, together
):
    # CuPy and NCCL are stand-ins (tests/mpi_train.py): no GPU is needed to reach these paths
    argv = [*train_argv(data_dir, models["plain"], tmp_path / "run"), "--device", "cuda"]
    failed = launch(2, argv, fault=fault, engine="nccl")  # within LAUNCH_TIMEOUT, or it fails
    assert "Traceback" not in failed.stderr, failed.stderr[-2000:]
    ours = [line for line in failed.stderr.splitlines() if line.startswith("convnet-gpu")]
    assert len(ours) == 1, failed.stderr[-2000:]
    rank = fault.split(":")[1]
    if together:  # agreed over MPI: rank 0 says it, every rank exits 2
        assert failed.returncode == 2 and failed.stderr.strip() == ours[0]
        assert ours[0].startswith(f"convnet-gpu train: error: --distributed nccl could not "
                                  f"start on rank {rank}: RuntimeError: NCCL error")  # fmt: skip
    else:  # the rank that failed says it and aborts the job
        assert failed.returncode != 0
        assert ours[0].startswith(f"convnet-gpu train: rank {rank}: --distributed nccl could "
                                  f"not join the other ranks (RuntimeError")  # fmt: skip
        assert ours[0].endswith("; ending every rank")
    assert not (tmp_path / "run").exists()  # no rank got as far as the run folder
