"""What the commands share: the usage error, the device, printing as we go."""

from __future__ import annotations


class UsageError(Exception):
    """A problem with the command line itself; the message says how to fix it."""


def print_flush(line: str) -> None:
    print(line, flush=True)


def backend_for(device: str):
    """The backend of a --device value; `auto` says which device it chose."""
    from ..backends import get_backend

    return get_backend(device, announce=print_flush)
