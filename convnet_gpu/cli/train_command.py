"""convnet-gpu train: a new run from flags, or `--resume` of a saved one with its settings."""

from __future__ import annotations

import time

from ..errors import TrainingInterrupted
from ..limits import TooLarge
from ..settings import RunSettings
from .common import UsageError, backend_for, print_flush
from .parser import flag


def cmd_train(args) -> int:
    from ..checkpoint import read_checkpoint
    from ..checkpoint_schema import settings_of
    from ..rundir import RunDir

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
        run_dir = RunDir(args.out) if args.out else resumed
        if run_dir.path.resolve() != resumed.path.resolve() and run_dir.holds_run():
            raise UsageError(
                f"{run_dir} already holds another run (its {_listed(run_dir.run_files())} would "
                f"be overwritten); pick another --out or leave it out to continue in {resumed}"
            )
    else:
        settings = RunSettings.from_args(args)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir = RunDir(args.out or f"runs/{_model_stem(settings.model)}-{stamp}")
        if run_dir.holds_run():
            resumable = run_dir.checkpoint.exists()  # a run's figures alone cannot continue
            raise UsageError(
                f"{run_dir} already holds a run (its {_listed(run_dir.run_files())} would be "
                f"overwritten); "
                + (f"continue it with --resume {run_dir} or " if resumable else "")
                + "pick another --out"
            )
    try:
        trainer, dataset = _build_trainer(args, settings, run_dir)
    except TooLarge as exc:
        if args.resume and exc.by_settings:  # --resume refuses the flags its fix names
            raise exc.in_a_new_run() from None
        raise
    if args.resume:
        _check_same_data(meta, dataset, resumed.checkpoint)
        trainer.restore(meta, arrays, resumed.checkpoint)
    run_dir.remove_stale_temporaries()  # all is checked: this process writes the run from now
    if args.resume:
        if trainer.finished:
            if run_dir is resumed:  # killed after its last checkpoint: its metrics catch up
                resumed.write_metrics(trainer.epoch_metrics)
            print(
                f"{resumed} is complete ({len(trainer.epoch_metrics)} epoch(s)); nothing to resume"
            )
            return 0
        print(
            f"resuming {args.resume} at epoch {trainer.position.epoch}, batch "
            f"{trainer.position.next_batch}, with its saved settings",
            flush=True,
        )
    print(_header(settings, dataset, trainer.meta["device"]), flush=True)
    summary = _fit(trainer, run_dir)
    print(
        f"test accuracy {summary['test_accuracy']:.4f} after {summary['epochs_run']} epoch(s) in "
        f"{summary['seconds']:.1f} s ({summary['images_per_second']:.0f} img/s); wrote "
        f"{run_dir}/{RunDir.METRICS}, {RunDir.SUMMARY} and {RunDir.CHECKPOINT}"
    )
    return 0


def _build_trainer(args, settings: RunSettings, run_dir):
    from ..models import build_model
    from ..run import TrainingData, build_net, build_run_optimizer, load_dataset
    from ..train import Trainer

    build_model(settings.model)  # a bad model file is reported before the data is loaded
    backend = backend_for(args.device, settings.precision, args.threads)
    run_dir.create()  # fail now (unwritable folder), not after the first epoch
    dataset = load_dataset(settings.dataset, args.data_dir, settings.train_subset)
    net = build_net(settings, backend, dataset)
    optimizer = build_run_optimizer(settings, net)
    data = TrainingData.split(dataset, settings)
    meta = {
        "device": backend.describe(),
        "train_images": int(len(dataset.train_y)),
        "data": dataset.identity(),
    }
    trainer = Trainer(
        net, optimizer, data, settings, run_dir, print_flush,
        progress=False if args.no_progress else None, meta=meta, cuda_graph=args.cuda_graph,
    )  # fmt: skip
    return trainer, dataset


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
        raise TrainingInterrupted(f"{exc}; continue with --resume {run_dir}", exc.saved) from None


def _listed(names: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)


def _model_stem(model: str) -> str:
    from pathlib import Path

    return Path(model).stem


def _header(settings: RunSettings, dataset, device: str) -> str:
    return (
        f"training {settings.model} on {settings.dataset} ({len(dataset.train_y)} train / "
        f"{len(dataset.test_y)} test images) on {device}, {settings.epochs} "
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
