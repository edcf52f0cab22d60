"""Helpers of the data tests (import as `from data_helpers import ...`): small datasets written
in the exact file formats, an isolated download cache, and a local HTTP server.

The fake datasets are tiny but real: IDX files with the real header layout (optionally
gzipped), and CIFAR-10 batches pickled the way the real ones were (see `py2_pickle`).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import pickletools
import socket
import struct
import tarfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from convnet_gpu.data import download as dl
from convnet_gpu.data.cifar10 import CIFAR10_CLASSES
from convnet_gpu.data.mnist import IDX_FILE_NAMES


def isolate_download_cache(tmp_path: Path, monkeypatch) -> Path:
    """Point the download cache at an empty folder so a real ~/.cache cannot leak in."""
    root = tmp_path / "cache-root"
    monkeypatch.setenv(dl.CACHE_ENV_VAR, str(root))
    return root


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---- IDX files (Fashion-MNIST, MNIST) -------------------------------------------------------
IDX_TYPE_BYTES = {np.dtype("u1"): 0x08, np.dtype(">i2"): 0x0B, np.dtype(">f4"): 0x0D}


def idx_bytes(array: np.ndarray, big_endian_dtype: str = "u1") -> bytes:
    dtype = np.dtype(big_endian_dtype)
    header = bytes([0, 0, IDX_TYPE_BYTES[dtype], array.ndim])
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(dtype).tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool = False, dtype: str = "u1") -> Path:
    data = idx_bytes(array, dtype)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def sample_images(count: int, seed: int = 0, size: int = 4) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, size, size), dtype=np.uint8)


def write_idx_dataset(directory: Path, train_x, train_y, test_x, test_y, gz: bool = True) -> Path:
    """The four IDX files of an MNIST-layout dataset in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for name, array in zip(IDX_FILE_NAMES, (train_x, train_y, test_x, test_y)):
        write_idx(directory / f"{name}{suffix}", array, gz=gz)
    return directory


# ---- CIFAR-10 python batches ----------------------------------------------------------------
CIFAR_BATCH_SIZES = (4, 3, 5, 2, 6)  # 20 training images
CIFAR_TEST_SIZE = 7


class _Py2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 `str` opcodes, as the real CIFAR files do."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def py2_pickle(obj) -> bytes:
    """`obj` pickled as the real batches were: by Python 2 (protocol 2) with numpy 1.x.

    Byte strings are SHORT_BINSTRING/BINSTRING opcodes and arrays are rebuilt through
    numpy.core.multiarray._reconstruct, numpy.ndarray and numpy.dtype.
    """
    buffer = io.BytesIO()
    _Py2Pickler(buffer, protocol=2).dump(obj)
    data = buffer.getvalue()
    # numpy >= 2 names its module numpy._core; the real files say numpy.core.
    return data.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def globals_in(data: bytes) -> set[str]:
    return {arg for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"}


def sample_rows(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 3072), dtype=np.uint8)


def write_batch(path: Path, data, labels, *, py3: bool = False, extra: dict | None = None) -> Path:
    batch = {
        b"batch_label": b"training batch 1 of 5",
        b"data": data,
        b"labels": labels,
        b"filenames": [b"img_%d.png" % i for i in range(len(labels))],
    }
    batch.update(extra or {})
    path.write_bytes(pickle.dumps(batch, protocol=2) if py3 else py2_pickle(batch))
    return path


def write_meta(directory: Path, names=CIFAR10_CLASSES, py3: bool = False) -> None:
    meta = {
        b"num_cases_per_batch": 10000,
        b"label_names": [n.encode() for n in names],
        b"num_vis": 3072,
    }
    (directory / "batches.meta").write_bytes(
        pickle.dumps(meta, protocol=2) if py3 else py2_pickle(meta)
    )


def write_cifar(
    directory: Path, py3: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Write a 20-image CIFAR-10 lookalike: (train rows, train labels, test rows, test labels)."""
    directory.mkdir(parents=True, exist_ok=True)
    rows, labels = [], []
    for index, size in enumerate(CIFAR_BATCH_SIZES, start=1):
        data = sample_rows(size, index)
        data[:, :1024] //= 2  # a darker red plane: the channel means differ
        batch_labels = [(index + i) % 10 for i in range(size)]
        write_batch(directory / f"data_batch_{index}", data, batch_labels, py3=py3)
        rows.append(data)
        labels.extend(batch_labels)
    test = sample_rows(CIFAR_TEST_SIZE, 99)
    test_labels = [i % 10 for i in range(CIFAR_TEST_SIZE)]
    write_batch(directory / "test_batch", test, test_labels, py3=py3)
    write_meta(directory, py3=py3)
    return np.concatenate(rows), np.array(labels), test, np.array(test_labels)


# ---- a local HTTP server --------------------------------------------------------------------
MAX_REQUESTS = 40  # the server answers 503 past this many requests
SOCKET_TIMEOUT_S = 5.0


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


@contextmanager
def local_server() -> Iterator[LocalServer]:
    """A threaded HTTP server on 127.0.0.1 serving `routes`, recording every request."""
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


def refuse_outside_network(monkeypatch) -> None:
    """Fail any connection attempt to a host other than 127.0.0.1 / localhost."""
    real = socket.create_connection

    def guarded(address, *args, **kwargs):
        host = address[0]
        if host not in ("127.0.0.1", "localhost"):
            raise AssertionError(f"test tried to reach {host}; only 127.0.0.1 is allowed")
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", guarded)


# ---- tar archives ---------------------------------------------------------------------------
def make_tar(members: list[tuple[str, bytes | None, str]]) -> bytes:
    """A .tar.gz of (name, content, kind); kind 'file', 'dir' or 'symlink' (content = target)."""
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
