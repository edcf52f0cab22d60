"""Tests for convnet_gpu.data.download against a local HTTP server on 127.0.0.1.

No test reaches any other host: `no_outside_network` refuses connections
anywhere but 127.0.0.1 / localhost for every test in this file.
"""

from __future__ import annotations

import hashlib
import io
import socket
import tarfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from helpers import assert_one_line_mentioning

from convnet_gpu.data import DataError, DatasetSource, fetch_dataset
from convnet_gpu.data import download as dl
from convnet_gpu.data.cifar import CIFAR10_FILES
from convnet_gpu.data.download import download
from convnet_gpu.data.fashion_mnist import IDX_FILE_NAMES

MAX_REQUESTS = 40  # the server answers 503 past this many requests
SOCKET_TIMEOUT_S = 5.0
CLIENT_TIMEOUT_S = 5.0
BODY = bytes(range(256)) * 40 + b"tail"  # 10244 bytes: several chunks at chunk_size=1000
CHUNK = 1000


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- local server


@dataclass
class Route:
    body: bytes
    ignore_range: bool = False  # always answer 200 with the whole body
    truncate_at: int | None = None  # send this many bytes, then close (promising all)
    truncations_left: int = 0  # how many requests get truncated
    stall_s: float = 0.0  # after a truncated send, hold the connection open this long
    status: int = 200


@dataclass
class LocalServer:
    base_url: str
    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range)

    def url(self, path: str) -> str:
        return self.base_url + path

    def ranges(self, path: str) -> list[str | None]:
        return [rng for seen, rng in self.requests if seen == path]


def make_handler(state: LocalServer):
    class Handler(BaseHTTPRequestHandler):
        timeout = SOCKET_TIMEOUT_S
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # keep pytest output clean
            pass

        def _send(self, status: int, body: bytes, headers: dict[str, str], send: int | None = None):
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body if send is None else body[:send])
            self.wfile.flush()
            if send is not None and self._route_stall:
                time.sleep(self._route_stall)
            self.close_connection = True

        _route_stall = 0.0

        def do_GET(self) -> None:
            range_header = self.headers.get("Range")
            state.requests.append((self.path, range_header))
            if len(state.requests) > MAX_REQUESTS:
                return self._send(503, b"too many requests", {})
            route = state.routes.get(self.path)
            if route is None:
                return self._send(404, b"not found", {})
            if route.status != 200:
                return self._send(route.status, b"error", {})
            body, status, headers = route.body, 200, {"Accept-Ranges": "bytes"}
            if range_header and not route.ignore_range:
                start = int(range_header.removeprefix("bytes=").rstrip("-"))
                if start >= len(body):
                    return self._send(416, b"", {"Content-Range": f"bytes */{len(body)}"})
                status = 206
                headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
                body = body[start:]
            send = None
            if route.truncate_at is not None and route.truncations_left > 0:
                route.truncations_left -= 1
                send = route.truncate_at
                self._route_stall = route.stall_s
            self._send(status, body, headers, send)

    return Handler


@pytest.fixture
def server():
    state = LocalServer(base_url="")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    httpd.daemon_threads = True
    state.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def no_outside_network(monkeypatch):
    """Fail any connection attempt to a host other than 127.0.0.1 / localhost."""
    real = socket.create_connection

    def guarded(address, *args, **kwargs):
        host = address[0]
        if host not in ("127.0.0.1", "localhost"):
            raise AssertionError(f"test tried to reach {host}; only 127.0.0.1 is allowed")
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", guarded)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(dl.CACHE_ENV_VAR, str(tmp_path / "cache-root"))


def get(url: str, dest: Path, **kwargs) -> Path:
    kwargs.setdefault("timeout", CLIENT_TIMEOUT_S)
    kwargs.setdefault("chunk_size", CHUNK)
    return download(url, dest, **kwargs)


def part_of(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


# ---------------------------------------------------------------- download


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


# ---------------------------------------------------------------- fetch_dataset


def tiny_sources(server: LocalServer, files: dict[str, bytes]) -> list[DatasetSource]:
    sources = []
    for index, (name, body) in enumerate(files.items()):
        server.routes["/" + name] = Route(body)
        checksum = {"md5": md5(body)} if index % 2 == 0 else {"sha256": sha256(body)}
        sources.append(DatasetSource(server.url("/" + name), **checksum))
    return sources


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


def make_tar(members: list[tuple[str, bytes | None, str]]) -> bytes:
    """(name, content, kind) with kind 'file', 'dir' or 'symlink' (content = target)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content, kind in members:
            info = tarfile.TarInfo(name)
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, content.decode()
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def archive_source(server, tar_bytes: bytes, members=()) -> DatasetSource:
    server.routes["/top.tar.gz"] = Route(tar_bytes)
    return DatasetSource(
        server.url("/top.tar.gz"), md5=md5(tar_bytes), extract="top", members=tuple(members)
    )


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
def test_fetch_dataset_rejects_malicious_tar_member(server, tmp_path, monkeypatch, evil):
    tar_bytes = make_tar([("top/good", b"fine", "file"), evil])
    monkeypatch.setattr(dl, "SOURCES", {"arc": [archive_source(server, tar_bytes)]})
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as error:
        fetch_dataset("arc", cache)
    assert_one_line_mentioning(error, "refusing to extract", repr(evil[0]))
    assert not (tmp_path / "escaped").exists() and not Path("/tmp/escaped-absolute").exists()
    assert sorted(p.name for p in cache.iterdir()) == ["top.tar.gz"]  # nothing extracted


def test_fetch_dataset_corrupt_archive(server, tmp_path, monkeypatch):
    monkeypatch.setattr(dl, "SOURCES", {"arc": [archive_source(server, b"not a tarball")]})
    with pytest.raises(DataError) as error:
        fetch_dataset("arc", tmp_path)
    assert_one_line_mentioning(error, "top.tar.gz", "cannot extract")


# ---------------------------------------------------------------- the real registry (no network)


def test_sources_registry_lists_official_files_with_checksums():
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
            assert dl._expected_digest(source.md5, source.sha256) is not None


# ---------------------------------------------------------------- the CLI command


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
