"""File I/O with guarantees: atomic writes, strict JSON, and reads of regular files only.

Atomic file writes: write a temporary file beside the target, fsync, then rename over it.

A reader (or a crash) sees either the old file or the new one, never half of one. The file gets
the permissions any new file would (0666 less the umask), not the temporary file's 0600. A write
that fails (a full disk) names the file it was writing. JSON is written strictly: a non-finite
number (a diverged loss) becomes null, which every JSON parser reads, where a bare NaN is not JSON.

A file a user names is read only if it is a regular file: a device (/dev/zero) reports a size of
0 and never ends, a FIFO blocks its reader until a writer comes, so neither size-bounds nor
timeouts hold for them.
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
import tempfile
from pathlib import Path


class NotARegularFile(ValueError):
    """A path to read that is a device, a FIFO or a socket."""


def regular_file_size(path) -> int:
    """The size of `path`, which must be a regular file (os.stat never blocks, even on a FIFO).
    A folder raises IsADirectoryError, as reading it would; a missing file FileNotFoundError."""
    info = os.stat(path)
    if stat.S_ISDIR(info.st_mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    if not stat.S_ISREG(info.st_mode):
        raise NotARegularFile("not a regular file (a device, a pipe or a socket)")
    return info.st_size


def read_regular_file(path, max_bytes: int) -> bytes | None:
    """The bytes of regular file `path`, or None where it holds more than `max_bytes` (checked
    on its size first, then on what was read: it may grow meanwhile)."""
    if regular_file_size(path) > max_bytes:
        return None
    with open(path, "rb") as file:
        payload = file.read(max_bytes + 1)
    return payload if len(payload) <= max_bytes else None


def write_bytes_atomic(path, payload: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(payload)
            tmp.flush()
            os.fsync(tmp.fileno())
            os.fchmod(tmp.fileno(), 0o666 & ~_umask())
        os.replace(tmp_name, path)
    except OSError as exc:
        Path(tmp_name).unlink(missing_ok=True)
        if exc.filename is None:  # write() and fsync() name no file: name the one being written
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        raise
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def remove_stale_temporaries(path) -> list[Path]:
    """Delete the temporary files an earlier writer of `path` left when it was killed mid-write
    (SIGKILL runs no cleanup); call it only where no other process writes `path`."""
    path = Path(path)
    stale = list(path.parent.glob(f".{path.name}.*.tmp"))
    for leftover in stale:
        leftover.unlink(missing_ok=True)
    return stale


def _umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it: put it straight back
    os.umask(mask)
    return mask


def strict_json(value):
    """`value` with every non-finite float (NaN, inf) replaced by None, at any depth."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: strict_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(item) for item in value]
    return value


def json_text(obj, **kwargs) -> str:
    return json.dumps(strict_json(obj), allow_nan=False, **kwargs)


def write_json_atomic(path, obj) -> None:
    write_bytes_atomic(path, (json_text(obj, indent=2, sort_keys=True) + "\n").encode())


def write_jsonl_atomic(path, records) -> None:
    lines = "".join(json_text(record, sort_keys=True) + "\n" for record in records)
    write_bytes_atomic(path, lines.encode())
