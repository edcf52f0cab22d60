"""Resumable, checksum-verified dataset downloads with the standard library only.

`download(url, dest)` streams to `dest.part`, resumes an existing `.part` with an
HTTP Range request, verifies the checksum of the complete file and only then
renames it onto `dest` (after an fsync), so a reader never sees a partial file.

`SOURCES` lists the official files of each dataset with their published
checksums; `fetch_dataset(name)` downloads them into the cache directory that
the loaders search after `--data-dir` and the Debian folders.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import DataError

CACHE_ENV_VAR = "CONVNET_GPU_DATA"
DEFAULT_CACHE_ROOT = Path("~/.cache/convnet_gpu")
PART_SUFFIX = ".part"
USER_AGENT = "convnet-gpu-downloader/1"
DEFAULT_TIMEOUT = 30.0
DEFAULT_CHUNK_SIZE = 1 << 20
HASH_BLOCK = 1 << 20
HEX_DIGEST_LENGTHS = {"md5": 32, "sha256": 64}
HTTP_OK = 200
HTTP_PARTIAL = 206
HTTP_RANGE_NOT_SATISFIABLE = 416
CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")

ProgressCallback = Callable[[int, "int | None"], None]


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


# ---------------------------------------------------------------- sources


@dataclass(frozen=True)
class DatasetSource:
    """One official file of a dataset and its published checksum.

    `extract` names the directory an archive unpacks to (it is extracted and
    the archive removed); `members` are (path inside `extract`, md5) pairs
    used to recognise an already extracted, intact copy.
    """

    url: str
    md5: str | None = None
    sha256: str | None = None
    extract: str | None = None
    members: tuple[tuple[str, str | None], ...] = ()

    @property
    def filename(self) -> str:
        return Path(urllib.parse.urlparse(self.url).path).name


_FASHION_MNIST_BASE = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_MNIST_BASE = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"

# Checksums, where each was confirmed:
# - Fashion-MNIST: MD5 table of the zalandoresearch/fashion-mnist README (also in
#   /usr/share/doc/dataset-fashion-mnist/README.md.gz) and torchvision's FashionMNIST.
#   The S3 "website" endpoint serves plain http only; the MD5 still guards integrity.
#   (Debian's dataset-fashion-mnist ships recompressed .gz files with other MD5s.)
# - MNIST: torchvision's MNIST.resources with its mirror ossci-datasets.s3.amazonaws.com
#   (the same MD5s as the files once served from yann.lecun.com).
# - CIFAR-10: the tarball MD5 is published on https://www.cs.toronto.edu/~kriz/cifar.html;
#   the per-member MD5s come from torchvision's CIFAR10 (train_list, test_list, meta).
SOURCES: dict[str, list[DatasetSource]] = {
    "fashion-mnist": [
        DatasetSource(
            _FASHION_MNIST_BASE + "train-images-idx3-ubyte.gz",
            md5="8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        ),
        DatasetSource(
            _FASHION_MNIST_BASE + "train-labels-idx1-ubyte.gz",
            md5="25c81989df183df01b3e8a0aad5dffbe",
        ),
        DatasetSource(
            _FASHION_MNIST_BASE + "t10k-images-idx3-ubyte.gz",
            md5="bef4ecab320f06d8554ea6380940ec79",
        ),
        DatasetSource(
            _FASHION_MNIST_BASE + "t10k-labels-idx1-ubyte.gz",
            md5="bb300cfdad3c16e7a12a480ee83cd310",
        ),
    ],
    "mnist": [
        DatasetSource(
            _MNIST_BASE + "train-images-idx3-ubyte.gz",
            md5="f68b3c2dcbeaaa9fbdd348bbdeb94873",
        ),
        DatasetSource(
            _MNIST_BASE + "train-labels-idx1-ubyte.gz",
            md5="d53e105ee54ea40749a09fcbcd1e9432",
        ),
        DatasetSource(
            _MNIST_BASE + "t10k-images-idx3-ubyte.gz",
            md5="9fb629c4189551a2d022fa330f9573f3",
        ),
        DatasetSource(
            _MNIST_BASE + "t10k-labels-idx1-ubyte.gz",
            md5="ec29112dd5afa0611ce80d1b7f02629c",
        ),
    ],
    "cifar-10": [
        DatasetSource(
            _CIFAR10_URL,
            md5="c58f30108f718f92721af3b95e74349a",
            extract="cifar-10-batches-py",
            members=(
                ("data_batch_1", "c99cafc152244af753f735de768cd75f"),
                ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
                ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
                ("data_batch_4", "634d18415352ddfa80567beed471001a"),
                ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"),
                ("test_batch", "40351d587109b95175f43aff81a1287e"),
                ("batches.meta", "5ff9c542aee3614f3951f8cda6e48888"),
            ),
        ),
    ],
}


def default_cache_root() -> Path:
    """`$CONVNET_GPU_DATA` when set, else ~/.cache/convnet_gpu."""
    root = Path(os.environ.get(CACHE_ENV_VAR) or DEFAULT_CACHE_ROOT)
    try:
        return root.expanduser()
    except RuntimeError:  # no home directory: keep "~", which simply will not exist
        return root


def dataset_cache_dir(name: str) -> Path:
    """Where `fetch_dataset(name)` puts a dataset by default: <cache root>/<name>."""
    return default_cache_root() / name


# ---------------------------------------------------------------- checksums


def _expected_digest(md5: str | None, sha256: str | None) -> tuple[str, str] | None:
    """(algorithm, lowercase hex) to verify against; sha256 wins when both are given."""
    for algorithm, value in (("sha256", sha256), ("md5", md5)):
        if value is None:
            continue
        value = value.strip().lower()
        if len(value) != HEX_DIGEST_LENGTHS[algorithm] or not re.fullmatch(r"[0-9a-f]+", value):
            raise ValueError(f"{algorithm}={value!r} is not a hex {algorithm} digest")
        return algorithm, value
    return None


def file_digest(path: str | os.PathLike, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(HASH_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def _matches(path: Path, expected: tuple[str, str] | None) -> bool:
    if not path.is_file():
        return False
    return expected is None or file_digest(path, expected[0]) == expected[1]


# ---------------------------------------------------------------- download


def _fsync_dir(directory: Path) -> None:
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


def _network_error(url: str, exc: BaseException) -> DataError:
    if isinstance(exc, urllib.error.HTTPError):
        reason = f"HTTP {exc.code} {exc.reason}"
    elif isinstance(exc, urllib.error.URLError):
        reason = exc.reason
    else:
        reason = exc
    text = _one_line(reason) or type(exc).__name__
    return DataError(f"{url}: download failed: {text}")


def _open(url: str, offset: int, timeout: float):
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _content_length(response) -> int | None:
    value = response.headers.get("Content-Length")
    return int(value) if value is not None and value.strip().isdigit() else None


def _resume_start(response) -> tuple[int, int | None] | None:
    """(first byte, total size) from a 206's Content-Range, None if unparsable."""
    match = CONTENT_RANGE.fullmatch((response.headers.get("Content-Range") or "").strip())
    if match is None:
        return None
    total = None if match.group(3) == "*" else int(match.group(3))
    return int(match.group(1)), total


