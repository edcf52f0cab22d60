"""convnet-gpu sweep CONFIG.toml: train every run of a grid (sweep.py), each as `convnet-gpu
train` would, in OUT/NNN-<values>/, then write OUT/sweep.json and print one table.

    mpiexec -n 4 convnet-gpu sweep CONFIG.toml --distributed mpi

shares the runs between 4 processes (run i on rank i % 4; no collective but one barrier before
rank 0 reads every run's summary). Running the same command again continues the sweep: a
finished run is kept, an interrupted one resumes from its checkpoint. Each run's own output goes
to its train.log; the console gets one line per run.
"""

from __future__ import annotations

import contextlib
import io
import os
import time
from pathlib import Path

from ..errors import UserError
from .common import UsageError
from .parser import EXIT_INTERRUPTED

CONFIG_COPY = "sweep.toml"  # the config a sweep folder was made by, kept to refuse another one
TABLE = "sweep.json"
RUN_STATUS = "sweep-run.json"  # a run's exit status and time, beside its run files
RUN_LOG = "train.log"
# What the launchers of MPICH and Open MPI tell each process about how many there are.
LAUNCHER_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")


def cmd_sweep(args) -> int:
    from .. import sweep

    config = Path(args.config)
    document = sweep.read_config(config)
    points = sweep.plan(document, _train_parser(), source=str(config))
    out = Path(args.out or f"runs/sweep-{config.stem}")
    rank, size, local, barrier = _launch(args.distributed)
    points = [_placed(point, size, local) for point in points]
    for point in points:  # every run's flags checked before the first one trains
        _check_parses(point, out / point.name, config)
    if rank == 0:
        _claim(out, config)
    barrier()  # the folder is checked and claimed before any rank writes into it
    if rank == 0:
        ranks = f" over {size} processes" if size > 1 else ""
        print(f"sweep {config}: {len(points)} run(s){ranks}, into {out}", flush=True)
    for point in sweep.share(points, rank, size):
        if _train(point, out / point.name, rank) == EXIT_INTERRUPTED:
            raise KeyboardInterrupt(f"interrupted; run the same command again to continue {out}")
    barrier()
    if rank != 0:
        return 0
    rows = [_result(point, out / point.name) for point in points]
    from ..fileio import write_json_atomic

    write_json_atomic(out / TABLE, rows)
    print(_table(rows, list(points[0].values)), flush=True)
    print(f"wrote {out / TABLE}")
    return 0 if all(row["status"] == "ok" for row in rows) else 1


def _train_parser():
    from .parser import build_parser

    parser = build_parser()
    return parser._subparsers._group_actions[0].choices["train"]


