"""Faults around a run: overwriting another run, divergence, Ctrl-C during start-up, SIGKILL
inside checkpoint, metrics and summary writes, bad flags, full disks, the files' permissions."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from hostile_helpers import (
    MEMORY_CAP,
    REPO,
    assert_refused,
    run_in_process,
    run_subprocess,
    train_args,
    tree_hashes,
    write_idx_dir,
    write_model,
)

from convnet_gpu.errors import TrainingDiverged
from convnet_gpu.fileio import write_bytes_atomic, write_jsonl_atomic


@pytest.fixture
def tiny(tmp_path):
    return write_idx_dir(tmp_path / "data"), write_model(tmp_path / "tiny.toml")


def _train(capsys, data, model, out, *more):
    code, _, err = run_in_process(capsys, *train_args(data, model, "--out", out, *more))
    assert code == 0, err


# ---- nothing overwritten --------------------------------------------------------------------
def test_resume_into_another_run_s_folder_is_refused_and_changes_nothing(capsys, tiny, tmp_path):
    data, model = tiny
    _train(capsys, data, model, tmp_path / "a", "--epochs", "2", "--batch-size", "16")
    _train(capsys, data, model, tmp_path / "b", "--epochs", "1")
    before = tree_hashes(tmp_path / "a", tmp_path / "b")
    for target in (tmp_path / "b", tmp_path / "b" / ".." / "b"):
        argv = ("train", "--device", "cpu", "--data-dir", data, "--resume", tmp_path / "a",
                "--out", target)  # fmt: skip
        assert_refused(run_in_process(capsys, *argv), 2, "already holds another run (its "
                       "checkpoint.npz, metrics.jsonl and summary.json would be")  # fmt: skip
    argv = train_args(data, model, "--out", tmp_path / "b")
    assert_refused(
        run_in_process(capsys, *argv),
        2,
        "already holds a run (its checkpoint.npz, metrics.jsonl and summary.json",
        f"continue it with --resume {tmp_path / 'b'}",
    )
    (tmp_path / "b" / "checkpoint.npz").unlink()  # its metrics and summary are still a run's
    before.pop(str(tmp_path / "b" / "checkpoint.npz"))
    argv = ("train", "--device", "cpu", "--data-dir", data, "--resume", tmp_path / "a",
            "--out", tmp_path / "b")  # fmt: skip
    named = "(its metrics.jsonl and summary.json would be overwritten)"
    assert_refused(run_in_process(capsys, *argv), 2, "already holds another run " + named)
    argv = train_args(data, model, "--out", tmp_path / "b")
    line = assert_refused(run_in_process(capsys, *argv), 2, "already holds a run " + named)
    assert line.endswith("overwritten); pick another --out")  # no checkpoint to --resume
    assert tree_hashes(tmp_path / "a", tmp_path / "b") == before


# ---- advice under --resume, which keeps the run's settings ------------------------------------
def _forged_resumable_run(capsys, data, model, folder, settings=None, params=None):
    """A finished 1-epoch run, its checkpoint made a 2-epoch run's with other settings or
    parameters."""
    _train(capsys, data, model, folder, "--epochs", "1")
    with np.load(folder / "checkpoint.npz") as archive:
        arrays = {key: archive[key] for key in archive.files}
    meta = json.loads(str(arrays.pop("meta")))
    meta["settings"].update(epochs=2, **(settings or {}))
    if params is not None:
        arrays["params"] = np.full_like(arrays["params"], params)
    np.savez(folder / "checkpoint.npz", meta=np.array(json.dumps(meta)), **arrays)
    return ("train", "--device", "cpu", "--data-dir", data, "--no-progress", "--resume", folder)


def test_a_diverging_resumed_run_advises_a_new_run(capsys, tiny, tmp_path):
    data, model = tiny
    argv = _forged_resumable_run(capsys, data, model, tmp_path / "run", params=1e30)
    line = assert_refused(run_in_process(capsys, *argv), 1, "stopped: the training loss")
    assert "a resumed run keeps its settings: start a new run (--out) and there lower --lr" in line


def test_a_resumed_run_too_large_for_memory_advises_a_new_run(tiny, tmp_path, capsys):
    data, model = tiny
    argv = _forged_resumable_run(capsys, data, model, tmp_path / "run", {"batch_size": 10**9})
    line = assert_refused(run_subprocess(*argv, memory_cap=MEMORY_CAP), 2, "needs")
    assert "start a new run (--out) and there lower --batch-size" in line


def test_out_of_memory_is_one_line_as_a_last_resort(capsys, monkeypatch, tiny, tmp_path):
    from convnet_gpu import cli

    def no_memory(args):
        raise MemoryError

    monkeypatch.setitem(cli.COMMANDS, "train", no_memory)
    data, model = tiny
    line = assert_refused(run_in_process(capsys, *train_args(data, model)), 1, "out of memory")
    assert line.endswith("lower --batch-size or use a smaller model")
    line = assert_refused(run_in_process(capsys, "train", "--resume", tmp_path), 1)
    assert "start a new run (--out) with a lower --batch-size" in line


# ---- a diverged run ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "flags, advice",
    [
        (("--lr", "1e30"), "lower --lr (now 1e+30)"),
        (("--lr", "0.01", "--weight-decay", "1e30"), "--weight-decay (now 1e+30)"),
        (("--lr", "1e30", "--threads", "2"), "lower --lr"),  # the worker threads' warnings too
    ],
)
def test_a_diverged_run_prints_one_line_and_no_warnings(tiny, tmp_path, flags, advice):
    data, model = tiny
    argv = train_args(data, model, "--out", tmp_path / "run", "--epochs", "2", *flags)
    line = assert_refused(run_subprocess(*argv), 1, "stopped: the", "loss became", advice)
    assert "RuntimeWarning" not in line and "`" not in line


def test_an_epoch_with_a_nan_test_loss_is_not_saved_as_good(tmp_path):
    from test_checkpoint import make_trainer

    from convnet_gpu.checkpoint import read_checkpoint

    trainer = make_trainer(tmp_path, epochs=3)
    real_evaluate, calls = trainer.evaluate, []

    def evaluate_nan_in_epoch_2(loader=None):
        calls.append(1)
        loss, accuracy = real_evaluate(loader)
        return (float("nan") if len(calls) == 2 else loss), accuracy

    trainer.evaluate = evaluate_nan_in_epoch_2
    with pytest.raises(TrainingDiverged) as failure:
        trainer.fit()
    message = str(failure.value)
    assert "the test loss became nan after epoch 2" in message
    assert "last good checkpoint" in message
    meta, _ = read_checkpoint(tmp_path)
    assert meta["position"]["epoch"] == 2  # epoch 1's checkpoint: epoch 2 was not saved
    records = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in records] == [1]


def _strict(text: str):
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_json_files_are_strict_json(tmp_path):
    records = [{"epoch": 1, "train_loss": float("nan"), "x": [float("inf"), -float("inf"), 1.5]}]
    write_jsonl_atomic(tmp_path / "metrics.jsonl", records)
    (line,) = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert _strict(line) == {"epoch": 1, "train_loss": None, "x": [None, None, 1.5]}


def test_a_run_s_files_parse_as_strict_json(capsys, tiny, tmp_path):
    data, model = tiny
    _train(capsys, data, model, tmp_path / "run", "--epochs", "1")
    for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines():
        _strict(line)
    _strict((tmp_path / "run" / "summary.json").read_text())


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (("train", "--lr", "inf"), "--lr"),
        (("train", "--lr", "nan"), "--lr"),
        (("train", "--lr", "-inf"), "--lr"),
        (("train", "--weight-decay", "inf"), "--weight-decay"),
        (("train", "--max-grad-norm", "nan"), "--max-grad-norm"),
        (("train", "--batch-size", "0"), "--batch-size"),
        (("train", "--epochs", "-1"), "--epochs"),
        (("train", "--seed", "-1"), "--seed"),
        (("train", "--seed", str(2**64)), "--seed"),
        (("train", "--jitter", "-1"), "--jitter"),
        (("gradcheck", "--seed", "-1"), "--seed"),
        (("gradcheck", "--seed", str(2**40)), "--seed"),
        (("overfit", "--seed", "-5"), "--seed"),
    ],
)
def test_bad_numbers_are_refused_at_validation(capsys, argv, fragment):
    assert_refused(run_in_process(capsys, *argv), 2, fragment)


# ---- Ctrl-C from the very first moment --------------------------------------------------------
_INTERRUPT_AT_IMPORT = """
import builtins, runpy, sys
target = sys.argv.pop(1)
real_import = builtins.__import__
def interrupting_import(name, *args, **kwargs):
    if name == target:
        raise KeyboardInterrupt
    return real_import(name, *args, **kwargs)