def _hash_existing(digest, path: Path, length: int) -> None:
    with open(path, "rb") as stream:
        remaining = length
        while remaining:
            block = stream.read(min(HASH_BLOCK, remaining))
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
        why = f" ({_one_line(failure) or type(failure).__name__})" if failure is not None else ""
        raise DataError(
            f"{url}: download truncated after {done} of {expected} bytes{why}; "
            f"kept {part}, rerun to resume"
        )
    return done


def download(
    url: str,
    dest_path: str | os.PathLike,
    sha256: str | None = None,
    md5: str | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
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
    expected = _expected_digest(md5, sha256)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if urllib.parse.urlparse(url).scheme not in ("http", "https"):
        raise DataError(f"{url}: download failed: only http and https URLs are supported")
    dest = Path(dest_path)
    part = dest.with_name(dest.name + PART_SUFFIX)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{dest.parent}: cannot create directory: {exc.strerror or exc}") from None

    algorithm = expected[0] if expected else "sha256"
    for attempt in range(2):  # a second pass only after a 416 on a stale .part
        offset = part.stat().st_size if part.is_file() else 0
        try:
            response = _open(url, offset, timeout)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == HTTP_RANGE_NOT_SATISFIABLE and offset and attempt == 0:
                if _matches(part, expected) and expected is not None:
                    break  # the .part already holds the whole file
                part.unlink()
                continue
            raise _network_error(url, exc) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
            raise _network_error(url, exc) from None

        with response:
            digest = hashlib.new(algorithm)
            length = _content_length(response)
            resume = _resume_start(response) if response.status == HTTP_PARTIAL else None
            if resume is not None and resume[0] == offset:
                _hash_existing(digest, part, offset)
                total = (
                    resume[1]
                    if resume[1] is not None
                    else (offset + length if length is not None else None)
                )
            elif response.status == HTTP_PARTIAL:  # a range we did not ask for
                if attempt == 0:
                    part.unlink(missing_ok=True)
                    continue  # start over without a Range header
                raise DataError(
                    f"{url}: download failed: server answered 206 with Content-Range "
                    f"{response.headers.get('Content-Range')!r} to a request for bytes={offset}-"
                )
            else:  # a 200: the server ignored Range, start over from zero
                offset, total = 0, length
            _stream(response, part, offset, total, digest, url, chunk_size, progress)
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
    _fsync_dir(dest.parent)
    return dest


# ---------------------------------------------------------------- archives


def _unsafe_member_reason(member: tarfile.TarInfo, top: str) -> str | None:
    name = member.name
    parts = re.split(r"[\\/]+", name)
    if name.startswith(("/", "\\")) or os.path.isabs(name) or re.match(r"^[A-Za-z]:", name):
        return "absolute path"
    if ".." in parts:
        return "'..' in path"
    if not (member.isfile() or member.isdir()):
        return "not a regular file or directory (links and devices are refused)"
    if parts[0] != top:
        return f"outside the expected top-level folder {top}/"
    return None


def _safe_extract(archive: Path, top: str, destination: Path) -> Path:
    """Extract `archive` (whose members all live under `top/`) to `destination/top`.

    Every member is checked before anything is written: absolute paths, '..',
    links, devices and members outside `top/` are refused. Files are written
    into a temporary folder beside `destination`, then renamed into place.
    """
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                reason = _unsafe_member_reason(member, top)
                if reason is not None:
                    raise DataError(
                        f"{archive}: refusing to extract member {member.name!r}: {reason}"
                    )
            staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=destination))
            try:
                for member in members:
                    target = staging.joinpath(*re.split(r"[\\/]+", member.name.strip("/")))
                    if member.isdir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    source = tar.extractfile(member)
                    with source, open(target, "wb") as out:
                        shutil.copyfileobj(source, out, HASH_BLOCK)
                        out.flush()
                        os.fsync(out.fileno())
                final = destination / top
                if final.exists():
                    shutil.rmtree(final)
                extracted = staging / top
                extracted.mkdir(exist_ok=True)
                os.replace(extracted, final)
                _fsync_dir(destination)
                return final
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise DataError(f"{archive}: cannot extract archive: {_one_line(exc)}") from None


