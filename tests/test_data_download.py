"""Tests for convnet_gpu.data.download: SOURCES, the cache folder and fetch_dataset, against a
local HTTP server on 127.0.0.1.

No test reaches any other host: `no_outside_network` refuses connections anywhere but
127.0.0.1 / localhost for every test in this file.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest
from data_helpers import (
    LocalServer,
    Route,
    isolate_download_cache,
    local_server,
    make_tar,
    md5,
    refuse_outside_network,
    sha256,
    write_cifar,
)
from helpers import assert_one_line_mentioning

from convnet_gpu.data import IDX_FILE_NAMES, DataError, DatasetSource, fetch_dataset, load_cifar10
from convnet_gpu.data import download as dl
from convnet_gpu.data.cifar10 import CIFAR10_FILES, CIFAR10_SUBFOLDER
from convnet_gpu.data.transfer import expected_digest


@pytest.fixture
def server():
    with local_server() as state:
        yield state


@pytest.fixture(autouse=True)
def no_outside_network(monkeypatch):
    refuse_outside_network(monkeypatch)


@pytest.fixture(autouse=True)
def download_cache(tmp_path, monkeypatch) -> Path:
    return isolate_download_cache(tmp_path, monkeypatch)


def tiny_sources(server: LocalServer, files: dict[str, bytes]) -> list[DatasetSource]:
    sources = []
    for index, (name, body) in enumerate(files.items()):
        server.routes["/" + name] = Route(body)
        checksum = {"md5": md5(body)} if index % 2 == 0 else {"sha256": sha256(body)}
        sources.append(DatasetSource(server.url("/" + name), **checksum))
    return sources


def archive_source(server, tar_bytes: bytes, members=()) -> DatasetSource:
    server.routes["/top.tar.gz"] = Route(tar_bytes)
    return DatasetSource(
        server.url("/top.tar.gz"), md5=md5(tar_bytes), extract="top", members=tuple(members)
    )


# ---- fetch_dataset --------------------------------------------------------------------------
def test_fetch_dataset_downloads_then_skips_verified_files(server, tmp_path, monkeypatch):
    files = {"a.gz": b"first file" * 50, "b.gz": b"second" * 70}
    monkeypatch.setattr(dl, "SOURCES", {"tiny": tiny_sources(server, files)})
    cache = tmp_path / "cache"
    seen = []
    assert (
        fetch_dataset("tiny", cache, progress=lambda name, done, total: seen.append(name)) == cache
    )
    assert {p.name: p.read_bytes() for p in cache.iterdir()} == files
    assert set(seen) == {"a.gz", "b.gz"}
    assert len(server.requests) == 2

    fetch_dataset("tiny", cache)
    assert len(server.requests) == 2  # both present with the right checksum

    (cache / "b.gz").write_bytes(b"damaged")
    fetch_dataset("tiny", cache)
    assert [path for path, _ in server.requests[2:]] == ["/b.gz"]
    assert (cache / "b.gz").read_bytes() == files["b.gz"]


def test_fetch_dataset_default_cache_dir_uses_env(server, tmp_path, monkeypatch):
    monkeypatch.setattr(dl, "SOURCES", {"tiny": tiny_sources(server, {"a.gz": b"abc"})})
    monkeypatch.setenv(dl.CACHE_ENV_VAR, str(tmp_path / "root"))
    assert fetch_dataset("tiny") == tmp_path / "root" / "tiny"
    assert (tmp_path / "root" / "tiny" / "a.gz").read_bytes() == b"abc"


def test_default_cache_dir_without_env(monkeypatch):
    monkeypatch.delenv(dl.CACHE_ENV_VAR, raising=False)
    assert dl.dataset_cache_dir("mnist") == Path.home() / ".cache" / "convnet_gpu" / "mnist"


def test_fetch_dataset_unknown_name():
    with pytest.raises(DataError) as error:
        fetch_dataset("imagenet")
    assert_one_line_mentioning(error, "imagenet", "cifar-10", "fashion-mnist", "mnist")


def test_fetch_dataset_propagates_checksum_failure(server, tmp_path, monkeypatch):
    server.routes["/a.gz"] = Route(b"served bytes")
    source = DatasetSource(server.url("/a.gz"), md5=md5(b"published bytes"))
    monkeypatch.setattr(dl, "SOURCES", {"tiny": [source]})
    with pytest.raises(DataError) as error:
        fetch_dataset("tiny", tmp_path)
    assert_one_line_mentioning(error, md5(b"published bytes"), md5(b"served bytes"))
    assert list(tmp_path.iterdir()) == []


# ---- archives -------------------------------------------------------------------------------
def test_fetch_dataset_extracts_archive_safely(server, tmp_path, monkeypatch):
    contents = {"one": b"1" * 300, "two": b"22"}
    tar_bytes = make_tar(
        [("top", None, "dir")] + [(f"top/{n}", c, "file") for n, c in contents.items()]
    )
    members = [(name, md5(content)) for name, content in contents.items()]
    monkeypatch.setattr(dl, "SOURCES", {"arc": [archive_source(server, tar_bytes, members)]})
    cache = tmp_path / "cache"
    fetch_dataset("arc", cache)
    assert {p.name: p.read_bytes() for p in (cache / "top").iterdir()} == contents
    assert sorted(p.name for p in cache.iterdir()) == ["top"]  # archive and staging removed
    fetch_dataset("arc", cache)
    assert len(server.requests) == 1  # extracted files verified: nothing fetched again


def test_fetch_dataset_rejects_member_md5_mismatch(server, tmp_path, monkeypatch):
    tar_bytes = make_tar([("top/one", b"actual", "file")])
    source = archive_source(server, tar_bytes, [("one", md5(b"published"))])
    monkeypatch.setattr(dl, "SOURCES", {"arc": [source]})
    with pytest.raises(DataError) as error:
        fetch_dataset("arc", tmp_path)
    assert_one_line_mentioning(error, str(tmp_path / "top"), "md5")


def test_fetch_dataset_refuses_a_malicious_archive(server, tmp_path, monkeypatch):
    tar_bytes = make_tar([("top/good", b"fine", "file"), ("../escaped", b"x", "file")])
    monkeypatch.setattr(dl, "SOURCES", {"arc": [archive_source(server, tar_bytes)]})
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as error:
        fetch_dataset("arc", cache)
    assert_one_line_mentioning(error, "refusing to extract", "'../escaped'")
    assert sorted(p.name for p in cache.iterdir()) == ["top.tar.gz"]  # nothing extracted


def test_fetch_dataset_extracts_a_real_layout_cifar_tarball_that_loads(
    tmp_path, monkeypatch, download_cache
):
    staging = tmp_path / "staging"
    write_cifar(staging / CIFAR10_SUBFOLDER)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(staging / CIFAR10_SUBFOLDER, arcname=CIFAR10_SUBFOLDER)
    tarball = buffer.getvalue()
    members = tuple(
        (name, hashlib.md5((staging / CIFAR10_SUBFOLDER / name).read_bytes()).hexdigest())
        for name in CIFAR10_FILES
    )
    # The tarball is already in the cache with the right md5, so nothing is downloaded;
    # the unroutable URL proves it (any fetch would fail).
    source = DatasetSource(
        "http://127.0.0.1:9/cifar-10-python.tar.gz",
        md5=hashlib.md5(tarball).hexdigest(),
        extract=CIFAR10_SUBFOLDER,
        members=members,
    )
    monkeypatch.setattr(dl, "SOURCES", {"cifar-10": [source]})
    cache = download_cache / "cifar-10"
    cache.mkdir(parents=True)
    (cache / "cifar-10-python.tar.gz").write_bytes(tarball)
    assert dl.fetch_dataset("cifar-10") == cache
    assert not (cache / "cifar-10-python.tar.gz").exists()
    assert load_cifar10().train_x.shape == (20, 3, 32, 32)
    assert dl.fetch_dataset("cifar-10") == cache  # intact: skipped without any request


# ---- the real SOURCES (no network) ----------------------------------------------------------
def test_sources_lists_official_files_with_checksums():
    assert set(dl.SOURCES) == {"fashion-mnist", "mnist", "cifar-10"}
    for name in ("fashion-mnist", "mnist"):
        assert [s.filename for s in dl.SOURCES[name]] == [f"{n}.gz" for n in IDX_FILE_NAMES]
    assert dl.SOURCES["fashion-mnist"][0].md5 == "8d4fb7e6c68d591d4c3dfef9ec88bf0d"
    assert dl.SOURCES["mnist"][0].md5 == "f68b3c2dcbeaaa9fbdd348bbdeb94873"
    (cifar,) = dl.SOURCES["cifar-10"]
    assert cifar.filename == "cifar-10-python.tar.gz"
    assert cifar.md5 == "c58f30108f718f92721af3b95e74349a"
    assert cifar.extract == "cifar-10-batches-py"
    assert sorted(name for name, _ in cifar.members) == sorted(CIFAR10_FILES)
    for sources in dl.SOURCES.values():
        for source in sources:
            assert source.url.startswith(("http://", "https://"))
            assert expected_digest(source.md5, source.sha256) is not None


# ---- the CLI command ------------------------------------------------------------------------
def test_download_command_fetches_into_the_cache_dir(server, tmp_path, monkeypatch, capsys):
    from convnet_gpu import cli

    files = {"train-images-idx3-ubyte.gz": b"images" * 30, "train-labels-idx1-ubyte.gz": b"labels"}
    monkeypatch.setattr(dl, "SOURCES", {"fashion-mnist": tiny_sources(server, files)})
    code = cli.main(["download", "fashion-mnist", "--cache-dir", str(tmp_path / "fm")])
    out = capsys.readouterr().out
    assert code == 0 and "checksums verified" in out
    assert {p.name: p.read_bytes() for p in (tmp_path / "fm").iterdir()} == files


def test_download_command_failure_is_one_line_exit_2(server, tmp_path, monkeypatch, capsys):
    from convnet_gpu import cli

    server.routes["/gone.gz"] = Route(b"", status=404)
    monkeypatch.setattr(
        dl, "SOURCES", {"mnist": [DatasetSource(server.url("/gone.gz"), md5="0" * 32)]}
    )
    code = cli.main(["download", "mnist", "--cache-dir", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "gone.gz" in err
