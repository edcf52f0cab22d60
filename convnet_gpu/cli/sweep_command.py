"""convnet-gpu sweep: train every point of a grid of settings (sweep.py), in one process or
spread over the ranks of an MPI launch, then write one table.

    mpiexec -n 4 convnet-gpu sweep GRID.toml --distributed mpi --device cpu

Each rank trains its points alone (no collective while training) into SWEEP_DIR/<point>, then
rank 0 gathers every result and writes SWEEP_DIR/sweep.json and prints the table, best test
accuracy first. The folder keeps a copy of the grid (sweep.toml) and is refused to another grid.
A point whose folder holds a finished run is taken as it is, one with only a checkpoint is
resumed: running the sweep again finishes an interrupted one. A point that fails
with a user error or diverges is a row saying so; anything else ends every rank (cli/ranks.py).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import TrainingDiverged, UserError
from ..rundir import RunDir
from .common import UsageError, as_flags
from .parser import EXIT_FAILED
from .ranks import (
    agree_on_setup,
    check_rank_flags,
    rank_device,
    rank_threads,
    run_as_rank,
    silent_unless_root,
)

TABLE_FIGURES = ("test_accuracy", "test_loss", "epochs_run", "seconds")
CONFIG_COPY = "sweep.toml"  # the grid a sweep folder belongs to


def cmd_sweep(args) -> int:
    from ..distributed import open_communicator
    from ..sweep import read_sweep
    from .parser import parse_setting

    check_rank_flags(args, "sweep")
    sweep = read_sweep(args.config, parse_setting)  # the same on every rank: all stop alike
    comm = open_communicator(args.distributed)
    with silent_unless_root(comm):
        work = lambda: _sweep(args, sweep, comm)
        return run_as_rank(comm, work, "convnet-gpu sweep", stops_together=False)


def _sweep(args, sweep, comm) -> int:
    from ..fileio import write_json_atomic
    from ..sweep import point_name, points_of_rank

    folder = Path(args.out or Path("runs") / Path(args.config).stem)
    error = None
    if comm.is_root:
        try:
            _claim(folder, Path(args.config))
        except (UsageError, OSError) as exc:
            error = exc
    agree_on_setup(comm, error)  # the folder is this sweep's before any rank trains into it
    points = sweep.points()
    mine = points_of_rank(len(points), comm.rank, comm.size)
    print(f"sweep of {len(points)} run(s) from {args.config} into {folder}, over "
          f"{comm.describe()}", flush=True)  # fmt: skip
    results = {}
    for index in mine:
        name = point_name(points[index])
        print(f"[{index + 1}/{len(points)}] {name}", flush=True)
        results[index] = {"name": name, "settings": points[index], "rank": comm.rank,
                          **_train_point(args, sweep.settings(points[index]), folder / name,
                                         comm)}  # fmt: skip
    gathered = {}
    for part in comm.all_gather(results):  # the one collective: every rank's results
        gathered.update(part)
    rows = [gathered[index] for index in range(len(points))]
    if comm.is_root:
        write_json_atomic(folder / "sweep.json", {"config": str(args.config), "runs": rows})
        print(_table(rows))
        print(f"wrote {folder / 'sweep.json'}")
    return 0 if all(row["status"] == "done" for row in rows) else EXIT_FAILED


def _claim(folder: Path, config: Path) -> None:
    """Make the folder this config's sweep: a copy of the config is kept there, and a folder
    holding another config's sweep, or other files, is refused (its runs are not this grid's)."""
    from ..fileio import write_bytes_atomic

    text, kept = config.read_bytes(), folder / CONFIG_COPY
    if kept.exists() and kept.read_bytes() != text:
        raise UsageError(f"{folder} holds the sweep of another grid ({kept} is not {config}); "
                         f"pick another --out")  # fmt: skip
    if not kept.exists() and folder.is_dir() and any(folder.iterdir()):
        raise UsageError(f"{folder} holds files but no sweep; pick another --out")
    folder.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(kept, text)


def _train_point(args, settings, out: Path, comm) -> dict:
    """Train one point alone (or take its finished run, or resume its checkpoint); its
    summary's figures, or the line of the error that ended it."""
    from ..distributed import Local
    from .train_command import _train

    run_dir = RunDir(out)
    if not run_dir.summary.exists():
        resume = str(out) if run_dir.checkpoint.exists() else None
        given = {} if resume else settings.to_meta()  # --resume takes the run's own settings
        train_args = argparse.Namespace(
            **given, resume=resume, out=None if resume else str(out), data_dir=args.data_dir,
            device=rank_device(args.device, comm), threads=rank_threads(args.threads, comm),
            no_progress=True, cuda_graph=args.cuda_graph, distributed="none", bn="sync",
        )  # fmt: skip
        try:
            _train(train_args, Local())
        except (UsageError, UserError, OSError, TrainingDiverged) as exc:
            from . import describe_error

            status = "diverged" if isinstance(exc, TrainingDiverged) else "error"
            return {"status": status, "error": as_flags(str(exc)) if status == "diverged"
                    else describe_error(exc)}  # fmt: skip
    return {"status": "done", **_figures(run_dir)}


def _figures(run_dir: RunDir) -> dict:
    """The table's figures of a finished run: from its summary, or, for a run killed between
    its last checkpoint and its summary (which a resume finds complete), from its metrics."""
    from ..plot import read_metrics

    if run_dir.summary.exists():
        summary = json.loads(run_dir.summary.read_text())
        return {key: summary.get(key) for key in TABLE_FIGURES}
    epochs = read_metrics(run_dir.metrics)  # a damaged file: one line naming it, not a traceback
    last = epochs[-1]
    return {"test_accuracy": last["test_accuracy"], "test_loss": last["test_loss"],
            "epochs_run": len(epochs), "seconds": None}  # fmt: skip


def _table(rows: list[dict]) -> str:
    """The runs, best test accuracy first, then those that failed."""
    done = sorted((r for r in rows if r["status"] == "done"),
                  key=lambda r: -(r["test_accuracy"] or 0.0))  # fmt: skip
    width = max(len(r["name"]) for r in rows)
    lines = [f"{'run':<{width}}  test acc  test loss  epochs  seconds  rank"]
    for r in done:
        seconds = _seconds(r["seconds"])
        lines.append(f"{r['name']:<{width}}  {r['test_accuracy']:8.4f}  {r['test_loss']:9.4f}  "
                     f"{r['epochs_run']:6d}  {seconds:>7}  {r['rank']:4d}")  # fmt: skip
    for r in rows:
        if r["status"] != "done":
            lines.append(f"{r['name']:<{width}}  {r['status']}: {r['error']}")
    return "\n".join(lines)


def _seconds(value) -> str:
    return "-" if value is None else f"{value:.1f}"