builtins.__import__ = interrupting_import
sys.argv[0] = "convnet-gpu"
runpy.run_module("convnet_gpu", run_name="__main__")
"""


@pytest.mark.parametrize(
    "module, argv",
    [
        ("errors", ["info"]),  # the CLI's first import
        ("argparse", ["info"]),  # inside the parser module
        ("commands", ["info"]),
        ("train_command", ["train", "--help"]),
        ("numpy", ["train", "--device", "cpu"]),  # inside a command, while the stack imports
        ("parser", ["train", "--device", "cpu"]),
    ],
)
def test_ctrl_c_while_starting_is_one_line_and_130(module, argv):
    result = run_subprocess(module, *argv, code=_INTERRUPT_AT_IMPORT)
    assert_refused(result, 130, "interrupted")


def test_ctrl_c_while_training_starts_is_one_line_and_130(tiny, tmp_path):
    """A real SIGINT once the process is in our code (it has printed its header)."""
    data, model = tiny
    argv = train_args(data, model, "--out", tmp_path / "run", "--epochs", "100000")
    process = subprocess.Popen(
        [sys.executable, "-m", "convnet_gpu", *map(str, argv)], cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout.readline().startswith("training")
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert_refused((process.returncode, "", err), 130, "interrupted")


# ---- SIGKILL at chosen moments of checkpoint writes -------------------------------------------
# The child kills itself (SIGKILL: no cleanup runs) at its k-th atomic write (fileio.py: each
# fsyncs once, then renames): "mid-write" with half the bytes in the temporary file, "before
# rename" with all of them, "after rename" before anything else happens. A run of 6 epochs
# writes checkpoint then metrics per epoch (writes 1, 2 for epoch 1 ... 11, 12), then its
# summary (13); a resumed run counts from its own first write.
_KILL_AT_A_WRITE = """
import os, runpy, signal, sys
kill_at, moment = int(sys.argv.pop(1)), sys.argv.pop(1)
writes, real_fsync, real_replace = [0], os.fsync, os.replace
def die():
    os.kill(os.getpid(), signal.SIGKILL)
