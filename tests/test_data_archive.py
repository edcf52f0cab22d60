"""Tests for convnet_gpu.data.archive: safe extraction of a downloaded tarball."""

from __future__ import annotations

from pathlib import Path

import pytest
from data_helpers import make_tar, md5
from helpers import assert_one_line_mentioning

from convnet_gpu.data import DataError
from convnet_gpu.data.archive import extracted_intact, safe_extract


def write_archive(directory: Path, tar_bytes: bytes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    archive = directory / "top.tar.gz"
    archive.write_bytes(tar_bytes)
    return archive


def test_extracts_under_the_top_folder_replacing_an_old_copy(tmp_path):
    contents = {"one": b"1" * 300, "sub/two": b"22"}
    archive = write_archive(
        tmp_path, make_tar([(f"top/{n}", c, "file") for n, c in contents.items()])
    )
    (tmp_path / "top").mkdir()
    (tmp_path / "top" / "stale").write_bytes(b"old")
    final = safe_extract(archive, "top", tmp_path)
    assert final == tmp_path / "top"
    assert (final / "one").read_bytes() == contents["one"]
    assert (final / "sub" / "two").read_bytes() == contents["sub/two"]
    assert not (final / "stale").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["top", "top.tar.gz"]  # no staging


@pytest.mark.parametrize(
    "evil",
    [
        ("../escaped", b"x", "file"),
        ("top/../../escaped", b"x", "file"),
        ("/tmp/escaped-absolute", b"x", "file"),
        ("top/link", b"/etc/passwd", "symlink"),
        ("elsewhere/file", b"x", "file"),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "symlink", "outside-top"],
)
def test_rejects_malicious_tar_member(tmp_path, evil):
    cache = tmp_path / "cache"
    archive = write_archive(cache, make_tar([("top/good", b"fine", "file"), evil]))
    with pytest.raises(DataError) as error:
        safe_extract(archive, "top", cache)
    assert_one_line_mentioning(error, str(archive), "refusing to extract", repr(evil[0]))
    assert not (tmp_path / "escaped").exists() and not Path("/tmp/escaped-absolute").exists()
    assert sorted(p.name for p in cache.iterdir()) == ["top.tar.gz"]  # nothing extracted


def test_corrupt_archive(tmp_path):
    archive = write_archive(tmp_path, b"not a tarball")
    with pytest.raises(DataError) as error:
        safe_extract(archive, "top", tmp_path)
    assert_one_line_mentioning(error, "top.tar.gz", "cannot extract")


def test_extracted_intact_checks_member_md5s(tmp_path):
    top = tmp_path / "top"
    assert not extracted_intact(top, [])
    top.mkdir()
    assert extracted_intact(top, [])  # nothing to verify: an extracted folder counts
    (top / "one").write_bytes(b"1")
    assert extracted_intact(top, [("one", md5(b"1")), ("one", None)])
    assert not extracted_intact(top, [("one", md5(b"2"))])
    assert not extracted_intact(top, [("two", None)])
