"""A hyper-parameter sweep: a grid of run settings, read from a TOML file, one run per point.

    [base]                       settings every run shares (RunSettings' names)
    model = "simple-cnn"
    epochs = 2
    [grid]                       each setting's values; the runs are every combination
    lr = [0.01, 0.05]
    optimizer = ["sgd", "adam"]

The points come in the file's order, the last setting changing fastest; point i's run folder
is named after its values (lr-0.01_optimizer-sgd). Spread over K ranks, rank r trains the points
i with i % K == r, each alone: a sweep needs no collective but the final gather of the results.
"""

from __future__ import annotations

import itertools
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError
from .fileio import NotARegularFile, read_regular_file
from .settings import RunSettings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

MAX_SWEEP_FILE_BYTES = 1 << 20


class SweepError(UserError):
    """A sweep file that cannot be used; the message names the file and the fix."""


@dataclass(frozen=True)
class Sweep:
    base: dict
    grid: dict  # setting -> list of values, in the file's order

    def points(self) -> list[dict]:
        """Each combination of the grid's values: {setting: value}, the last changing fastest."""
        names = list(self.grid)
        return [dict(zip(names, values)) for values in itertools.product(*self.grid.values())]

    def settings(self, point: dict) -> RunSettings:
        return RunSettings(**{**self.base, **point})


def point_name(point: dict) -> str:
    """A point's run folder name: lr-0.01_optimizer-sgd (path characters replaced by '-')."""
    parts = [f"{name}-{value}" for name, value in point.items()]
    return re.sub(r"[^A-Za-z0-9._-]", "-", "_".join(parts)) or "base"


def points_of_rank(count: int, rank: int, ranks: int) -> list[int]:
    """The indices of the points rank `rank` of `ranks` trains: every ranks-th from its own."""
    return list(range(rank, count, ranks))


def read_sweep(path, parse=None) -> Sweep:
    """The sweep a TOML file describes, every point's settings checked (SweepError otherwise).
    `parse(name, value)` checks one value as `train` checks its flag (cli.parser.parse_setting:
    the parsed value, or ValueError naming the flag); None: values are taken as they are."""
    document = _read_toml(Path(path))
    unknown = set(document) - {"base", "grid"}
    if unknown:
        raise SweepError(f"{path}: unknown key {sorted(unknown)[0]!r}; a sweep file has a "
                         f"[base] table and a [grid] table")  # fmt: skip
    base, grid = document.get("base", {}), document.get("grid")
    if not isinstance(base, dict) or not isinstance(grid, dict) or not grid:
        raise SweepError(f"{path}: needs a [grid] table of settings and their values (and "
                         f"optionally a [base] table of shared settings)")  # fmt: skip
    for name in (*base, *grid):
        if name not in RunSettings.names():
            raise SweepError(f"{path}: {name!r} is not a run setting (see convnet-gpu train "
                             f"--help; its flags without -- and with _ for -)")  # fmt: skip
    for name, values in grid.items():
        if not isinstance(values, list) or not values:
            raise SweepError(f"{path}: grid.{name} must be a list of values, got {values!r}")
    if parse is not None:
        base = {name: _parsed(parse, path, "base", name, value) for name, value in base.items()}
        grid = {name: [_parsed(parse, path, "grid", name, value) for value in values]
                for name, values in grid.items()}  # fmt: skip
    sweep = Sweep(base, grid)
    named = {}
    for point in sweep.points():
        try:
            sweep.settings(point)
        except (UserError, TypeError) as exc:
            raise SweepError(f"{path}: the point {point_name(point)}: {exc}") from None
        name = point_name(point)
        if name in named:  # two points would train into one folder
            raise SweepError(f"{path}: the points {named[name]} and {point} share the run folder "
                             f"{name}; give each value once")  # fmt: skip
        named[name] = point
    return sweep


def _parsed(parse, path, table: str, name: str, value):
    try:
        return parse(name, value)
    except ValueError as exc:
        raise SweepError(f"{path}: {table}.{name} = {value!r}: {exc}") from None


def _read_toml(path: Path) -> dict:
    try:
        payload = read_regular_file(path, MAX_SWEEP_FILE_BYTES)
        if payload is None:
            raise SweepError(f"{path}: larger than 1 MiB; a sweep file is a short TOML text")
        return tomllib.loads(payload.decode("utf-8"))
    except NotARegularFile as exc:
        raise SweepError(f"{path}: {exc}; a sweep file is a TOML text file") from None
    except OSError as exc:
        raise SweepError(f"{path}: cannot read the sweep file ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise SweepError(f"{path}: not a text file (byte {exc.start} is not UTF-8)") from None
    except tomllib.TOMLDecodeError as exc:
        raise SweepError(f"{path}: not valid TOML: {exc}") from None
