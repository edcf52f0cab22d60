"""convnet-gpu sweep: a grid of train flags planned (sweep.py) and trained, one run folder each,
continued when run again, shared between MPI processes with --distributed mpi."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from data_helpers import write_idx_dataset

from convnet_gpu import cli, sweep
from convnet_gpu.cli.sweep_command import _train_parser
from convnet_gpu.errors import UserError


def plan(text: str):
    import tomllib

    return sweep.plan(tomllib.loads(text), _train_parser(), source="s.toml")


# ---- planning ---------------------------------------------------------------------------------
def test_the_grid_expands_in_order_with_the_shared_flags():
    points = plan(
        '[train]\nepochs = 1\nmodel = "m.toml"\n[grid]\nlr = [0.1, 0.2]\nbatch_size = [8, 16]'
    )
    assert [point.values for point in points] == [
        {"lr": 0.1, "batch-size": 8}, {"lr": 0.1, "batch-size": 16},
        {"lr": 0.2, "batch-size": 8}, {"lr": 0.2, "batch-size": 16},
    ]  # fmt: skip
    assert [point.name for point in points][:2] == ["000-lr=0.1,batch-size=8",
                                                    "001-lr=0.1,batch-size=16"]  # fmt: skip
    assert points[3].argv(Path("o/r")) == [
        "train", "--epochs", "1", "--model", "m.toml", "--lr", "0.2", "--batch-size", "16",
        "--out", "o/r",
    ]  # fmt: skip


def test_booleans_and_a_resumed_run():
    points = plan(
        '[train]\ndevice = "cpu"\nepochs = 3\n[grid]\nflip = [true, false]\nplateau = [true, false]'
    )
    argvs = [point.argv(Path("r"))[1:-2] for point in points]
    assert argvs == [
        ["--device", "cpu", "--epochs", "3", "--flip", "--plateau"],
        ["--device", "cpu", "--epochs", "3", "--flip"],  # an on-only flag: false leaves it off
        ["--device", "cpu", "--epochs", "3", "--no-flip", "--plateau"],
        ["--device", "cpu", "--epochs", "3", "--no-flip"],
    ]
    # resumed: the saved settings, given again only what is not a setting
    assert points[0].argv(Path("r"), resume=True) == ["train", "--resume", "r", "--device", "cpu"]


def test_a_name_is_safe_as_a_folder():
    (point,) = plan('[grid]\nmodel = ["../models/a b.toml"]')
    assert point.name == "000-model=.._models_a_b.toml"


def test_each_rank_takes_every_size_th_run():
    points = plan("[grid]\nlr = [1, 2, 3, 4, 5]")
    assert [p.index for p in sweep.share(points, 1, 2)] == [1, 3]
    assert [p.index for p in sweep.share(points, 0, 3)] == [0, 3]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[train]\nepochs = 1", r"no \[grid\] table"),
        ("[grid]\nlr = []", r"\[grid\] lr must be a non-empty list"),
        ("[grid]\nlr = 0.1", r"\[grid\] lr must be a non-empty list"),
        ("[grid]\nlearning_rate = [0.1]", "'learning_rate', which is not a `convnet-gpu train`"),
        ("[grid]\nout = ['a']", "sets out; the sweep chooses each run's folder"),
        ("[train]\nresume = 'a'\n[grid]\nlr = [1]", "sets resume"),
        ("[train]\nlr = 1\n[grid]\nlr = [1]", r"lr is in \[train\] and in \[grid\]"),
        ("[grid]\nlr = [[1]]", r"lr = \[1\]: give a string or a number"),
        ("[sweep]\n[grid]\nlr = [1]", r"unknown table \[sweep\]"),
        ("grid = 3", r"no \[grid\] table"),
    ],
)
def test_a_bad_config_is_one_line_naming_it(text, message):
    with pytest.raises(UserError, match=message):
        plan(text)


# ---- the command ------------------------------------------------------------------------------
@pytest.fixture
def data_dir(tmp_path):
    rng = np.random.default_rng(0)

    def images(count):
        labels = rng.integers(0, 10, count)
        pixels = rng.integers(0, 60, (count, 28, 28)) + labels[:, None, None] * 19
        return pixels.astype(np.uint8), labels.astype(np.uint8)

    return write_idx_dataset(tmp_path / "data", *images(64), *images(24))


def config(tmp_path, data_dir, grid="lr = [0.01, 0.05]", name="s.toml"):
    path = tmp_path / name
    path.write_text(f'[train]\ndevice = "cpu"\ndata-dir = "{data_dir}"\nepochs = 1\n'
                    f"batch-size = 32\nthreads = 1\n[grid]\n{grid}\n")  # fmt: skip
    return path


def sweep_cli(capsys, *argv):
    code = cli.main(["sweep", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_sweep_trains_each_run_and_writes_one_table(tmp_path, data_dir, capsys):
    out = tmp_path / "out"
    code, printed, err = sweep_cli(capsys, config(tmp_path, data_dir), "--out", out)
    assert (code, err) == (0, "")
    rows = json.loads((out / "sweep.json").read_text())
    assert [(row["run"], row["lr"], row["status"]) for row in rows] == [
        ("000-lr=0.01", 0.01, "ok"), ("001-lr=0.05", 0.05, "ok")
    ]  # fmt: skip
    for row in rows:
        summary = json.loads((out / row["run"] / "summary.json").read_text())
        assert summary["lr"] == row["lr"] and summary["test_accuracy"] == row["test_accuracy"]
        assert "test accuracy" in (out / row["run"] / "train.log").read_text()
    assert "run 000-lr=0.01: ok in" in printed and "test acc" in printed
    # again: both runs kept, not trained twice, the same table
    before = {row["run"]: (out / row["run"] / "checkpoint.npz").read_bytes() for row in rows}
    code, printed, _ = sweep_cli(capsys, config(tmp_path, data_dir), "--out", out)
    assert code == 0 and printed.count("done before, kept") == 2
    assert json.loads((out / "sweep.json").read_text()) == rows
    assert before == {run: (out / run / "checkpoint.npz").read_bytes() for run in before}


def test_a_run_with_a_checkpoint_and_no_summary_is_resumed(tmp_path, data_dir, capsys):
    """A run whose summary is missing but whose checkpoint is there continues with --resume
    (here killed after its last checkpoint: the resume finds it complete)."""
    out = tmp_path / "out"
    path = (
        config(tmp_path, data_dir, grid="lr = [0.01]")
        .read_text()
        .replace("epochs = 1", "epochs = 2")
    )
    (tmp_path / "s.toml").write_text(path)
    assert sweep_cli(capsys, tmp_path / "s.toml", "--out", out)[0] == 0
    run = out / "000-lr=0.01"
    finished = json.loads((run / "summary.json").read_text())
    (run / "summary.json").unlink()  # as if killed after its last checkpoint
    code, printed, _ = sweep_cli(capsys, tmp_path / "s.toml", "--out", out)
    assert code == 0 and "is complete" in (run / "train.log").read_text()  # resumed, not redone
    (row,) = json.loads((out / "sweep.json").read_text())
    assert row["status"] == "ok" and row["epochs_run"] == 2  # from its metrics
    assert row["test_accuracy"] == finished["test_accuracy"]


def test_a_bad_value_is_refused_before_any_run_trains(tmp_path, data_dir, capsys):
    out = tmp_path / "out"
    code, _, err = sweep_cli(capsys, config(tmp_path, data_dir, "lr = [0.01, -1]"), "--out", out)
    assert code == 2 and not out.exists()
    assert err.count("\n") == 1 and "run 001-lr=-1: argument --lr: must be" in err


def test_a_folder_of_another_sweep_is_refused(tmp_path, data_dir, capsys):
    out = tmp_path / "out"
    assert sweep_cli(capsys, config(tmp_path, data_dir, "lr = [0.01]"), "--out", out)[0] == 0
    other = config(tmp_path, data_dir, "lr = [0.02]", name="t.toml")
    code, _, err = sweep_cli(capsys, other, "--out", out)
    assert code == 2 and "holds a sweep of another config" in err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    code, _, err = sweep_cli(capsys, other, "--out", tmp_path / "full")
    assert code == 2 and "is not empty and holds no sweep" in err


def test_a_failed_run_is_in_the_table_and_the_exit_status(tmp_path, data_dir, capsys):
    out = tmp_path / "out"
    grid = 'model = ["simple-cnn", "missing.toml"]'
    code, printed, err = sweep_cli(capsys, config(tmp_path, data_dir, grid), "--out", out)
    rows = json.loads((out / "sweep.json").read_text())
    assert code == 1 and [row["status"] for row in rows] == ["ok", "refused"]
    assert "missing.toml" in err and "refused" in printed


def test_an_mpi_launch_without_distributed_is_refused(tmp_path, data_dir, capsys, monkeypatch):
    monkeypatch.setenv("PMI_SIZE", "2")
    code, _, err = sweep_cli(capsys, config(tmp_path, data_dir), "--out", tmp_path / "out")
    assert code == 2 and "add --distributed mpi" in err and not (tmp_path / "out").exists()


def test_two_mpi_processes_share_the_runs(tmp_path, data_dir):
    pytest.importorskip("mpi4py", reason="the mpi extra (mpi4py) is not installed")
    mpiexec = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which(
        "mpiexec"
    )
    if mpiexec is None:
        pytest.skip("no mpiexec (pip install mpich, or a site MPI)")
    out = tmp_path / "out"
    path = config(tmp_path, data_dir, "lr = [0.01, 0.05, 0.1]")
    command = [mpiexec, "-n", "2", sys.executable, "-m", "mpi4py", "-m", "convnet_gpu", "sweep",
               str(path), "--out", str(out), "--distributed", "mpi"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    rows = json.loads((out / "sweep.json").read_text())
    assert [row["status"] for row in rows] == ["ok"] * 3
    ranks = [json.loads((out / row["run"] / "sweep-run.json").read_text())["rank"] for row in rows]
    assert ranks == [0, 1, 0]
    assert done.stdout.count("wrote") == 1  # rank 0 alone writes the table
