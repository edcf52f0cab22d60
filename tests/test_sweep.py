"""Sweeps: the grid file, its points and their folders, and `convnet-gpu sweep` in one process
(tests/test_distributed_mpi.py runs one over two ranks)."""

from __future__ import annotations

import json

import pytest
from distributed_helpers import small_cnn, small_dataset
from test_cli import run_cli

from convnet_gpu.sweep import SweepError, point_name, points_of_rank, read_sweep

GRID = """
[base]
epochs = 1
batch_size = 8
[grid]
lr = [0.01, 0.05]
optimizer = ["sgd", "adam"]
"""


def test_points_are_every_combination_the_last_setting_fastest(tmp_path):
    (tmp_path / "grid.toml").write_text(GRID)
    sweep = read_sweep(tmp_path / "grid.toml")
    names = [point_name(point) for point in sweep.points()]
    assert names == ["lr-0.01_optimizer-sgd", "lr-0.01_optimizer-adam",
                     "lr-0.05_optimizer-sgd", "lr-0.05_optimizer-adam"]  # fmt: skip
    settings = sweep.settings(sweep.points()[3])
    assert (settings.lr, settings.optimizer, settings.epochs) == (0.05, "adam", 1)


def test_each_rank_takes_every_ranks_th_point():
    assert [points_of_rank(5, rank, 2) for rank in (0, 1)] == [[0, 2, 4], [1, 3]]
    assert points_of_rank(2, 2, 3) == []  # more ranks than points: some train none


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("[grid]\nlr = [0.1]\n[extra]\n", "unknown key 'extra'"),
        ("[base]\nepochs = 1\n", "needs a [grid] table"),
        ("[grid]\nlearning_rate = [0.1]\n", "'learning_rate' is not a run setting"),
        ("[grid]\nlr = 0.1\n", "grid.lr must be a list of values"),
        ("[grid]\nearly_stop = [2]\n", "the point early_stop-2: `val_split`"),
        ("[grid\n", "not valid TOML"),
    ],
)
def test_a_bad_sweep_file_is_one_line_naming_it(tmp_path, text, fragment):
    (tmp_path / "grid.toml").write_text(text)
    with pytest.raises(SweepError, match="grid.toml") as error:
        read_sweep(tmp_path / "grid.toml")
    assert fragment in str(error.value)


def test_sweep_trains_each_point_writes_one_table_and_reuses_finished_runs(capsys, tmp_path):
    data_dir = small_dataset(tmp_path / "data", train=24, test=10)
    model = small_cnn(tmp_path)
    grid = tmp_path / "grid.toml"
    grid.write_text(f'[base]\nmodel = "{model}"\nepochs = 1\nbatch_size = 8\n'
                    f"[grid]\nlr = [0.01, 0.05]\n")  # fmt: skip
    argv = ("sweep", str(grid), "--device", "cpu", "--threads", "1", "--data-dir", str(data_dir),
            "--out", str(tmp_path / "sweep"))  # fmt: skip
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    table = json.loads((tmp_path / "sweep/sweep.json").read_text())
    assert [run["name"] for run in table["runs"]] == ["lr-0.01", "lr-0.05"]
    assert all(run["status"] == "done" and run["rank"] == 0 for run in table["runs"])
    assert "test acc" in out and "lr-0.05" in out
    summary = (tmp_path / "sweep/lr-0.01/summary.json").read_text()
    code, out, _ = run_cli(capsys, *argv)  # again: the finished runs are taken as they are
    assert code == 0 and "training" not in out
    assert (tmp_path / "sweep/lr-0.01/summary.json").read_text() == summary


