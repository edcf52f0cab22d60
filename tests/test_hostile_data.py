"""Empty and degenerate data, degenerate and deeply nested model files, data and model files that
are devices, FIFOs or too large: one line each (exit 2), never a ZeroDivisionError, a reshape
error, a RecursionError, a MemoryError or a hang."""

from __future__ import annotations

import numpy as np
import pytest
from data_helpers import write_batch, write_cifar
from hostile_helpers import (
    IDX_NAMES,
    MEMORY_CAP,
    assert_refused,
    idx_bytes,
    run_in_process,
    run_subprocess,
    train_args,
    write_idx_dir,
    write_model,
)

EMPTY_IMAGES, NO_LABELS = idx_bytes(np.zeros((0, 8, 8))), idx_bytes(np.zeros(0))


def _gz(data: bytes) -> bytes:
    import gzip

    return gzip.compress(data)


@pytest.mark.parametrize(
    "files, fragment",
    [
        ({IDX_NAMES[0]: _gz(EMPTY_IMAGES), IDX_NAMES[1]: _gz(NO_LABELS)}, "no training images"),
        ({IDX_NAMES[2]: _gz(EMPTY_IMAGES), IDX_NAMES[3]: _gz(NO_LABELS)}, "no test images"),
        (
            {
                IDX_NAMES[0]: _gz(idx_bytes(np.zeros((48, 0, 0)))),
                IDX_NAMES[2]: _gz(idx_bytes(np.zeros((16, 0, 0)))),
            },
            "0x0 pixels",
        ),  # fmt: skip
        ({IDX_NAMES[0]: _gz(idx_bytes(np.zeros((48, 8, 0))))}, "8x0 pixels"),
        ({IDX_NAMES[0]: b""}, "truncated IDX header"),
        ({IDX_NAMES[0]: _gz(b"")}, "truncated IDX header"),
        ({IDX_NAMES[1]: _gz(idx_bytes(np.zeros(47)))}, "count mismatch"),
    ],
    ids=["no-train", "no-test", "0x0", "8x0", "empty-file", "empty-gzip", "one-label-short"],
)
def test_empty_or_degenerate_idx_data_is_one_line(capsys, tmp_path, files, fragment):
    data = write_idx_dir(tmp_path / "data", files=files)
    argv = train_args(data, write_model(tmp_path / "m.toml"), "--out", tmp_path / "run")
    assert_refused(run_in_process(capsys, *argv), 2, fragment)
    assert not (tmp_path / "run" / "checkpoint.npz").exists()


