"""Reader for the IDX file format used by MNIST and Fashion-MNIST.

Layout (all integers big-endian):
    bytes 0-1   zero
    byte  2     element type (0x08 = uint8, ...)
    byte  3     number of dimensions D (>= 1)
    4*D bytes   dimension sizes, uint32 each
    payload     prod(dims) elements, row-major
Files may be gzip-compressed; compression is detected from the content.

The header is read first and the payload it claims is bounded before it is read: a header (or a
small gzip stream that inflates to gigabytes) claiming more than memory can hold is refused, and
a gzip stream is inflated only up to the bytes its header accounts for.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..limits import check_host_fits
from .errors import DataError

GZIP_MAGIC = b"\x1f\x8b"
HEADER_PREFIX_BYTES = 4
DIM_BYTES = 4

# IDX type byte -> big-endian dtype of the payload.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _fail(path: str | os.PathLike, problem: str) -> DataError:
    return DataError(f"{os.fspath(path)}: {problem}")


# The loaders keep the payload and a 4-byte-per-value copy (float32 images, int32 labels).
LOADED_BYTES_PER_PAYLOAD_BYTE = 5
_EXTRA_COUNTED = 1 << 20  # trailing bytes of a gzip stream counted before giving up


@contextmanager
def _open_payload(path: Path) -> Iterator[BinaryIO]:
    """The file's bytes as a stream: inflated on the fly where it is gzip-compressed."""
    try:
        raw = open(path, "rb")  # noqa: SIM115 - closed below, after the gzip reader
    except FileNotFoundError:
        raise _fail(path, "file not found") from None
    except IsADirectoryError:
        raise _fail(path, "is a directory, expected an IDX file") from None
    except OSError as exc:
        raise _fail(path, f"cannot read file: {exc.strerror or exc}") from None
    with raw:
        compressed = raw.read(2) == GZIP_MAGIC
        raw.seek(0)
        stream = gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw
        try:
            yield stream
        except (OSError, EOFError, zlib.error) as exc:
            if not compressed:
                raise _fail(path, f"cannot read file: {exc}") from None
            raise _fail(path, f"corrupt gzip data ({exc})") from None


def _read_header(path: Path, stream: BinaryIO) -> bytes:
    prefix = stream.read(HEADER_PREFIX_BYTES)
    ndim = prefix[3] if len(prefix) == HEADER_PREFIX_BYTES else 0
    return prefix + stream.read(DIM_BYTES * ndim)


def _drain(stream: BinaryIO, chunks: int = 64) -> None:
    """Read on (a bounded amount, discarded), so a damaged gzip stream reports itself."""
    for _ in range(chunks):
        if not stream.read(_EXTRA_COUNTED):
            return


def _count_rest(stream: BinaryIO) -> tuple[int, bool]:
    """(bytes left in the stream, all counted), reading at most _EXTRA_COUNTED of them."""
    rest = len(stream.read(_EXTRA_COUNTED))
    return rest, len(stream.read(1)) == 0


def _parse_header(path: Path, data: bytes) -> tuple[np.dtype, tuple[int, ...], int]:
    """Return (payload dtype, dims, payload offset)."""
    if len(data) < HEADER_PREFIX_BYTES:
        raise _fail(path, f"truncated IDX header ({len(data)} bytes, need at least 4)")
    magic = int.from_bytes(data[:HEADER_PREFIX_BYTES], "big")
    if data[0] != 0 or data[1] != 0:
        raise _fail(
            path,
            f"bad IDX magic 0x{magic:08x} (expected 0x00000803 or 0x00000801); "
            "is this an IDX file?",
        )
    type_byte, ndim = data[2], data[3]
    if type_byte not in IDX_DTYPES:
        known = ", ".join(f"0x{t:02x}" for t in IDX_DTYPES)
        raise _fail(
            path,
            f"unsupported IDX element type 0x{type_byte:02x} in magic 0x{magic:08x} "
            f"(supported: {known})",
        )
    if ndim < 1:
        raise _fail(path, f"IDX header declares {ndim} dimensions (need at least 1)")
    offset = HEADER_PREFIX_BYTES + DIM_BYTES * ndim
    if len(data) < offset:
        raise _fail(
            path,
            f"truncated IDX header ({len(data)} bytes, need {offset} for {ndim} dimensions)",
        )
    dims = tuple(
        int.from_bytes(data[start : start + DIM_BYTES], "big")
        for start in range(HEADER_PREFIX_BYTES, offset, DIM_BYTES)
    )
    return IDX_DTYPES[type_byte], dims, offset


def _check_payload_length(
    path: Path, dims: tuple[int, ...], dtype: np.dtype, actual: int, counted: bool = True
) -> None:
    expected = math.prod(dims) * dtype.itemsize
    shape = "x".join(str(d) for d in dims)
    if actual < expected:
        raise _fail(
            path,
            f"truncated payload: {actual} bytes, expected {expected} for shape {shape} "
            f"of {dtype.name}",
        )
    if actual > expected:
        raise _fail(
            path,
            f"trailing bytes: payload is {actual} bytes, expected {expected} for shape "
            f"{shape} of {dtype.name} ({actual - expected}{'' if counted else ' or more'} extra)",
        )


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (raw or gzip-compressed) into a native-endian array.

    Raises DataError with a one-line message naming the file on any failure, and before
    reading a payload larger than memory can hold.
    """
    path = Path(path)
    with _open_payload(path) as stream:
        header = _read_header(path, stream)
        try:
            dtype, dims, offset = _parse_header(path, header)
        except DataError:
            _drain(stream)  # a corrupt gzip stream inflates to a garbage header: say corrupt
            raise
        expected = math.prod(dims) * dtype.itemsize
        shape = "x".join(str(d) for d in dims)
        check_host_fits(
            f"{path}: loading the {shape} {dtype.name} values of its header",
            expected * LOADED_BYTES_PER_PAYLOAD_BYTE,
            "the file is damaged or not an IDX dataset file",
        )  # fmt: skip
        data = stream.read(expected)
        rest, counted = _count_rest(stream) if len(data) == expected else (0, True)
    _check_payload_length(path, dims, dtype, len(data) + rest, counted)
    array = np.frombuffer(data, dtype=dtype, count=math.prod(dims))
    # astype copies, which also makes the result writable and native-endian.
    return array.astype(dtype.newbyteorder("=")).reshape(dims)


def _require_uint8(path: str | os.PathLike, array: np.ndarray, what: str) -> None:
    if array.dtype != np.uint8:
        raise _fail(path, f"{what} must be uint8 (IDX type 0x08), got {array.dtype}")


def load_idx_pair(
    images_path: str | os.PathLike, labels_path: str | os.PathLike
) -> tuple[np.ndarray, np.ndarray]:
    """Load matching image and label IDX files.

    Returns (images uint8 (N, H, W), labels uint8 (N,)).
    """
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3:
        raise _fail(images_path, f"expected 3-D images (N, H, W), got shape {images.shape}")
    if labels.ndim != 1:
        raise _fail(labels_path, f"expected 1-D labels (N,), got shape {labels.shape}")
    _require_uint8(images_path, images, "images")
    _require_uint8(labels_path, labels, "labels")
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"image/label count mismatch: {os.fspath(images_path)} has {images.shape[0]} "
            f"images but {os.fspath(labels_path)} has {labels.shape[0]} labels"
        )
    return images, labels