def _extracted_intact(directory: Path, members: Sequence[tuple[str, str | None]]) -> bool:
    if not directory.is_dir():
        return False
    if not members:  # nothing to verify against: an extracted folder counts as done
        return True
    return all(_matches(directory / name, ("md5", md5) if md5 else None) for name, md5 in members)


# ---------------------------------------------------------------- fetch


def fetch_dataset(
    name: str,
    cache_dir: str | os.PathLike | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    progress: Callable[[str, int, int | None], None] | None = None,
) -> Path:
    """Download every file of `SOURCES[name]` into `cache_dir` and return that folder.

    `cache_dir` defaults to `dataset_cache_dir(name)` ($CONVNET_GPU_DATA/<name>
    or ~/.cache/convnet_gpu/<name>). Files already present with the right
    checksum are skipped; archives are extracted safely and then deleted.
    `progress(file_name, done_bytes, total_bytes_or_None)` reports each chunk.
    """
    if name not in SOURCES:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(sorted(SOURCES))}")
    directory = Path(cache_dir) if cache_dir is not None else dataset_cache_dir(name)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{directory}: cannot create directory: {exc.strerror or exc}") from None

    for source in SOURCES[name]:
        if source.extract and _extracted_intact(directory / source.extract, source.members):
            continue
        dest = directory / source.filename
        expected = _expected_digest(source.md5, source.sha256)
        if not _matches(dest, expected):
            report = None
            if progress is not None:
                report = lambda done, total, file=source.filename: progress(file, done, total)
            download(
                source.url,
                dest,
                sha256=source.sha256,
                md5=source.md5,
                timeout=timeout,
                progress=report,
            )
        if source.extract:
            final = _safe_extract(dest, source.extract, directory)
            if source.members and not _extracted_intact(final, source.members):
                raise DataError(
                    f"{final}: extracted files do not match their published md5s; "
                    f"delete {final} and {dest} and rerun"
                )
            dest.unlink()
    return directory