def test_cifar_without_test_images_is_one_line(capsys, tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar(folder)
    write_batch(folder / "test_batch", np.zeros((0, 3072), np.uint8), [])
    argv = ("train", "--device", "cpu", "--dataset", "cifar-10", "--data-dir", folder)
    assert_refused(run_in_process(capsys, *argv), 2, "no test images")


def test_eval_on_empty_test_data_is_one_line(capsys, tmp_path):
    data = write_idx_dir(tmp_path / "data")
    model = write_model(tmp_path / "m.toml")
    run_dir = tmp_path / "run"
    assert (
        run_in_process(capsys, *train_args(data, model, "--epochs", "1", "--out", run_dir))[0] == 0
    )
    empty = write_idx_dir(
        tmp_path / "empty", files={IDX_NAMES[2]: _gz(EMPTY_IMAGES), IDX_NAMES[3]: _gz(NO_LABELS)}
    )
    argv = ("eval", "--device", "cpu", "--data-dir", empty, "--checkpoint", run_dir)
    assert_refused(run_in_process(capsys, *argv), 2, "no test images")


LAYER = '[[layers]]\ntype = "{kind}"\n{keys}\n'
DEGENERATE = {
    "kernel 0": ("conv", "out = 4\nkernel = 0", "kernel: must be at least 1"),
    "stride 0": ("conv", "out = 4\nkernel = 3\nstride = 0", "stride: must be at least 1"),
    "negative pad": ("conv", "out = 4\nkernel = 3\npad = -1", "pad: must be at least 0"),
    "no channels": ("conv", "out = 0\nkernel = 3", "out: must be at least 1"),
    "no features": ("dense", "out = 0", "out: must be at least 1"),
    "pool kernel 0": ("maxpool", "kernel = 0", "kernel: must be at least 1"),
    "pool stride 0": ("avgpool", "kernel = 2\nstride = 0", "stride: must be at least 1"),
    "kernel larger than the image": ("conv", "out = 4\nkernel = 99", "does not fit"),
    "kernel 2**62": ("conv", "out = 4\nkernel = 4611686018427387904", "does not fit"),
}


@pytest.mark.parametrize("case", sorted(DEGENERATE))
def test_a_degenerate_layer_is_one_line(capsys, tmp_path, case):
    kind, keys, fragment = DEGENERATE[case]
    text = LAYER.format(kind=kind, keys=keys) + '[[layers]]\ntype = "flatten"\n'
    text += '[[layers]]\ntype = "dense"\nout = 10\n'
    data = write_idx_dir(tmp_path / "data")
    model = write_model(tmp_path / "m.toml", text)
    assert_refused(run_in_process(capsys, *train_args(data, model)), 2, fragment)


def _nested_residual(depth: int) -> str:
    body = "[]"
    for _ in range(depth):
        body = '[{type = "residual", body = ' + body + "}]"
    return '[[layers]]\ntype = "residual"\nbody = ' + body + "\n"


@pytest.mark.parametrize(
    "text, fragment",
    [
        (_nested_residual(40), "nested more than 32 deep"),
        (_nested_residual(2000), "nested too deeply"),  # the TOML parser's RecursionError
        ('[[layers]]\ntype = "relu"\nx = ' + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
        ("a = " + "{b = " * 3000 + "1" + "}" * 3000 + "\n", "nested too deeply"),
    ],
    ids=["residual-40", "residual-2000", "arrays-5000", "tables-3000"],
)
def test_deeply_nested_model_files_are_one_line(capsys, tmp_path, text, fragment):
    model = write_model(tmp_path / "deep.toml", text)
    argv = train_args(write_idx_dir(tmp_path / "data"), model)
    assert_refused(run_in_process(capsys, *argv), 2, fragment)


def test_nesting_up_to_the_limit_still_builds():
    from convnet_gpu.models import MAX_NESTING, _build_layers

    spec = [{"type": "relu"}]
    for _ in range(MAX_NESTING):
        spec = [{"type": "residual", "body": spec}]
    assert len(_build_layers(spec, "m")) == 1


def test_a_model_file_that_is_not_text_is_one_line(capsys, tmp_path):
    model = tmp_path / "binary.toml"
    model.write_bytes(bytes(range(256)) * 4)
    argv = train_args(write_idx_dir(tmp_path / "data"), model)
    assert_refused(run_in_process(capsys, *argv), 2, "binary.toml")


def _not_a_regular_file(path, kind: str):
    """`path` as a link to /dev/zero (size 0, endless) or a FIFO (blocks a reader), or a file
    larger than any model file."""
    import os

    if kind == "/dev/zero":
        path.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.write_text("#" * (2 << 20))
    return path


@pytest.mark.parametrize(
    "kind, fragment",
    [("/dev/zero", "not a regular file"), ("fifo", "not a regular file"), ("2 MiB", "1.0 MiB")],
)
def test_a_model_file_is_a_bounded_regular_file(tmp_path, kind, fragment):
    """Under the memory cap and a timeout: /dev/zero was a MemoryError, a FIFO hung."""
    model = _not_a_regular_file(tmp_path / "model.toml", kind)
    result = run_subprocess(*train_args(write_idx_dir(tmp_path / "data"), model),
                            memory_cap=MEMORY_CAP, timeout=30)  # fmt: skip
    assert_refused(result, 2, "model.toml", fragment)


@pytest.mark.parametrize("kind", ["/dev/zero", "fifo"])
def test_a_cifar_batch_is_a_regular_file(capsys, tmp_path, kind):
    """The data locator takes regular files only, and so does the unpickler itself (its bound
    is the file's size, which /dev/zero gives as 0)."""
    from convnet_gpu.data.errors import DataError
    from convnet_gpu.data.unpickler import safe_load_pickle

    folder = tmp_path / "cifar-10-batches-py"
    write_cifar(folder)
    (folder / "data_batch_1").unlink()
    _not_a_regular_file(folder / "data_batch_1", kind)
    argv = ("train", "--device", "cpu", "--dataset", "cifar-10", "--data-dir", folder)
    assert_refused(run_in_process(capsys, *argv), 2, "missing data_batch_1")
    with pytest.raises(DataError, match="data_batch_1: not a regular file"):
        safe_load_pickle(folder / "data_batch_1")
