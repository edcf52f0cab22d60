"""Hostile checkpoints: every damaged, forged or mismatched field is refused by `train --resume`
and `eval` in one line naming it (exit 2, no traceback), before any state is touched, and the
refused run's files are left exactly as they were."""

from __future__ import annotations

import copy
import io
import json
import zipfile

import numpy as np
import pytest
from hostile_helpers import (
    MEMORY_CAP,
    TINY_MODEL,
    assert_refused,
    run_in_process,
    run_subprocess,
    train_args,
    tree_hashes,
    write_idx_dir,
    write_model,
)

TRAIN_IMAGES, BATCH = 48, 16  # 3 batches an epoch


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    """(data dir, model file, meta, arrays) of a valid mid-epoch checkpoint: a 2-epoch run
    stopped after batch 1 of epoch 2 (a finished 1-epoch run, its meta moved on by one step)."""
    import contextlib

    from convnet_gpu import cli

    root = tmp_path_factory.mktemp("hostile-checkpoint")
    data, model = write_idx_dir(root / "data", TRAIN_IMAGES), write_model(root / "tiny.toml")
    argv = train_args(data, model, "--epochs", "1", "--batch-size", BATCH, "--out", root / "run")
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli.main([str(a) for a in argv]) == 0
    meta, arrays = read_raw(root / "run" / "checkpoint.npz")
    meta["settings"]["epochs"] = 2
    meta["position"].update(next_batch=1, step=4)
    meta["optimizer"]["steps"] = 4
    arrays["position.order"] = np.random.default_rng(1).permutation(TRAIN_IMAGES)
    return data, model, meta, arrays


def read_raw(path):
    with np.load(path) as archive:
        arrays = {key: archive[key] for key in archive.files}
    return json.loads(str(arrays.pop("meta"))), arrays


def write_raw(folder, meta, arrays):
    folder.mkdir(parents=True, exist_ok=True)
    payload = io.BytesIO()
    np.savez(payload, meta=np.array(json.dumps(meta)), **arrays)
    (folder / "checkpoint.npz").write_bytes(payload.getvalue())
    return folder


def _set(part, key, value):
    return lambda meta: meta[part].__setitem__(key, value) if part else meta.__setitem__(key, value)


def _array(key, change):
    return lambda arrays: arrays.__setitem__(key, change(arrays[key]))


def _nan_first(a):
    a = a.copy()
    a[0] = np.nan
    return a


def _out_of_range(a):
    a = a.copy()
    a[0] = 10**6
    return a


def _past_the_run(meta):
    """Epoch 9 of a 2-epoch run, with the 8 records such a position would have."""
    record = meta["position"]["metrics"][0]
    meta["position"]["epoch"] = 9
    meta["position"]["metrics"] = [{**record, "epoch": e} for e in range(1, 9)]


