"""Sizes taken from flags, model files and headers are bounded before anything is allocated.

Each case runs the CLI in a subprocess under an address-space cap (RLIMIT_AS, MEMORY_CAP):
an allocation of the claimed size would fail there with a MemoryError and a traceback, so a
passing case proves the refusal came first. The one line names the size and the limit.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import zipfile

import numpy as np
import pytest
from data_helpers import write_cifar, write_meta
from hostile_helpers import (
    IDX_NAMES,
    MEMORY_CAP,
    assert_refused,
    idx_bytes,
    run_subprocess,
    train_args,
    tree_hashes,
    write_idx_dir,
    write_model,
)

CONV = '[[layers]]\ntype = "conv"\nout = {out}\nkernel = 3\npad = {pad}\n'
HEAD = '[[layers]]\ntype = "flatten"\n\n[[layers]]\ntype = "dense"\nout = {out}\n'
TAIL = '\n[[layers]]\ntype = "dense"\nout = 10\n'
# A gzip member of 16 MiB of zeros (16 KiB): gzip readers inflate concatenated members as one
# stream, so N copies make a small file that inflates to N * 16 MiB.
_ZEROS_16_MIB = gzip.compress(bytes(1 << 24), compresslevel=9)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile-limits")
    return root, write_idx_dir(root / "data"), write_model(root / "tiny.toml")


def refused_under_cap(*argv, fragments=("needs", "free")) -> str:
    result = run_subprocess(*argv, memory_cap=MEMORY_CAP)
    return assert_refused(result, 2, *fragments)


@pytest.mark.parametrize("batch", ["1000000", "1000000000"])
def test_a_huge_batch_is_refused_before_setup(tiny, batch):
    root, data, model = tiny
    line = refused_under_cap(*train_args(data, model, "--batch-size", batch, "--out", root / "b"))
    assert f"batch size {batch}" in line and "--batch-size" in line
    assert not (root / "b" / "checkpoint.npz").exists()


@pytest.mark.parametrize(
    "text",
    [
        CONV.format(out=10**9, pad=1) + HEAD.format(out=10),  # 10**9 channels
        CONV.format(out=4, pad=10**6) + HEAD.format(out=10),  # a 2000008x2000008 image
        HEAD.format(out=2**62) + TAIL,  # once "negative dimensions"
        HEAD.format(out=10**12) + TAIL,
    ],
    ids=["channels", "padding", "dense-2**62", "dense-10**12"],
)
def test_a_huge_model_file_is_refused_before_setup(tiny, tmp_path, text):
    _, data, _ = tiny
    model = write_model(tmp_path / "huge.toml", text)
    refused_under_cap(*train_args(data, model, "--out", tmp_path / "run"), fragments=("needs",))


def test_eval_and_bench_bound_their_batch_too(tiny, tmp_path):
    root, data, model = tiny
    argv = train_args(data, model, "--epochs", "1", "--out", tmp_path / "run")
    assert run_subprocess(*argv)[0] == 0
    before = tree_hashes(tmp_path / "run")
    refused_under_cap(
        "eval", "--device", "cpu", "--data-dir", data, "--checkpoint", tmp_path / "run",
        "--batch-size", "1000000000",
    )  # fmt: skip
    assert tree_hashes(tmp_path / "run") == before
    refused_under_cap(
        "bench", "--device", "cpu", "--model", model, "--batch-size", "1000000000",
        "--peer", "none",
    )  # fmt: skip


def test_epochs_beyond_memory_are_refused_before_the_lr_table(tiny):
    root, data, model = tiny
    line = refused_under_cap(*train_args(data, model, "--epochs", "100000000000"))
    assert "learning-rate table" in line and "--epochs" in line


def test_an_idx_header_claiming_huge_images_is_refused(tmp_path):
    forged = gzip.compress(idx_bytes(np.zeros(0), dims=(60000, 100000, 100000)))
    data = write_idx_dir(tmp_path / "data", files={IDX_NAMES[0]: forged})
    line = refused_under_cap(*train_args(data, write_model(tmp_path / "m.toml")))
    assert "60000x100000x100000" in line and "TiB" in line


def test_a_raw_idx_header_claiming_huge_images_is_refused(tmp_path):
    data = write_idx_dir(tmp_path / "data")
    (data / f"{IDX_NAMES[0]}.gz").unlink()
    (data / IDX_NAMES[0]).write_bytes(idx_bytes(np.zeros(8), dims=(60000, 100000, 100000)))
    refused_under_cap(*train_args(data, write_model(tmp_path / "m.toml")))


def test_a_gzip_bomb_is_inflated_only_as_far_as_its_header_goes(tmp_path):
    """2 MB of gzip that inflates to 2 GiB behind a valid 48x8x8 header: the reader stops a
    mebibyte past the payload and calls it trailing bytes (a full inflate would pass the cap)."""
    header = idx_bytes(np.zeros((48, 8, 8)))
    bomb = gzip.compress(header) + _ZEROS_16_MIB * 128
    data = write_idx_dir(tmp_path / "data", files={IDX_NAMES[0]: bomb})
    refused_under_cap(
        *train_args(data, write_model(tmp_path / "m.toml")), fragments=("trailing bytes",)
    )


def test_a_gzip_bomb_claiming_its_size_in_the_header_is_refused(tmp_path):
    dims = (100000, 10000, 10000)
    header = idx_bytes(np.zeros(0), dims=dims)
    bomb = gzip.compress(header) + _ZEROS_16_MIB * 64
    data = write_idx_dir(tmp_path / "data", files={IDX_NAMES[0]: bomb})
    refused_under_cap(*train_args(data, write_model(tmp_path / "m.toml")))


def test_a_cifar_meta_with_a_million_class_names_is_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar(folder)
    write_meta(folder, names=[f"class{i}" for i in range(10**6)], py3=True)
    line = refused_under_cap(
        "train", "--device", "cpu", "--dataset", "cifar-10", "--data-dir", folder,
        "--no-progress", fragments=("1000000 classes", "10000"),
    )  # fmt: skip
    assert "batches.meta" in line


def test_a_checkpoint_npy_header_claiming_1e11_floats_is_refused(tiny, tmp_path):
    root, data, model = tiny
    run = tmp_path / "run"
    assert run_subprocess(*train_args(data, model, "--epochs", "1", "--out", run))[0] == 0
    with np.load(run / "checkpoint.npz") as archive:
        arrays = {key: archive[key] for key in archive.files}
    header = io.BytesIO()
    np.lib.format.write_array_header_2_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (10**11,)}
    )
    payload = io.BytesIO()
    np.savez(payload, **arrays)
    with zipfile.ZipFile(payload, "a") as archive:
        archive.writestr("params2.npy", header.getvalue() + bytes(400))
    (run / "checkpoint.npz").write_bytes(payload.getvalue())
    before = tree_hashes(run)
    line = refused_under_cap("eval", "--device", "cpu", "--data-dir", data, "--checkpoint", run)
    assert "372.5 GiB" in line
    refused_under_cap("train", "--device", "cpu", "--data-dir", data, "--resume", run)
    assert tree_hashes(run) == before
    assert json.loads((run / "summary.json").read_text())["epochs"] == 1


def _checkpoint_with_member(run, name: str, member: bytes, compress=zipfile.ZIP_STORED) -> None:
    """Rewrite run's checkpoint with one more zip member (`name`, raw bytes)."""
    with np.load(run / "checkpoint.npz") as archive:
        arrays = {key: archive[key] for key in archive.files}
    payload = io.BytesIO()
    np.savez(payload, **arrays)
    with zipfile.ZipFile(payload, "a") as archive:
        archive.writestr(name, member, compress_type=compress)
    (run / "checkpoint.npz").write_bytes(payload.getvalue())


