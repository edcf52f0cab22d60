"""DataError, the error of every data-loading failure, and `one_line` for its messages."""

from ..errors import UserError


class DataError(UserError):
    """A dataset file is missing, unreadable or malformed.

    The message is a single line that names the offending file or directory
    and the problem, so a command-line tool can print it as-is (a UserError: the CLI prints it
    with exit status 2).
    """


def one_line(text: object) -> str:
    """`text` with every run of whitespace (newlines included) collapsed to one space."""
    return " ".join(str(text).split())
