"""What the commands share: the usage error, the device, printing as we go."""

from __future__ import annotations

import re


class UsageError(Exception):
    """A problem with the command line itself; the message says how to fix it."""


def print_flush(line: str) -> None:
    print(line, flush=True)


def backend_for(device: str, precision: str = "fp32", threads: int | None = None):
    """The backend of a --device value (and --threads, for the CPU); `auto` says which device
    it chose."""
    from ..backends import get_backend

    return get_backend(device, announce=print_flush, precision=precision, threads=threads)


def as_flags(text: str) -> str:
    """Library text with each `name` of a setting or option written as its flag (errors.py)."""
    from .parser import flag

    return re.sub(r"`([a-z_]+)`", lambda name: flag(name.group(1)), text)
