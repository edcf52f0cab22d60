"""A hyper-parameter sweep: every combination of a grid of `train` flags is one run.

    # sweep.toml
    [train]                  # optional: flags every run shares, as `convnet-gpu train` takes them
    model = "simple-cnn"
    epochs = 2
    [grid]                   # every combination of these values is one run, in this order
    lr = [0.01, 0.05]
    batch-size = [64, 128]

Keys are `train` flags without the dashes (`batch-size` or `batch_size`); a true boolean turns
an on/off flag on (`plateau = true`), a false one off (`flip = false` is --no-flip). The sweep
chooses each run's folder (--out) itself. Runs are numbered in grid order; under MPI, run i
belongs to rank i % size, so the ranks share the grid without talking to each other
(cli/sweep_command.py runs them). This module only plans: it reads nothing but the config.
"""

from __future__ import annotations

import argparse
import itertools
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

CONFIG_MAX_BYTES = 1 << 20
# Decided by the sweep for each run, so not allowed in its config.
SWEEP_OWNS = ("out", "resume")
# The flags of `train` that are not run settings: a resumed run takes them again.
RUNTIME_FLAGS = ("device", "threads", "data-dir", "no-progress", "cuda-graph")


@dataclass(frozen=True)
class Point:
    """One run of the sweep: its number, the grid values it takes, and its `train` flags."""

    index: int
    values: dict  # flag -> value, the grid's part only
    flags: dict  # flag -> value: the shared [train] flags, then the grid's
    negatable: frozenset = frozenset()  # on/off flags: false is --no-FLAG (else: left off)

    @property
    def name(self) -> str:
        """The run's folder name: its number, then its grid values (made safe for a path)."""
        label = ",".join(f"{key}={value}" for key, value in self.values.items())
        return f"{self.index:03d}-" + re.sub(r"[^A-Za-z0-9._=,+-]", "_", label)[:80]

    def argv(self, out: Path, resume: bool = False) -> list[str]:
        """The `convnet-gpu train` arguments of this run (a resumed run: its saved settings,
        given again only the flags that are not settings)."""
        if resume:
            runtime = {key: value for key, value in self.flags.items() if key in RUNTIME_FLAGS}
            return ["train", "--resume", str(out), *self._as_argv(runtime)]
        return ["train", *self._as_argv(self.flags), "--out", str(out)]

    def _as_argv(self, flags: dict) -> list[str]:
        argv = []
        for key, value in flags.items():
            if value is True:
                argv.append(f"--{key}")
            elif value is False and key in self.negatable:
                argv.append(f"--no-{key}")
            elif value is not False:  # a false on-only flag (plateau = false) is left off
                argv += [f"--{key}", str(value)]
        return argv


def read_config(path) -> dict:
    """The parsed TOML document of a sweep config; a UserError for anything unreadable."""
    import tomllib

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such sweep config; give a TOML file with a [grid] table")
    if path.stat().st_size > CONFIG_MAX_BYTES:
        raise UserError(f"{path}: a sweep config over 1 MiB; is this the right file?")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not a TOML file ({exc})") from None


def plan(document: dict, train_parser: argparse.ArgumentParser, source="the sweep config"):
    """The runs of a sweep config, in grid order, each checked against `train`'s flags."""
    unknown_tables = sorted(set(document) - {"train", "grid"})
    if unknown_tables:
        raise UserError(f"{source}: unknown table [{unknown_tables[0]}]; use [train] and [grid]")
    shared = _flags(document.get("train", {}), "[train]", train_parser, source)
    grid = document.get("grid")
    if not isinstance(grid, dict) or not grid:
        raise UserError(f"{source}: no [grid] table; give one with at least a flag = [values]")
    grid = _flags(grid, "[grid]", train_parser, source, lists=True)
    both = sorted(set(shared) & set(grid))
    if both:
        raise UserError(f"{source}: {both[0]} is in [train] and in [grid]; keep it in one")
    keys, (_, negatable) = list(grid), _train_flags(train_parser)
    combinations = itertools.product(*(grid[key] for key in keys))
    return [
        Point(
            index,
            dict(zip(keys, values)),
            {**shared, **dict(zip(keys, values))},
            frozenset(negatable),
        )  # fmt: skip
        for index, values in enumerate(combinations)
    ]


def _flags(table, where: str, train_parser, source, lists: bool = False) -> dict:
    if not isinstance(table, dict):
        raise UserError(f"{source}: {where} must be a table of flag = value")
    known, _ = _train_flags(train_parser)
    flags = {}
    for key, value in table.items():
        flag = key.replace("_", "-")
        if flag in SWEEP_OWNS:
            raise UserError(f"{source}: {where} sets {flag}; the sweep chooses each run's folder")
        if flag not in known:
            raise UserError(
                f"{source}: {where} has {key!r}, which is not a `convnet-gpu train` flag; "
                f"known: {', '.join(sorted(known - set(SWEEP_OWNS)))}"
            )
        values = value if lists else [value]
        if lists and (not isinstance(value, list) or not value):
            raise UserError(f"{source}: {where} {key} must be a non-empty list of values")
        for item in values:
            if not isinstance(item, (str, int, float, bool)):
                raise UserError(f"{source}: {where} {key} = {item!r}: give a string or a number")
        flags[flag] = value
    return flags


def _train_flags(train_parser) -> tuple[set[str], set[str]]:
    """The long flags of `train` without dashes (an on/off flag's --no- form left out), and
    those on/off flags (--flip / --no-flip)."""
    known, negatable = set(), set()
    for action in train_parser._actions:
        longs = [option[2:] for option in action.option_strings if option.startswith("--")]
        if isinstance(action, argparse.BooleanOptionalAction):
            negatable.add(longs[0])
            longs = longs[:1]
        known.update(option for option in longs if option != "help")
    return known, negatable


def share(points: list[Point], rank: int, size: int) -> list[Point]:
    """The runs rank `rank` of `size` trains: every size-th, from its own number."""
    return [point for point in points if point.index % size == rank]
