"""Finding the folder that holds a dataset's files, for every dataset alike.

A `DataFolder` says which files a dataset's folder must hold and where to look for it. The
search is: an explicit `--data-dir` must hold them all; without one, the default folders (where
the Debian package installs the dataset) are tried in order, then the download cache that
`convnet-gpu download NAME` fills. A failure is one line naming every place looked at and every
way to get the data: the apt package, the download command, `--data-dir`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .download import SOURCES, dataset_cache_dir
from .errors import DataError


@dataclass(frozen=True)
class DataFolder:
    """What a dataset's folder holds and where to look for it."""

    name: str  # the CLI spelling: the cache folder and `convnet-gpu download NAME`
    title: str  # how messages name the dataset: "Fashion-MNIST"
    files: tuple[str, ...]  # every file the folder must hold
    holding: str  # what --data-dir must be, for messages: "a folder holding ..."
    default_dirs: tuple[str, ...] = ()  # searched in order when there is no --data-dir
    apt_package: str | None = None  # the Debian package that installs default_dirs[0]
    gz_ok: bool = False  # each file may be stored gzip-compressed as FILE.gz instead
    # A subfolder the files may sit in, so that its parent works too: an archive's top folder.
    nested: str | None = None

    def file(self, directory: str | os.PathLike, name: str) -> Path | None:
        """`directory/name` (or `directory/name.gz` where allowed) if it is a file, else None."""
        candidates = [Path(directory) / name]
        if self.gz_ok:
            candidates.append(Path(directory) / f"{name}.gz")
        return next((path for path in candidates if path.is_file()), None)

    def first_missing(self, directory: Path) -> str | None:
        return next((name for name in self.files if self.file(directory, name) is None), None)


def find_data_dir(folder: DataFolder, data_dir: str | os.PathLike | None = None) -> Path:
    """The folder holding every file of `folder` (one-line DataError if there is none).

    An explicit `data_dir` must hold them (or its `folder.nested` subfolder must); otherwise
    `folder.default_dirs` and then the download cache are searched, the first complete one wins.
    """
    if data_dir is not None:
        return _check_explicit_dir(folder, Path(data_dir))
    cache_dir = dataset_cache_dir(folder.name)
    looked = []
    for candidate in (*folder.default_dirs, cache_dir):
        directory = _resolve_nested(folder, Path(candidate))
        missing = folder.first_missing(directory) if directory.is_dir() else None
        if directory.is_dir() and missing is None:
            return directory
        looked.append(f"{directory} (missing {missing})" if missing else f"{directory} (absent)")
    raise DataError(
        f"{folder.title} not found; looked in {', '.join(looked)}. "
        + _sentence(_ways_to_get(folder, cache_dir))
    )


def _check_explicit_dir(folder: DataFolder, directory: Path) -> Path:
    if not directory.is_dir():
        raise DataError(f"{directory}: `data_dir` is not a directory")
    directory = _resolve_nested(folder, directory)
    missing = folder.first_missing(directory)
    if missing is not None:
        also = f" (or {missing}.gz)" if folder.gz_ok else ""
        raise DataError(
            f"{directory}: missing {missing}{also}; `data_dir` must point at {folder.holding}"
        )
    return directory


def _resolve_nested(folder: DataFolder, directory: Path) -> Path:
    """`directory` itself, or its `folder.nested` subfolder when only that one can hold the files
    (a user may name the folder an archive unpacked into, or the archive's top folder)."""
    if folder.nested is None or folder.first_missing(directory) is None:
        return directory
    nested = directory / folder.nested
    return nested if nested.is_dir() else directory


def _ways_to_get(folder: DataFolder, cache_dir: Path) -> list[str]:
    ways = []
    if folder.apt_package is not None:
        where = f", installs to {folder.default_dirs[0]}" if folder.default_dirs else ""
        ways.append(
            f"install it with `apt-get install {folder.apt_package}` (Debian/Ubuntu package{where})"
        )
    if folder.name in SOURCES:
        ways.append(f"download it with `convnet-gpu download {folder.name}` (saves to {cache_dir})")
    ways.append(f"pass `data_dir` pointing at {folder.holding}")
    return ways


def _sentence(clauses: Sequence[str]) -> str:
    """'A', 'A or B', 'A, B, or C', capitalized."""
    if len(clauses) > 2:
        text = ", ".join(clauses[:-1]) + ", or " + clauses[-1]
    else:
        text = " or ".join(clauses)
    return text[:1].upper() + text[1:]