def _check_parses(point, run_dir: Path, config: Path) -> None:
    """A flag `train` refuses (lr = -1) is reported now, naming the run, not once per run."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            _train_parser().parse_args(point.argv(run_dir)[1:])
    except SystemExit:
        reason = stderr.getvalue().strip().splitlines()[-1].split("error: ", 1)[-1]
        raise UsageError(f"{config}: run {point.name}: {reason}") from None


def _claim(out: Path, config: Path) -> None:
    """Keep the config in the folder; a folder made by another config is refused."""
    from ..fileio import write_bytes_atomic

    text = config.read_bytes()
    copy = out / CONFIG_COPY
    if copy.exists() and copy.read_bytes() != text:
        raise UsageError(
            f"{out} holds a sweep of another config ({copy} differs from {config}); pick "
            f"another --out"
        )
    if not copy.exists() and out.exists() and any(out.iterdir()):
        raise UsageError(f"{out} is not empty and holds no sweep; pick another --out")
    out.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(copy, text)


def _train(point, run_dir: Path, rank: int) -> int:
    """Train (or resume, or keep) one run; its output into its train.log, one line here."""
    from ..fileio import write_json_atomic
    from ..rundir import RunDir
    from . import main

    run = RunDir(run_dir)
    if run.summary.exists():
        print(f"run {point.name}: done before, kept", flush=True)
        return 0
    argv = point.argv(run_dir, resume=run.checkpoint.exists()) + ["--no-progress"]
    run.create()
    started = time.perf_counter()
    with open(run_dir / RUN_LOG, "a", encoding="utf-8") as log, contextlib.redirect_stdout(log):
        code = main(argv)
    seconds = time.perf_counter() - started
    write_json_atomic(run_dir / RUN_STATUS, {"exit": code, "seconds": seconds, "rank": rank})
    print(f"run {point.name}: {_status(code)} in {seconds:.1f} s", flush=True)
    return code


def _status(code: int) -> str:
    return {0: "ok", 1: "failed", 2: "refused", EXIT_INTERRUPTED: "interrupted"}.get(
        code, f"exit {code}"
    )


def _result(point, run_dir: Path) -> dict:
    """A row of the table: the run's grid values and what its summary says (a run killed
    between its last checkpoint and its summary: what its metrics say)."""
    import json

    from ..rundir import RunDir

    row, run = {"run": point.name, **point.values}, RunDir(run_dir)
    status = run_dir / RUN_STATUS
    code = json.loads(status.read_text())["exit"] if status.exists() else None
    if run.summary.exists():
        figures = json.loads(run.summary.read_text())
    elif code == 0 and run.metrics.exists():
        epochs = [json.loads(line) for line in run.metrics.read_text().splitlines() if line]
        figures = {**epochs[-1], "epochs_run": len(epochs), "seconds": None}
    else:
        return {**row, "status": "not run" if code is None else _status(code)}
    keys = ("test_accuracy", "test_loss", "epochs_run", "images_per_second", "seconds")
    return {**row, "status": "ok", **{key: figures.get(key) for key in keys}}


def _table(rows: list[dict], keys: list[str]) -> str:
    """The runs, best test accuracy first (failed runs last)."""
    ranked = sorted(rows, key=lambda row: -(row.get("test_accuracy") or -1.0))
    header = ["run", *keys, "status", "test acc", "test loss", "epochs", "seconds"]
    lines = [header]
    for row in ranked:
        figures = ("",) * 4
        if row["status"] == "ok":
            figures = (f"{row['test_accuracy']:.4f}", f"{row['test_loss']:.4f}",
                       str(row["epochs_run"]), _seconds(row["seconds"]))  # fmt: skip
        lines.append([row["run"], *(str(row[key]) for key in keys), row["status"], *figures])
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines
    )


def _seconds(value) -> str:
    return "" if value is None else f"{value:.1f}"


# ---- the launcher ---------------------------------------------------------------------------
def _launch(distributed):
    """(rank, size, local size, barrier) of this process: under --distributed mpi from MPI,
    else the one process of the sweep."""
    if distributed is None:
        launched = max(_launcher_size(name) for name in LAUNCHER_SIZE_VARIABLES)
        if launched > 1:
            raise UsageError(
                f"started by an MPI launcher as one of {launched} processes; add --distributed "
                f"mpi so they share the runs (each would train every run)"
            )
        return 0, 1, 1, lambda: None
    try:
        from mpi4py import MPI
    except ImportError:
        raise UserError(
            "--distributed mpi needs mpi4py: pip install 'convnet-gpu[mpi]' (or mpi4py built "
            "against your site's MPI)"
        ) from None
    world = MPI.COMM_WORLD
    local = world.Split_type(MPI.COMM_TYPE_SHARED).Get_size()
    return world.Get_rank(), world.Get_size(), local, world.Barrier


def _launcher_size(name: str) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.isdigit() else 0


def _placed(point, size: int, local: int):
    """Under MPI, each run's CPU threads default to the cores over the processes of a node."""
    if size == 1 or "threads" in point.flags:
        return point
    threads = max(1, (os.cpu_count() or 1) // local)
    return type(point)(point.index, point.values, {**point.flags, "threads": threads},
                       point.negatable)  # fmt: skip