def _npy_header(shape, descr="<f4") -> bytes:
    header = io.BytesIO()
    np.lib.format.write_array_header_2_0(
        header, {"descr": descr, "fortran_order": False, "shape": shape}
    )
    return header.getvalue()


def test_sizes_beyond_a_float_are_refused_in_words(tiny, tmp_path):
    """Claimed sizes above 1e308 bytes (a float overflows) and above a PiB (a 30-digit figure
    says nothing): an IDX header of 40 dimensions of 2**32-1, a dense layer of 10**400 outputs,
    a checkpoint array of shape (10**9,)*40."""
    root, data, model = tiny
    forged = gzip.compress(idx_bytes(np.zeros(0), dims=(0xFFFFFFFF,) * 40))
    bad_data = write_idx_dir(tmp_path / "data", files={IDX_NAMES[0]: forged})
    line = refused_under_cap(*train_args(bad_data, model), fragments=("more than 1024 TiB",))
    assert "uint8 values" in line
    huge = write_model(tmp_path / "huge.toml", HEAD.format(out="1" + "0" * 400))
    refused_under_cap(*train_args(data, huge), fragments=("more than 1024 TiB",))
    run = tmp_path / "run"
    assert run_subprocess(*train_args(data, model, "--epochs", "1", "--out", run))[0] == 0
    _checkpoint_with_member(run, "params2.npy", _npy_header((10**9,) * 40) + bytes(400))
    line = refused_under_cap("eval", "--device", "cpu", "--data-dir", data, "--checkpoint", run,
                             fragments=("more than 1024 TiB",))  # fmt: skip
    assert "array params2" in line