# name -> (change, a fragment of the one line)
META_CASES = {
    "unknown dataset": (_set("settings", "dataset", "imagenet"), "settings.dataset"),
    "unknown dtype": (_set("net", "dtype", "complex128"), "net.dtype"),
    "dtype not a string": (_set("net", "dtype", 5), "net.dtype"),
    "history not a list": (_set("position", "metrics", "lots"), "position.metrics"),
    "history too short": (_set("position", "metrics", []), "position.metrics"),
    "history record not an object": (_set("position", "metrics", [5]), "position.metrics[0]"),
    "rng garbage": (
        _set("position", "rng", {"bit_generator": "PCG64", "state": 5}),
        "position.rng",
    ),
    "rng of another kind": (_set("position", "rng", {"bit_generator": "MT19937"}), "position.rng"),
    "rng a string": (_set("position", "rng", "seeded"), "position.rng"),
    "negative epoch": (_set("position", "epoch", -3), "position.epoch"),
    "epoch a string": (_set("position", "epoch", "2"), "position.epoch"),
    "epoch past the run": (_past_the_run, "position.epoch"),
    "batch past the end": (_set("position", "next_batch", 10**6), "position.next_batch"),
    "step past the end": (_set("position", "step", 10**9), "position.step"),
    "batch at the end": (_set("position", "next_batch", 3), "position.next_batch"),  # 3 batches
    "step not epoch and batch's": (_set("position", "step", 5), "position.step"),
    "optimizer steps not the run's": (_set("optimizer", "steps", 3), "optimizer.steps"),
    "stopped_early not a bool": (_set("position", "stopped_early", "no"), "stopped_early"),
    "lr inf": (_set("settings", "lr", float("inf")), "settings.lr"),
    "lr a string": (_set("settings", "lr", "fast"), "settings.lr"),
    "epochs zero": (_set("settings", "epochs", 0), "settings.epochs"),
    "seed too large": (_set("settings", "seed", 2**40), "settings.seed"),
    "unknown setting": (_set("settings", "bogus", 1), "settings.bogus"),
    "settings missing": (lambda m: m.pop("settings"), "settings"),
    "net missing": (lambda m: m.pop("net"), "net"),
    "signature garbage": (_set("net", "signature", 5), "net.signature"),
    "layer scalars of no layer": (_set("net", "layer_scalars", {"0": {"x": 1}}), "layer_scalars"),
    "format a string": (_set(None, "format", "4"), "format"),
    "format 3 without its fields": (_set(None, "format", 3), "format 3"),
    "optimizer class": (_set("optimizer", "class", "Adam"), "optimizer.class"),
    "optimizer steps negative": (_set("optimizer", "steps", -1), "optimizer.steps"),
    "optimizer lr nan": (_set("optimizer", "lr", float("nan")), "optimizer.lr"),
    "selection missing": (lambda m: m.pop("selection"), "selection"),
    "selection lr_scale zero": (_set("selection", "lr_scale", 0), "selection.lr_scale"),
    "data identity garbage": (_set(None, "data", [1]), "data"),
    "distributed garbage": (_set(None, "distributed", 5), "distributed"),
    "distributed bn unknown": (_set(None, "distributed", {"bn": "half"}), "distributed.bn"),
}
ARRAY_CASES = {
    "params missing": (lambda a: a.pop("params"), "params"),
    "params short": (_array("params", lambda p: p[:10]), "params"),
    "params of one element": (_array("params", lambda p: p[:1]), "params"),
    "params 2-d": (_array("params", lambda p: p.reshape(2, -1)), "params"),
    "params complex": (_array("params", lambda p: p.astype(complex)), "complex"),
    "params int8": (_array("params", lambda p: p.astype(np.int8)), "int8"),
    "params strings": (_array("params", lambda p: p.astype(str)), "params"),
    "params float64": (_array("params", lambda p: p.astype(np.float64)), "float64"),
    "params NaN": (_array("params", _nan_first), "NaN"),
    "an extra array": (lambda a: a.__setitem__("junk", np.zeros(3)), "junk"),
    "velocity missing": (lambda a: a.pop("optimizer.velocity"), "optimizer.velocity"),
    "velocity short": (_array("optimizer.velocity", lambda v: v[:1]), "optimizer.velocity"),
    "order out of range": (_array("position.order", _out_of_range), "position.order"),
    "order short": (_array("position.order", lambda o: o[:5]), "position.order"),
    "order of floats": (_array("position.order", lambda o: o.astype(float)), "position.order"),
    "order repeated": (_array("position.order", lambda o: np.zeros_like(o)), "position.order"),
    "order missing mid-epoch": (lambda a: a.pop("position.order"), "position.order"),
}


def _resume_and_eval(capsys, data, folder, fragment, eval_too=True):
    before = tree_hashes(folder)
    line = assert_refused(
        run_in_process(
            capsys,
            "train",
            "--device",
            "cpu",
            "--threads",
            "1",
            "--data-dir",
            data,
            "--no-progress",
            "--resume",
            folder,
        ),  # fmt: skip
        2,
        fragment,
    )
    assert tree_hashes(folder) == before
    if eval_too:
        argv = ("eval", "--device", "cpu", "--data-dir", data, "--checkpoint", folder)
        assert_refused(run_in_process(capsys, *argv), 2)
        assert tree_hashes(folder) == before
    return line


