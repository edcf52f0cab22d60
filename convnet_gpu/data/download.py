"""Where each dataset is downloaded from (`SOURCES`) and `fetch_dataset`, which puts it in the
download cache that the loaders search after `--data-dir` and the Debian folders.

SOURCES' names are the registry's (`registry.DATASETS`); its files come with their published
checksums. The transfer of one file (resume, checksum, atomic rename) is `transfer.download`,
the extraction of an archive `archive.safe_extract`.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .archive import extracted_intact, safe_extract
from .errors import DataError
from .transfer import DEFAULT_TIMEOUT, download, expected_digest, file_matches

CACHE_ENV_VAR = "CONVNET_GPU_DATA"


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
            _MNIST_BASE + "train-images-idx3-ubyte.gz", md5="f68b3c2dcbeaaa9fbdd348bbdeb94873"
        ),
        DatasetSource(
            _MNIST_BASE + "train-labels-idx1-ubyte.gz", md5="d53e105ee54ea40749a09fcbcd1e9432"
        ),
        DatasetSource(
            _MNIST_BASE + "t10k-images-idx3-ubyte.gz", md5="9fb629c4189551a2d022fa330f9573f3"
        ),
        DatasetSource(
            _MNIST_BASE + "t10k-labels-idx1-ubyte.gz", md5="ec29112dd5afa0611ce80d1b7f02629c"
        ),
    ],
    "cifar-10": [
        DatasetSource(
            "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
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
    root = Path(os.environ.get(CACHE_ENV_VAR) or "~/.cache/convnet_gpu")
    try:
        return root.expanduser()
    except RuntimeError:  # no home directory: keep "~", which simply will not exist
        return root


def dataset_cache_dir(name: str) -> Path:
    """Where `fetch_dataset(name)` puts a dataset by default: <cache root>/<name>."""
    return default_cache_root() / name


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
        _fetch_source(source, directory, timeout, progress)
    return directory


def _fetch_source(source: DatasetSource, directory: Path, timeout: float, progress) -> None:
    """Bring one file (and, for an archive, its extracted folder) into `directory`."""
    if source.extract and extracted_intact(directory / source.extract, source.members):
        return
    dest = directory / source.filename
    if not file_matches(dest, expected_digest(source.md5, source.sha256)):
        report = None
        if progress is not None:
            report = lambda done, total: progress(source.filename, done, total)
        download(
            source.url, dest, sha256=source.sha256, md5=source.md5, timeout=timeout, progress=report
        )
    if source.extract:
        final = safe_extract(dest, source.extract, directory)
        if source.members and not extracted_intact(final, source.members):
            raise DataError(
                f"{final}: extracted files do not match their published md5s; "
                f"delete {final} and {dest} and rerun"
            )
        dest.unlink()