def _streamed_meta_member(run, millions: int, compress: int) -> None:
    """Replace run's checkpoint meta by "[" + "[],"*N + "[]]" for N = millions * 10**6, written
    in chunks (at N = 40 million, a 480 MB member that deflates to 0.9 MB)."""
    with np.load(run / "checkpoint.npz") as archive:
        arrays = {key: archive[key] for key in archive.files if key != "meta"}
    np.savez(run / "checkpoint.npz", **arrays)
    info = zipfile.ZipInfo("meta.npy")
    info.compress_type = compress
    chunk = ("[]," * 1_000_000).encode("utf-32-le")
    archive = zipfile.ZipFile(run / "checkpoint.npz", "a")
    with archive, archive.open(info, "w", force_zip64=True) as member:
        member.write(_npy_header((), descr=f"<U{3 * millions * 10**6 + 4}"))
        member.write("[".encode("utf-32-le"))
        for _ in range(millions):
            member.write(chunk)
        member.write("[]]".encode("utf-32-le"))


@pytest.mark.parametrize(
    "millions, compress, fragment",
    [
        (40, zipfile.ZIP_DEFLATED, "meta.npy is compressed"),  # 0.9 MB; json.loads: 2.6 GB
        (2, zipfile.ZIP_STORED, "more than the 16.0 MiB a checkpoint's meta may hold"),
    ],
    ids=["deflated", "stored"],
)
def test_a_meta_that_would_inflate_in_json_is_refused(tiny, tmp_path, millions, compress, fragment):
    root, data, model = tiny
    run = tmp_path / "run"
    assert run_subprocess(*train_args(data, model, "--epochs", "1", "--out", run))[0] == 0
    _streamed_meta_member(run, millions, compress)
    before = tree_hashes(run)
    argv = ("eval", "--device", "cpu", "--data-dir", data, "--checkpoint", run)
    refused_under_cap(*argv, fragments=(fragment,))
    refused_under_cap("train", "--device", "cpu", "--data-dir", data, "--resume", run,
                      fragments=(fragment,))  # fmt: skip
    assert tree_hashes(run) == before


def test_free_memory_without_memavailable_falls_back_to_free_pages(tmp_path, monkeypatch):
    from convnet_gpu import limits

    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       1000 kB\nMemFree:         500 kB\n")  # kernels < 3.14
    monkeypatch.setattr(limits, "_MEMINFO", str(meminfo))
    monkeypatch.setattr(limits, "_address_space_headroom", lambda: None)
    monkeypatch.setattr(limits, "_cgroup_headroom", lambda: None)
    pages = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert abs(limits.free_host_bytes() - pages) < 1 << 30  # free pages, a moment apart
    meminfo.write_text("MemAvailable:    2048 kB\n")
    assert limits.free_host_bytes() == 2 << 20


def test_a_cgroup_v2_memory_limit_bounds_free_memory(tmp_path, monkeypatch):
    from convnet_gpu import limits

    (tmp_path / "cgroup").write_text("0::/job/one\n")
    group = tmp_path / "root" / "job" / "one"
    group.mkdir(parents=True)
    (group / "memory.max").write_text("1073741824\n")
    (group / "memory.current").write_text("268435456\n")
    monkeypatch.setattr(limits, "_PROC_CGROUP", str(tmp_path / "cgroup"))
    monkeypatch.setattr(limits, "_CGROUP_ROOT", str(tmp_path / "root"))
    assert limits._cgroup_headroom() == 768 << 20
    assert limits.free_host_bytes() <= 768 << 20
    (group / "memory.max").write_text("max\n")
    assert limits._cgroup_headroom() is None
    (tmp_path / "cgroup").write_text("4:memory:/job\n")  # cgroup v1 only: not read
    assert limits._cgroup_headroom() is None