def test_the_untouched_checkpoint_resumes(capsys, saved_run, tmp_path):
    data, _, meta, arrays = saved_run
    folder = write_raw(tmp_path / "run", meta, arrays)
    code, out, err = run_in_process(
        capsys, "train", "--device", "cpu", "--data-dir", data, "--no-progress", "--resume", folder
    )
    assert code == 0, err
    assert "resuming" in out and "epoch 2, batch 1" in out


@pytest.mark.parametrize("case", sorted(META_CASES))
def test_a_bad_meta_field_is_named(capsys, saved_run, tmp_path, case):
    data, _, meta, arrays = saved_run
    change, fragment = META_CASES[case]
    meta = copy.deepcopy(meta)
    change(meta)
    folder = write_raw(tmp_path / "run", meta, arrays)
    # eval needs the settings and the net alone; the other parts matter only to --resume
    eval_too = fragment.split(".")[0] in ("settings", "net", "format", "layer_scalars")
    _resume_and_eval(capsys, data, folder, fragment, eval_too)


@pytest.mark.parametrize("case", sorted(ARRAY_CASES))
def test_a_bad_array_is_named(capsys, saved_run, tmp_path, case):
    data, _, meta, arrays = saved_run
    change, fragment = ARRAY_CASES[case]
    arrays = {key: array.copy() for key, array in arrays.items()}
    change(arrays)
    folder = write_raw(tmp_path / "run", meta, arrays)
    eval_too = not fragment.startswith(("optimizer", "position"))
    _resume_and_eval(capsys, data, folder, fragment, eval_too)


