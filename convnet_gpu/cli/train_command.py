"""convnet-gpu train: a new run from flags, or `--resume` of a saved one with its settings."""

from __future__ import annotations

import time

from ..errors import TrainingInterrupted, UserError
from ..limits import TooLarge
from ..rundir import RunDir
from ..settings import RunSettings
from .common import UsageError, backend_for, print_flush
from .parser import flag
from .ranks import (
    agree_on_setup,
    check_rank_flags,
    open_rank_communicator,
    rank_device,
    rank_threads,
    run_as_rank,
    silent_unless_root,
)


def cmd_train(args) -> int:
    check_rank_flags(args, "train")
    comm = open_rank_communicator(args.distributed, "convnet-gpu train")  # Local when alone
    with silent_unless_root(comm):
        return run_as_rank(comm, lambda: _train(args, comm), "convnet-gpu train")


def _train(args, comm) -> int:
    try:
        run = _prepare(args, comm)
        error = None
    except (UsageError, UserError, OSError) as exc:
        run, error = None, exc
    agree_on_setup(comm, error)  # every rank set up, or every rank stops here
    trainer, dataset, settings, run_dir = run
    if comm.is_root:
        run_dir.remove_stale_temporaries()  # all is checked: this process writes the run now
    if args.resume:
        if trainer.finished:
            if comm.is_root and run_dir.path.resolve() == RunDir.of(args.resume).path.resolve():
                run_dir.write_metrics(trainer.epoch_metrics)  # killed after its last checkpoint
            print(f"{args.resume} is complete ({len(trainer.epoch_metrics)} epoch(s)); nothing "
                  f"to resume")  # fmt: skip
            return 0
        print(
            f"resuming {args.resume} at epoch {trainer.position.epoch}, batch "
            f"{trainer.position.next_batch}, with its saved settings",
            flush=True,
        )
    print(_header(settings, dataset, trainer.meta["device"], comm, args.bn), flush=True)
    summary = _fit(trainer, run_dir)
    print(
        f"test accuracy {summary['test_accuracy']:.4f} after {summary['epochs_run']} epoch(s) in "
        f"{summary['seconds']:.1f} s ({summary['images_per_second']:.0f} img/s); wrote "
        f"{run_dir}/{RunDir.METRICS}, {RunDir.SUMMARY} and {RunDir.CHECKPOINT}"
    )
    return 0


def _prepare(args, comm):
    """(trainer, dataset, settings, run folder) of a new or resumed run, everything checked.
    Only rank 0 looks at the run folder's contents and creates it; every rank reads a resumed
    checkpoint (the run folder must be where every host sees it)."""
    from ..checkpoint import read_checkpoint
    from ..checkpoint_schema import settings_of

    if args.resume:
        given = RunSettings.given(args)
        if given:
            name, value = next(iter(given.items()))
            raise UsageError(
                f"--resume continues with the run's saved settings; drop {flag(name, value)} "
                f"(to change it, start a new run with --out)"
            )
        resumed = RunDir.of(args.resume)
        meta, arrays = read_checkpoint(resumed.checkpoint)
        settings = settings_of(meta, resumed.checkpoint)
        args.bn = _resumed_bn(args.bn, meta)
        run_dir = RunDir(args.out) if args.out else resumed
        moved = run_dir.path.resolve() != resumed.path.resolve()
        if comm.is_root and moved and run_dir.holds_run():
            raise UsageError(
                f"{run_dir} already holds another run (its {_listed(run_dir.run_files())} would "
                f"be overwritten); pick another --out or leave it out to continue in {resumed}"
            )
    else:
        settings = RunSettings.from_args(args)
        args.bn = args.bn or "sync"
        stamp = time.strftime("%Y%m%d-%H%M%S")  # rank 0's names the folder (the others write none)
        run_dir = RunDir(args.out or f"runs/{_model_stem(settings.model)}-{stamp}")
        if comm.is_root and run_dir.holds_run():
            resumable = run_dir.checkpoint.exists()  # a run's figures alone cannot continue
            raise UsageError(
                f"{run_dir} already holds a run (its {_listed(run_dir.run_files())} would be "
                f"overwritten); "
                + (f"continue it with --resume {run_dir} or " if resumable else "")
                + "pick another --out"
            )
    try:
        trainer, dataset = _build_trainer(args, settings, run_dir, comm)
    except TooLarge as exc:
        if args.resume and exc.by_settings:  # --resume refuses the flags its fix names
            raise exc.in_a_new_run() from None
        raise
    if args.resume:
        _check_same_data(meta, dataset, resumed.checkpoint)
        trainer.restore(meta, arrays, resumed.checkpoint)
    return trainer, dataset, settings, run_dir


