"""Resumable, checksum-verified HTTP(S) downloads of one file, with the standard library only.

`download(url, dest)` streams to `dest.part`, resumes an existing `.part` with an HTTP Range
request, verifies the checksum of the complete file and only then renames it onto `dest` (after
an fsync), so a reader never sees a partial file. The checksum helpers live here too: the
dataset fetcher uses them to recognise files it already has.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from .errors import DataError, one_line

DEFAULT_TIMEOUT = 30.0  # seconds without data before a connection or read gives up
BLOCK = 1 << 20  # bytes per read when hashing or copying a file
_HEX_DIGEST_LENGTHS = {"md5": 32, "sha256": 64}
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")

ProgressCallback = Callable[[int, "int | None"], None]


def expected_digest(md5: str | None, sha256: str | None) -> tuple[str, str] | None:
    """(algorithm, lowercase hex) to verify against; sha256 wins when both are given."""
    for algorithm, value in (("sha256", sha256), ("md5", md5)):
        if value is None:
            continue
        value = value.strip().lower()
        if len(value) != _HEX_DIGEST_LENGTHS[algorithm] or not re.fullmatch(r"[0-9a-f]+", value):
            raise ValueError(f"{algorithm}={value!r} is not a hex {algorithm} digest")
        return algorithm, value
    return None


def file_digest(path: str | os.PathLike, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def file_matches(path: Path, expected: tuple[str, str] | None) -> bool:
    """True if `path` is a file with the `expected` (algorithm, hex) digest (any file if None)."""
    if not path.is_file():
        return False
    return expected is None or file_digest(path, expected[0]) == expected[1]


def fsync_dir(directory: Path) -> None:
    """Make a rename inside `directory` durable (best effort: not every filesystem can)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def download(
    url: str,
    dest_path: str | os.PathLike,
    sha256: str | None = None,
    md5: str | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    chunk_size: int = 1 << 20,
    progress: ProgressCallback | None = None,
) -> Path:
    """Download `url` to `dest_path` atomically and return the destination path.

    Streams to `dest_path + ".part"`, resuming an existing `.part` with
    `Range: bytes=N-` (a 206 answer is appended; a 200 restarts from zero).
    The complete file's sha256 (preferred) or md5 is checked when given; on
    success the file is fsynced and renamed onto `dest_path`. Raises DataError
    with one line on a checksum mismatch (the .part is deleted), a truncated
    transfer (the .part is kept for a later resume) or a network error.
    `progress(done_bytes, total_bytes_or_None)` is called after each chunk.
    """
    expected = expected_digest(md5, sha256)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if urllib.parse.urlparse(url).scheme not in ("http", "https"):
        raise DataError(f"{url}: download failed: only http and https URLs are supported")
    dest = Path(dest_path)
    part = dest.with_name(dest.name + ".part")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{dest.parent}: cannot create directory: {exc.strerror or exc}") from None

    algorithm = expected[0] if expected else "sha256"
    for attempt in range(2):  # a second pass only after the server refused the resume
        offset = part.stat().st_size if part.is_file() else 0
        try:
            response = _open(url, offset, timeout)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 416 and offset and attempt == 0:  # Range Not Satisfiable
                if expected is not None and file_matches(part, expected):
                    break  # the .part already holds the whole file
                part.unlink()
                continue
            raise _network_error(url, exc) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
            raise _network_error(url, exc) from None

        with response:
            digest = hashlib.new(algorithm)
            start = _start_of_body(response, url, part, offset, digest, retry=attempt == 0)
            if start is None:
                continue  # the .part was discarded: start over without a Range header
            _stream(response, part, *start, digest, url, chunk_size, progress)
        if expected is not None and digest.hexdigest() != expected[1]:
            part.unlink(missing_ok=True)
            raise DataError(
                f"{dest}: {algorithm} mismatch for {url}: expected {expected[1]}, got "
                f"{digest.hexdigest()}; deleted the download, rerun to fetch it again"
            )
        break
    else:  # both attempts were spent restarting
        raise DataError(f"{url}: download failed: the server keeps rejecting the resume request")

    os.replace(part, dest)
    fsync_dir(dest.parent)
    return dest