@pytest.mark.parametrize(
    "damage, fragment",
    [
        (lambda raw: b"", "empty"),
        (lambda raw: raw[: len(raw) // 2], "not a readable"),
        (lambda raw: raw[:100], "not a readable"),
        (lambda raw: b"PK\x03\x04" + bytes(200), "not a readable"),
        (lambda raw: bytes(4096), "not a readable"),
    ],
)
def test_an_empty_or_truncated_file_is_one_line(capsys, saved_run, tmp_path, damage, fragment):
    data, _, meta, arrays = saved_run
    folder = write_raw(tmp_path / "run", meta, arrays)
    checkpoint = folder / "checkpoint.npz"
    checkpoint.write_bytes(damage(checkpoint.read_bytes()))
    _resume_and_eval(capsys, data, folder, fragment)


def test_a_checkpoint_without_meta_is_one_line(capsys, saved_run, tmp_path):
    data, _, _, arrays = saved_run
    folder = tmp_path / "run"
    folder.mkdir()
    np.savez(folder / "checkpoint.npz", **arrays)
    _resume_and_eval(capsys, data, folder, "meta")


def test_meta_nested_beyond_the_json_parser_is_one_line(capsys, saved_run, tmp_path):
    data, _, _, arrays = saved_run
    folder = tmp_path / "run"
    folder.mkdir()
    deep = "[" * 100_000 + "]" * 100_000
    np.savez(folder / "checkpoint.npz", meta=np.array(deep), **arrays)
    _resume_and_eval(capsys, data, folder, "not a readable")


def test_an_object_array_is_refused_without_unpickling(capsys, saved_run, tmp_path):
    data, _, meta, arrays = saved_run
    folder = write_raw(tmp_path / "run", meta, {**arrays, "params": np.array([{}], dtype=object)})
    _resume_and_eval(capsys, data, folder, "not a readable")


def test_a_resumed_run_refuses_other_training_data(capsys, saved_run, tmp_path):
    data, _, meta, arrays = saved_run
    folder = write_raw(tmp_path / "run", meta, arrays)
    other = write_idx_dir(tmp_path / "other", TRAIN_IMAGES, seed=7)  # same sizes, other labels
    before = tree_hashes(folder)
    argv = ("train", "--device", "cpu", "--data-dir", other, "--resume", folder)
    assert_refused(run_in_process(capsys, *argv), 2, "other data", "labels", "--data-dir")
    smaller = write_idx_dir(tmp_path / "smaller", TRAIN_IMAGES - 8)
    argv = ("train", "--device", "cpu", "--data-dir", smaller, "--resume", folder)
    assert_refused(run_in_process(capsys, *argv), 2, "training images: 48 then, 40 now")
    assert tree_hashes(folder) == before


def test_a_forged_npy_header_is_refused_before_reading(capsys, saved_run, tmp_path):
    """A header claiming 10**11 floats is refused by its size against free memory before a
    byte of the array is read (the file holds 40 bytes of it)."""
    data, _, meta, arrays = saved_run
    folder = write_raw(tmp_path / "run", meta, arrays)
    checkpoint = folder / "checkpoint.npz"
    with zipfile.ZipFile(checkpoint, "a") as archive:
        header = io.BytesIO()
        np.lib.format.write_array_header_2_0(
            header, {"descr": "<f4", "fortran_order": False, "shape": (10**11,)}
        )
        archive.writestr("huge.npy", header.getvalue() + bytes(40))
    line = _resume_and_eval(capsys, data, folder, "huge")
    assert "372.5 GiB" in line and "free" in line


def test_a_truncated_npy_member_is_refused(capsys, saved_run, tmp_path):
    data, _, meta, arrays = saved_run
    folder = write_raw(tmp_path / "run", meta, arrays)
    with zipfile.ZipFile(folder / "checkpoint.npz", "a") as archive:
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            header, {"descr": "<f4", "fortran_order": False, "shape": (1000,)}
        )
        archive.writestr("short.npy", header.getvalue() + bytes(40))
    _resume_and_eval(capsys, data, folder, "truncated or forged")


# ---- fuzzing: random damage, each outcome one of the allowed ones -------------------------------
def _outcome(capsys, argv, folder):
    """Run argv; a refusal (2) or a divergence (1) must be one line and leave `folder` as it was,
    a success (0) must print nothing on stderr."""
    before = tree_hashes(folder)
    code, _, err = run_in_process(capsys, *argv)
    assert "Traceback" not in err
    assert code in (0, 1, 2), (code, err)
    assert len(err.strip().splitlines()) == (0 if code == 0 else 1), err
    if code:
        assert tree_hashes(folder) == before
    return code


def _both_commands(capsys, data, folder, tmp_path):
    resume = ("train", "--device", "cpu", "--threads", "1", "--data-dir", data, "--no-progress",
              "--resume", folder, "--out", tmp_path / "out")  # fmt: skip
    codes = [_outcome(capsys, resume, folder)]
    evaluate = ("eval", "--device", "cpu", "--data-dir", data, "--checkpoint", folder)
    codes.append(_outcome(capsys, evaluate, folder))
    import shutil

    shutil.rmtree(tmp_path / "out", ignore_errors=True)
    return codes


def test_random_byte_damage_is_refused_or_harmless(capsys, saved_run, tmp_path):
    """200 copies of the checkpoint with 1-3 random bytes overwritten each."""
    data, _, meta, arrays = saved_run
    intact = (write_raw(tmp_path / "intact", meta, arrays) / "checkpoint.npz").read_bytes()
    rng = np.random.default_rng(2026)
    folder = tmp_path / "run"
    folder.mkdir()
    codes = []
    for _ in range(200):
        damaged = bytearray(intact)
        for position in rng.integers(0, len(damaged), rng.integers(1, 4)):
            damaged[position] = rng.integers(0, 256)
        (folder / "checkpoint.npz").write_bytes(bytes(damaged))
        codes += _both_commands(capsys, data, folder, tmp_path)
    assert codes.count(2) > 100  # most damage is caught (CRCs, headers); the rest is harmless


def _leaves(value, path=()):
    """Every path into the meta's objects and lists, leaves and containers alike."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaves(item, (*path, index))
    if path:
        yield path


@pytest.mark.parametrize("replacement", [None, -1, "x", 2**70, [1]], ids=repr)
def test_any_meta_field_replaced_is_refused_or_harmless(capsys, saved_run, tmp_path, replacement):
    data, _, meta, arrays = saved_run
    codes = []
    for path in _leaves(meta):
        changed = copy.deepcopy(meta)
        owner = changed
        for key in path[:-1]:
            owner = owner[key]
        owner[path[-1]] = replacement
        folder = write_raw(tmp_path / "run", changed, arrays)
        codes += _both_commands(capsys, data, folder, tmp_path)
    assert codes.count(2) > len(codes) // 3


DROPOUT_MODEL = TINY_MODEL.replace(
    '[[layers]]\ntype = "flatten"', '[[layers]]\ntype = "dropout"\n\n[[layers]]\ntype = "flatten"'
)


@pytest.fixture(scope="module")
def dropout_run(tmp_path_factory):
    """(data dir, meta, arrays) of a finished 1-epoch run of a net with a Dropout layer."""
    import contextlib

    from convnet_gpu import cli

    root = tmp_path_factory.mktemp("hostile-dropout")
    data, model = write_idx_dir(root / "data", TRAIN_IMAGES), root / "dropout.toml"
    write_model(model, DROPOUT_MODEL)
    argv = train_args(data, model, "--epochs", "1", "--batch-size", BATCH, "--out", root / "run")
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli.main([str(a) for a in argv]) == 0
    meta, arrays = read_raw(root / "run" / "checkpoint.npz")
    meta["settings"]["epochs"] = 2  # so that --resume has an epoch to run
    return data, meta, arrays


@pytest.mark.parametrize(
    "change, fragment",
    [
        (lambda scalars: scalars.clear(), "missing for the Dropout(0.5) built there"),
        (lambda scalars: scalars["3"].update(seed=2**32), "seed must be an integer in [0, 2**32)"),
        (
            lambda scalars: scalars["3"].update(step=2**40),
            "counter must be an integer in [0, 2**32)",
        ),
        (lambda scalars: scalars["3"].pop("step"), "does not match the layer built there"),
    ],
    ids=["none", "seed 2**32", "step 2**40", "step missing"],
)
def test_dropout_scalars_are_required_and_checked_by_the_layer(
    capsys, dropout_run, tmp_path, change, fragment
):
    data, meta, arrays = dropout_run
    assert list(meta["net"]["layer_scalars"]) == ["3"]
    meta = copy.deepcopy(meta)
    change(meta["net"]["layer_scalars"])
    folder = write_raw(tmp_path / "run", meta, arrays)
    line = _resume_and_eval(capsys, data, folder, "net.layer_scalars")
    assert fragment in line


def test_the_untouched_dropout_checkpoint_resumes(capsys, dropout_run, tmp_path):
    data, meta, arrays = dropout_run
    folder = write_raw(tmp_path / "run", meta, arrays)
    code, _, err = run_in_process(
        capsys, "train", "--device", "cpu", "--data-dir", data, "--no-progress", "--resume", folder
    )
    assert code == 0, err


def test_a_checkpoint_s_model_file_is_read_as_any_model_file(saved_run, tmp_path):
    """settings.model naming /dev/zero: refused as the flag would be (it was a MemoryError)."""
    data, _, meta, arrays = saved_run
    (tmp_path / "zero.toml").symlink_to("/dev/zero")
    meta = copy.deepcopy(meta)
    meta["settings"]["model"] = str(tmp_path / "zero.toml")
    folder = write_raw(tmp_path / "run", meta, arrays)
    before = tree_hashes(folder)
    for argv in (("train", "--resume", folder), ("eval", "--checkpoint", folder)):
        result = run_subprocess(*argv, "--device", "cpu", "--data-dir", data,
                                memory_cap=MEMORY_CAP, timeout=30)  # fmt: skip
        assert_refused(result, 2, "zero.toml: not a regular file")
    assert tree_hashes(folder) == before