def _build_trainer(args, settings: RunSettings, run_dir, comm):
    from ..distributed import largest_share
    from ..models import build_model
    from ..run import TrainingData, build_net, build_run_optimizer, load_dataset
    from ..train import Trainer

    build_model(settings.model)  # a bad model file is reported before the data is loaded
    device = rank_device(args.device, comm)
    backend = backend_for(device, settings.precision, rank_threads(args.threads, comm))
    if comm.is_root:
        run_dir.create()  # fail now (unwritable folder), not after the first epoch
    dataset = load_dataset(settings.dataset, args.data_dir, settings.train_subset)
    # Each rank's net holds its block of a global batch: at most rank 0's.
    net = build_net(settings, backend, dataset, largest_share(settings.batch_size, comm.size))
    net.span_ranks(comm, sync_statistics=args.bn == "sync")
    optimizer = build_run_optimizer(settings, net)
    data = TrainingData.split(dataset, settings)
    meta = {
        "device": backend.describe(),
        "train_images": int(len(dataset.train_y)),
        "data": dataset.identity(),
    }
    if args.distributed != "none" or args.bn != "sync":  # alone, a resumed run keeps its --bn
        meta["distributed"] = {"engine": comm.engine, "ranks": comm.size, "bn": args.bn}
    trainer = Trainer(
        net, optimizer, data, settings, run_dir if comm.is_root else None, print_flush,
        progress=False if args.no_progress or not comm.is_root else None, meta=meta,
        cuda_graph=args.cuda_graph, comm=comm,
    )  # fmt: skip
    return trainer, dataset


def _resumed_bn(given: str | None, meta: dict) -> str:
    """--bn of a resumed run: the one it trained with (sync where it trained alone and never
    said); a given --bn that differs is refused like any other setting under --resume."""
    saved = meta.get("distributed", {}).get("bn")
    if given is not None and saved is not None and given != saved:
        raise UsageError(
            f"--resume continues with the run's saved settings, and it trained with --bn "
            f"{saved}; drop --bn {given} (to change it, start a new run with --out)"
        )
    return given or saved or "sync"


def _check_same_data(meta: dict, dataset, path) -> None:
    """A resumed run must train on the data it began with: the same split sizes and labels (a
    checkpoint from before the checksum was kept has the training set's size only)."""
    saved = meta.get("data")
    now = dataset.identity()
    if not isinstance(saved, dict):
        saved = {"train_images": meta.get("train_images", now["train_images"])}
    differing = next((key for key in saved if saved[key] != now.get(key)), None)
    if differing is not None:
        shown = {"train_images": "training images", "test_images": "test images",
                 "labels_sha256": "labels (checksum)"}.get(differing, differing)  # fmt: skip
        raise UsageError(
            f"{path}: the run trained on other data ({shown}: {str(saved[differing])[:12]} "
            f"then, {str(now.get(differing))[:12]} now); resume with the --data-dir it "
            f"trained on"
        )


def _fit(trainer, run_dir) -> dict:
    try:
        return trainer.fit()
    except TrainingInterrupted as exc:
        if exc.saved is None:
            raise
        raise TrainingInterrupted(
            f"{exc}; continue with --resume {run_dir}", exc.saved, exc.between_steps
        ) from None


def _listed(names: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)


def _model_stem(model: str) -> str:
    from pathlib import Path

    return Path(model).stem


def _header(settings: RunSettings, dataset, device: str, comm, bn: str) -> str:
    ranks = f" x {comm.describe()}, BatchNorm {bn}" if comm.engine != "none" else ""
    return (
        f"training {settings.model} on {settings.dataset} ({len(dataset.train_y)} train / "
        f"{len(dataset.test_y)} test images) on {device}{ranks}, {settings.epochs} "
        f"epoch(s), batch {settings.batch_size}, {settings.optimizer} lr {settings.lr} "
        f"({settings.schedule}), momentum {settings.momentum}{_regularization(settings)}"
    )


def _regularization(settings: RunSettings) -> str:
    """The header's tail: weight decay, jitter, flips and label smoothing, where they are on."""
    parts = [
        f"weight decay {settings.weight_decay}" if settings.weight_decay else "",
        f"jitter {settings.jitter}" if settings.jitter else "",
        "flips" if settings.flip else "",
        f"label smoothing {settings.label_smoothing}" if settings.label_smoothing else "",
    ]
    return "".join(f", {part}" for part in parts if part)