def _start_of_body(response, url: str, part: Path, offset: int, digest, *, retry: bool):
    """(offset the body starts at, total size or None), with `digest` fed the bytes of `part`
    that are kept; None if the .part was deleted and the request should be sent again."""
    length = _content_length(response)
    if response.status != 206:  # a 200: the server ignored Range, start over from zero
        return 0, length
    resume = _resume_start(response)
    if resume is not None and resume[0] == offset:
        _hash_existing(digest, part, offset)
        if resume[1] is not None:
            return offset, resume[1]
        return offset, (offset + length if length is not None else None)
    if retry:  # a range we did not ask for
        part.unlink(missing_ok=True)
        return None
    raise DataError(
        f"{url}: download failed: server answered 206 with Content-Range "
        f"{response.headers.get('Content-Range')!r} to a request for bytes={offset}-"
    )


def _network_error(url: str, exc: BaseException) -> DataError:
    if isinstance(exc, urllib.error.HTTPError):
        reason = f"HTTP {exc.code} {exc.reason}"
    elif isinstance(exc, urllib.error.URLError):
        reason = exc.reason
    else:
        reason = exc
    return DataError(f"{url}: download failed: {one_line(reason) or type(exc).__name__}")


def _open(url: str, offset: int, timeout: float):
    # identity: a transparently compressed body would not match the byte offsets of a resume
    headers = {"User-Agent": "convnet-gpu-downloader/1", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _content_length(response) -> int | None:
    value = response.headers.get("Content-Length")
    return int(value) if value is not None and value.strip().isdigit() else None


def _resume_start(response) -> tuple[int, int | None] | None:
    """(first byte, total size) from a 206's Content-Range, None if unparsable."""
    match = _CONTENT_RANGE.fullmatch((response.headers.get("Content-Range") or "").strip())
    if match is None:
        return None
    total = None if match.group(3) == "*" else int(match.group(3))
    return int(match.group(1)), total


def _hash_existing(digest, path: Path, length: int) -> None:
    with open(path, "rb") as stream:
        remaining = length
        while remaining:
            block = stream.read(min(BLOCK, remaining))
            if not block:
                break
            digest.update(block)
            remaining -= len(block)


def _stream(
    response,
    part: Path,
    offset: int,
    total: int | None,
    digest,
    url: str,
    chunk_size: int,
    progress: ProgressCallback | None,
) -> int:
    """Append the body to `part` from `offset`; return the bytes now in `part`."""
    done = offset
    failure: BaseException | None = None
    try:
        out = open(part, "r+b" if offset else "wb")  # noqa: SIM115 (closed by the with below)
    except OSError as exc:
        raise DataError(f"{part}: cannot write download: {exc.strerror or exc}") from None
    with out:
        out.seek(offset)
        out.truncate()
        while True:
            try:
                block = response.read(chunk_size)
            except (OSError, http.client.HTTPException) as exc:  # incl. IncompleteRead, timeouts
                failure = exc  # keep what arrived; a rerun resumes from here
                break
            if not block:
                break
            try:
                out.write(block)
            except OSError as exc:
                raise DataError(f"{part}: cannot write download: {exc.strerror or exc}") from None
            digest.update(block)
            done += len(block)
            if progress is not None:
                progress(done, total)
        out.flush()
        os.fsync(out.fileno())
    if failure is not None or (total is not None and done < total):
        expected = f"{total}" if total is not None else "an unknown number of"
        why = f" ({one_line(failure) or type(failure).__name__})" if failure is not None else ""
        raise DataError(
            f"{url}: download truncated after {done} of {expected} bytes{why}; "
            f"kept {part}, rerun to resume"
        )
    return done
