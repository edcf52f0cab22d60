"""Error type for every data-loading failure."""


class DataError(ValueError):
    """A dataset file is missing, unreadable or malformed.

    The message is a single line that names the offending file or directory
    and the problem, so a command-line tool can print it as-is.
    """