def test_a_point_that_fails_is_a_row_and_the_sweep_exits_1(capsys, tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text('[grid]\nmodel = ["nope.toml"]\n')
    code, out, _ = run_cli(capsys, "sweep", str(grid), "--device", "cpu",
                           "--out", str(tmp_path / "sweep"))  # fmt: skip
    assert code == 1
    assert "model-nope.toml  error:" in out


def test_a_folder_of_another_grid_or_of_other_files_is_refused(capsys, tmp_path):
    first, second = tmp_path / "first.toml", tmp_path / "second.toml"
    first.write_text('[grid]\nmodel = ["nope.toml"]\n')
    second.write_text('[grid]\nmodel = ["other.toml"]\n')
    sweep = lambda grid, out: run_cli(capsys, "sweep", str(grid), "--device", "cpu",
                                      "--out", str(out))  # fmt: skip
    sweep(first, tmp_path / "sweep")  # its one point fails, but the folder is its sweep's
    code, _, err = sweep(second, tmp_path / "sweep")
    assert code == 2 and "holds the sweep of another grid" in err
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy/notes.txt").write_text("mine")
    code, _, err = sweep(first, tmp_path / "busy")
    assert code == 2 and "holds files but no sweep" in err


@pytest.mark.parametrize(
    "text, fragment",
    [
        ('[grid]\nepochs = ["x"]\n', "grid.epochs = 'x': --epochs: expected a number"),
        ("[grid]\nepochs = [1.5]\n", "grid.epochs = 1.5: --epochs: expected a number"),
        ("[grid]\nbatch_size = [0]\n", "--batch-size: must be >= 1"),
        ("[grid]\nbatch_size = [true]\n", "--batch-size: expected a number, got True"),
        ("[grid]\nlr = [[0.1]]\n", "--lr: expected a number, got [0.1]"),
        ("[grid]\nlr = [-1]\n", "--lr: must be a finite number > 0"),
        ('[grid]\ndataset = ["foo"]\n', "--dataset: 'foo' is not one of"),
        ("[grid]\nmodel = [3]\n", "--model: expected a string, got 3"),
        (
            '[base]\nplateau = "yes"\n[grid]\nlr = [0.1]\n',
            "base.plateau = 'yes': --plateau: expected true or false",
        ),
        ("[grid]\nlr = [0.1, 0.1]\n", "share the run folder lr-0.1"),
        ('[grid]\nmodel = ["a b", "a-b"]\n', "share the run folder model-a-b"),
    ],
)
def test_a_value_train_would_refuse_is_refused_before_any_point_trains(capsys, tmp_path, text,
                                                                      fragment):  # fmt: skip
    (tmp_path / "grid.toml").write_text(text)
    code, out, err = run_cli(capsys, "sweep", str(tmp_path / "grid.toml"), "--device", "cpu",
                             "--out", str(tmp_path / "sweep"))  # fmt: skip
    assert code == 2 and fragment in err and err.count("\n") == 1, err
    assert not (tmp_path / "sweep").exists()


def test_values_are_taken_as_train_takes_them(tmp_path):
    from convnet_gpu.cli.parser import parse_setting

    (tmp_path / "grid.toml").write_text(
        "[base]\nplateau = true\nval_split = 0.1\n[grid]\nlr = [1, 0.5]\n"
    )
    sweep = read_sweep(tmp_path / "grid.toml", parse_setting)
    assert sweep.grid == {"lr": [1.0, 0.5]} and sweep.base == {"plateau": True, "val_split": 0.1}
    assert isinstance(sweep.settings(sweep.points()[0]).lr, float)


def test_a_run_killed_after_its_last_checkpoint_is_taken_from_its_metrics(capsys, tmp_path):
    """Its summary never written: the resume finds the run complete, and its row comes from
    metrics.jsonl, so running the sweep again finishes (it used to stop the whole sweep)."""
    data_dir = small_dataset(tmp_path / "data", train=24, test=10)
    grid = tmp_path / "grid.toml"
    grid.write_text(f'[base]\nmodel = "{small_cnn(tmp_path)}"\nepochs = 1\nbatch_size = 8\n'
                    f"[grid]\nlr = [0.01]\n")  # fmt: skip
    argv = ("sweep", str(grid), "--device", "cpu", "--threads", "1", "--data-dir", str(data_dir),
            "--out", str(tmp_path / "sweep"))  # fmt: skip
    assert run_cli(capsys, *argv)[0] == 0
    first = json.loads((tmp_path / "sweep/sweep.json").read_text())["runs"][0]
    (tmp_path / "sweep/lr-0.01/summary.json").unlink()
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    (row,) = json.loads((tmp_path / "sweep/sweep.json").read_text())["runs"]
    assert row["status"] == "done" and row["seconds"] is None
    assert (row["test_accuracy"], row["epochs_run"]) == (first["test_accuracy"], 1)