def fsync(fd):
    writes[0] += 1
    if writes[0] == kill_at and moment == "mid-write":
        os.ftruncate(fd, os.fstat(fd).st_size // 2)
        die()
    real_fsync(fd)
    if writes[0] == kill_at and moment == "before rename":
        die()
def replace(source, target):
    real_replace(source, target)
    if writes[0] == kill_at and moment == "after rename":
        die()
os.fsync, os.replace = fsync, replace
sys.argv[0] = "convnet-gpu"
runpy.run_module("convnet_gpu", run_name="__main__")
"""
_FIGURES = ("epoch", "train_loss", "train_accuracy", "lr", "test_loss", "test_accuracy")
# One list of kills per case, each (k, moment) in a process of its own (resumed from the last):
# - epoch 2's checkpoint torn; then the metrics left behind the checkpoint twice (their rename
#   not done; not reached);
# - the first checkpoint torn (no checkpoint: a new run), then the summary's write killed;
# - the first checkpoint with no metrics yet; epoch 3's metrics torn; the last checkpoint.
_KILLS = [
    [(3, "mid-write"), (2, "before rename"), (5, "after rename")],
    [(1, "mid-write"), (13, "before rename")],
    [(1, "after rename"), (4, "mid-write"), (5, "after rename")],
]


def _final_state(run_dir):
    with np.load(run_dir / "checkpoint.npz") as archive:
        arrays = {key: archive[key] for key in archive.files if key != "meta"}
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    metrics = [{key: json.loads(line)[key] for key in _FIGURES} for line in lines]
    return arrays, metrics


@pytest.mark.parametrize("kills", _KILLS, ids=["torn-lagging", "first-summary", "metrics-last"])
def test_sigkill_during_checkpoint_writes_then_resume_is_bitwise_exact(tiny, tmp_path, kills):
    """Kill a 6-epoch run (3 steps an epoch) inside chosen writes, resume it after each kill,
    and finish: the run ends bitwise equal to one never killed, no temporary file left."""
    data, model = tiny
    common = ("--epochs", "6", "--batch-size", "16", "--seed", "3")

    def argv_for(run_dir):
        if (run_dir / "checkpoint.npz").exists():
            return ("train", "--device", "cpu", "--threads", "1", "--data-dir", data,
                    "--no-progress", "--resume", run_dir)  # fmt: skip
        return train_args(data, model, "--out", run_dir, *common)

    assert run_subprocess(*argv_for(tmp_path / "reference"))[0] == 0
    reference = _final_state(tmp_path / "reference")
    run_dir = tmp_path / "killed"
    for kill_at, moment in kills:
        code, _, err = run_subprocess(kill_at, moment, *argv_for(run_dir), code=_KILL_AT_A_WRITE)
        assert code == -signal.SIGKILL, (kill_at, moment, code, err)
        temporaries = [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]
        assert len(temporaries) == (moment != "after rename"), temporaries
    code, _, err = run_subprocess(*argv_for(run_dir))
    assert code == 0, err
    arrays, metrics = _final_state(run_dir)
    assert metrics == reference[1]
    assert arrays.keys() == reference[0].keys()
    for key, array in arrays.items():
        assert np.array_equal(array, reference[0][key]), key
    assert not [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")]


# ---- files ------------------------------------------------------------------------------------
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_respect_the_umask(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        write_bytes_atomic(tmp_path / "file", b"x")
    finally:
        os.umask(previous)
    assert (tmp_path / "file").stat().st_mode & 0o777 == mode


def test_a_killed_writer_s_temporary_file_is_removed_at_the_next_save(tmp_path):
    from test_checkpoint import tiny_net

    from convnet_gpu.checkpoint import read_checkpoint, save_checkpoint

    stale = tmp_path / ".checkpoint.npz.k1ll3d.tmp"  # what SIGKILL mid-write leaves
    stale.write_bytes(b"half a checkpoint")
    other = tmp_path / ".summary.json.k1ll3d.tmp"  # another file's: not the checkpoint's to remove
    other.write_bytes(b"{")
    save_checkpoint(tmp_path / "checkpoint.npz", tiny_net(), {"device": "cpu"})
    assert not stale.exists() and other.exists()
    assert read_checkpoint(tmp_path)[0]["device"] == "cpu"


def test_a_full_disk_is_one_line_naming_the_file(capsys, tiny, tmp_path, monkeypatch):
    data, model = tiny

    def disk_full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    argv = train_args(data, model, "--out", tmp_path / "run", "--epochs", "1")
    line = assert_refused(run_in_process(capsys, *argv), 2, "No space left on device")
    assert str(tmp_path / "run" / "checkpoint.npz") in line
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize(
    "flag",
    [
        ("--epochs", "2"),
        ("--lr", "0.02"),
        ("--momentum", "0.9"),
        ("--no-flip",),
        ("--dataset", "fashion-mnist"),
        ("--model", "simple-cnn"),
        ("--seed", "0"),
        ("--schedule", "cosine"),
        ("--weight-decay", "0"),
        ("--jitter", "0"),
    ],
    ids=lambda flag: flag[0],
)
def test_resume_refuses_a_setting_flag_even_at_its_default(capsys, tiny, tmp_path, flag):
    data, model = tiny
    _train(capsys, data, model, tmp_path / "run", "--epochs", "1")
    before = tree_hashes(tmp_path / "run")
    argv = ("train", "--device", "cpu", "--data-dir", data, "--resume", tmp_path / "run", *flag)
    assert_refused(run_in_process(capsys, *argv), 2, f"drop {flag[0]}")
    assert tree_hashes(tmp_path / "run") == before


def test_eval_of_overflowing_weights_prints_no_warnings_and_strict_json(tiny, tmp_path):
    """Finite weights (so the checkpoint is valid) too large for float32 products: eval reports
    the non-finite loss as null, with no RuntimeWarning on stderr."""
    data, model = tiny
    run_dir = tmp_path / "run"
    assert run_subprocess(*train_args(data, model, "--out", run_dir, "--epochs", "1"))[0] == 0
    with np.load(run_dir / "checkpoint.npz") as archive:
        arrays = {key: archive[key] for key in archive.files}
    arrays["params"] = np.full_like(arrays["params"], 1e30)
    np.savez(run_dir / "checkpoint.npz", **arrays)
    code, out, err = run_subprocess("eval", "--device", "cpu", "--data-dir", data,
                                    "--checkpoint", run_dir)  # fmt: skip
    assert code == 0 and err == "", err
    report = _strict((run_dir / "eval.json").read_text())
    assert report["loss"] is None


def test_a_diverging_overfit_fails_without_warnings(tiny):
    data, model = tiny
    code, out, err = run_subprocess(
        "overfit", "--device", "cpu", "--data-dir", data, "--model", model, "--samples", "8",
        "--max-steps", "4", "--lr", "1e30",
    )  # fmt: skip
    assert code == 1 and "FAILED" in out
    assert err == "", err
