"""Tests for convnet_gpu.data.transfer (one resumable, checksummed download) against a local
HTTP server on 127.0.0.1.

No test reaches any other host: `no_outside_network` refuses connections anywhere but
127.0.0.1 / localhost for every test in this file.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from data_helpers import Route, local_server, md5, refuse_outside_network, sha256
from helpers import assert_one_line_mentioning

from convnet_gpu.data import DataError
from convnet_gpu.data.transfer import download, expected_digest, file_matches

CLIENT_TIMEOUT_S = 5.0
BODY = bytes(range(256)) * 40 + b"tail"  # 10244 bytes: several chunks at chunk_size=1000
CHUNK = 1000


@pytest.fixture
def server():
    with local_server() as state:
        yield state


@pytest.fixture(autouse=True)
def no_outside_network(monkeypatch):
    refuse_outside_network(monkeypatch)


def get(url: str, dest: Path, **kwargs) -> Path:
    kwargs.setdefault("timeout", CLIENT_TIMEOUT_S)
    kwargs.setdefault("chunk_size", CHUNK)
    return download(url, dest, **kwargs)


def part_of(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


@pytest.mark.parametrize("algorithm", ["sha256", "md5"])
def test_clean_download_verifies_checksum(server, tmp_path, algorithm):
    server.routes["/f.bin"] = Route(BODY)
    dest = tmp_path / "sub" / "f.bin"
    digest = {"sha256": sha256, "md5": md5}[algorithm](BODY)
    seen = []
    result = get(
        server.url("/f.bin"),
        dest,
        progress=lambda done, total: seen.append((done, total)),
        **{algorithm: digest},
    )
    assert result == dest
    assert dest.read_bytes() == BODY
    assert not part_of(dest).exists()
    assert seen[-1] == (len(BODY), len(BODY))
    assert len(seen) == -(-len(BODY) // CHUNK)
    assert server.ranges("/f.bin") == [None]


def test_download_without_checksum_and_uppercase_digest(server, tmp_path):
    server.routes["/f.bin"] = Route(BODY)
    assert get(server.url("/f.bin"), tmp_path / "a").read_bytes() == BODY
    assert get(server.url("/f.bin"), tmp_path / "b", md5=md5(BODY).upper()).read_bytes() == BODY


def test_malformed_checksum_argument_is_rejected(server, tmp_path):
    with pytest.raises(ValueError, match="md5"):
        get(server.url("/f.bin"), tmp_path / "f", md5="abc")
    assert server.requests == []


def test_corrupted_download_names_digests_and_leaves_nothing(server, tmp_path):
    corrupted = bytearray(BODY)
    corrupted[5000] ^= 0xFF
    server.routes["/f.bin"] = Route(bytes(corrupted))
    dest = tmp_path / "f.bin"
    with pytest.raises(DataError) as error:
        get(server.url("/f.bin"), dest, sha256=sha256(BODY))
    assert_one_line_mentioning(
        error, str(dest), "sha256", sha256(BODY), sha256(bytes(corrupted)), server.url("/f.bin")
    )
    assert not dest.exists() and not part_of(dest).exists()


def test_truncated_download_keeps_part_then_resumes_with_range(server, tmp_path):
    server.routes["/f.bin"] = Route(BODY, truncate_at=4321, truncations_left=1)
    dest = tmp_path / "f.bin"
    with pytest.raises(DataError) as error:
        get(server.url("/f.bin"), dest, md5=md5(BODY))
    assert_one_line_mentioning(
        error, server.url("/f.bin"), "truncated", "4321", str(len(BODY)), "rerun to resume"
    )
    assert not dest.exists()
    assert part_of(dest).read_bytes() == BODY[:4321]

    seen = []
    get(server.url("/f.bin"), dest, md5=md5(BODY), progress=lambda d, t: seen.append((d, t)))
    assert server.ranges("/f.bin") == [None, "bytes=4321-"]
    assert dest.read_bytes() == BODY
    assert not part_of(dest).exists()
    assert seen[0][0] > 4321 and seen[-1] == (len(BODY), len(BODY))


def test_truncated_twice_then_resumes_to_the_end(server, tmp_path):
    server.routes["/f.bin"] = Route(BODY, truncate_at=3000, truncations_left=2)
    dest = tmp_path / "f.bin"
    for _ in range(2):
        with pytest.raises(DataError, match="truncated"):
            get(server.url("/f.bin"), dest, sha256=sha256(BODY))
    assert part_of(dest).stat().st_size == 6000
    get(server.url("/f.bin"), dest, sha256=sha256(BODY))
    assert server.ranges("/f.bin") == [None, "bytes=3000-", "bytes=6000-"]
    assert dest.read_bytes() == BODY


def test_stalled_transfer_times_out_keeps_part_and_resumes(server, tmp_path):
    server.routes["/f.bin"] = Route(BODY, truncate_at=2500, truncations_left=1, stall_s=1.0)
    dest = tmp_path / "f.bin"
    with pytest.raises(DataError) as error:
        get(server.url("/f.bin"), dest, md5=md5(BODY), timeout=0.3)
    assert_one_line_mentioning(error, "truncated after", "timed out", "rerun to resume")
    # Whole chunks that arrived before the stall are kept (the partial chunk may be lost).
    kept = part_of(dest).read_bytes()
    assert 0 < len(kept) <= 2500 and kept == BODY[: len(kept)] and not dest.exists()
    get(server.url("/f.bin"), dest, md5=md5(BODY))
    assert server.ranges("/f.bin") == [None, f"bytes={len(kept)}-"]
    assert dest.read_bytes() == BODY


def test_resumed_download_with_wrong_bytes_is_deleted(server, tmp_path):
    server.routes["/f.bin"] = Route(BODY)
    dest = tmp_path / "f.bin"
    part_of(dest).write_bytes(b"x" * 100)  # a stale .part that is not a prefix of BODY
    with pytest.raises(DataError) as error:
        get(server.url("/f.bin"), dest, md5=md5(BODY))
    assert_one_line_mentioning(error, md5(BODY), "mismatch")
    assert server.ranges("/f.bin") == ["bytes=100-"]
    assert not dest.exists() and not part_of(dest).exists()
    get(server.url("/f.bin"), dest, md5=md5(BODY))  # a rerun starts clean
    assert dest.read_bytes() == BODY


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    server.routes["/f.bin"] = Route(BODY, ignore_range=True)
    dest = tmp_path / "f.bin"
    part_of(dest).write_bytes(b"garbage that must be discarded")
    get(server.url("/f.bin"), dest, sha256=sha256(BODY))
    assert server.ranges("/f.bin") == [f"bytes={len(b'garbage that must be discarded')}-"]
    assert dest.read_bytes() == BODY
    assert not part_of(dest).exists()


def test_complete_part_is_finished_after_416(server, tmp_path):
    server.routes["/f.bin"] = Route(BODY)
    dest = tmp_path / "f.bin"
    part_of(dest).write_bytes(BODY)  # e.g. killed between the last byte and the rename
    get(server.url("/f.bin"), dest, md5=md5(BODY))
    assert server.ranges("/f.bin") == [f"bytes={len(BODY)}-"]
    assert dest.read_bytes() == BODY and not part_of(dest).exists()


def test_oversized_part_after_416_restarts(server, tmp_path):
    server.routes["/f.bin"] = Route(BODY)
    dest = tmp_path / "f.bin"
    part_of(dest).write_bytes(BODY + b"extra")
    get(server.url("/f.bin"), dest, md5=md5(BODY))
    assert server.ranges("/f.bin") == [f"bytes={len(BODY) + 5}-", None]
    assert dest.read_bytes() == BODY


def test_unreachable_url_is_a_one_line_error(tmp_path):
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/f.bin"
    dest = tmp_path / "f.bin"
    with pytest.raises(DataError) as error:
        get(url, dest, md5=md5(BODY), timeout=2)
    assert_one_line_mentioning(error, url, "download failed")
    assert not dest.exists() and not part_of(dest).exists()


def test_http_error_status_is_a_one_line_error(server, tmp_path):
    url = server.url("/missing.bin")
    with pytest.raises(DataError) as error:
        get(url, tmp_path / "f.bin")
    assert_one_line_mentioning(error, url, "HTTP 404")
    server.routes["/boom"] = Route(b"", status=500)
    with pytest.raises(DataError) as error:
        get(server.url("/boom"), tmp_path / "g.bin")
    assert_one_line_mentioning(error, "HTTP 500")


def test_non_http_url_is_refused(tmp_path):
    with pytest.raises(DataError) as error:
        download("file:///etc/hostname", tmp_path / "f")
    assert_one_line_mentioning(error, "file:///etc/hostname", "http")


def test_destination_never_visible_half_written(server, tmp_path):
    server.routes["/f.bin"] = Route(BODY)
    dest = tmp_path / "f.bin"
    dest.write_bytes(b"old complete version")
    observed = []

    def progress(done, total):
        observed.append((dest.read_bytes(), part_of(dest).exists()))

    get(server.url("/f.bin"), dest, md5=md5(BODY), progress=progress)
    assert observed and all(
        content == b"old complete version" and part for content, part in observed
    )
    assert dest.read_bytes() == BODY


def test_expected_digest_prefers_sha256_and_normalizes_case():
    assert expected_digest(md5(BODY).upper(), None) == ("md5", md5(BODY))
    assert expected_digest(md5(BODY), sha256(BODY)) == ("sha256", sha256(BODY))
    assert expected_digest(None, None) is None
    with pytest.raises(ValueError, match="sha256"):
        expected_digest(None, "12")


def test_file_matches(tmp_path):
    path = tmp_path / "f"
    assert not file_matches(path, None)
    path.write_bytes(BODY)
    assert file_matches(path, None)
    assert file_matches(path, ("md5", md5(BODY)))
    assert not file_matches(path, ("sha256", sha256(b"other")))
