"""Safe extraction of a downloaded tar archive whose members all live under one top folder.

A tarball can name any path, link or device; extracting one blindly can overwrite files outside
the destination. `safe_extract` checks every member before it writes anything and refuses the
whole archive if one is suspect; `extracted_intact` recognises an intact earlier extraction.
"""

from __future__ import annotations

import os
import re
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Sequence
from pathlib import Path

from .errors import DataError, one_line
from .transfer import BLOCK, file_matches, fsync_dir


def safe_extract(archive: Path, top: str, destination: Path) -> Path:
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
                _write_members(tar, members, staging)
                return _move_into_place(staging / top, destination / top)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise DataError(f"{archive}: cannot extract archive: {one_line(exc)}") from None


def extracted_intact(directory: Path, members: Sequence[tuple[str, str | None]]) -> bool:
    """True if `directory` holds every (name, md5) of `members` (any extracted folder if none)."""
    if not directory.is_dir():
        return False
    if not members:  # nothing to verify against: an extracted folder counts as done
        return True
    return all(
        file_matches(directory / name, ("md5", md5) if md5 else None) for name, md5 in members
    )


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


def _write_members(tar: tarfile.TarFile, members: list[tarfile.TarInfo], staging: Path) -> None:
    """Write the (already checked) members under `staging`, each file fsynced."""
    for member in members:
        target = staging.joinpath(*re.split(r"[\\/]+", member.name.strip("/")))
        if member.isdir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        source = tar.extractfile(member)
        with source, open(target, "wb") as out:
            shutil.copyfileobj(source, out, BLOCK)
            out.flush()
            os.fsync(out.fileno())


def _move_into_place(extracted: Path, final: Path) -> Path:
    """Replace `final` (an older extraction, if any) with the freshly `extracted` folder."""
    if final.exists():
        shutil.rmtree(final)
    extracted.mkdir(exist_ok=True)  # an archive without members creates no top/ at all
    os.replace(extracted, final)
    fsync_dir(final.parent)
    return final
