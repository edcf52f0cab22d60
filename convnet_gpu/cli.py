"""convnet-gpu: train, gradcheck, bench and info subcommands.

Every expected failure (bad flag, missing data, missing GPU) ends with one line on stderr and
exit status 2; a failed check or a diverged run exits 1; no traceback for either.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from . import __version__
from .optim import OPTIMIZERS, SCHEDULES
from .run import DATASETS

EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


class UsageError(Exception):
    """A problem with what the user asked for; the message says how to fix it."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage dump
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _number(text: str, kind):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _bounded(kind, accepts, rule: str):
    """An argparse type: parse `kind`, then require `accepts(value)` (`rule` says it in words)."""

    def parse(text: str):
        value = _number(text, kind)
        if not accepts(value):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
        return value

    return parse


_positive_int = _bounded(int, lambda v: v >= 1, ">= 1")
_non_negative_int = _bounded(int, lambda v: v >= 0, ">= 0")
_positive_float = _bounded(float, lambda v: v > 0, "> 0")
_non_negative_float = _bounded(float, lambda v: v >= 0, ">= 0")
_fraction = _bounded(float, lambda v: 0 <= v < 1, "in [0, 1)")


def _add_device(parser, default="auto"):
    parser.add_argument(
        "--device",
        default=default,
        help="auto, cpu, cuda or cuda:N (default: %(default)s; auto takes a GPU if CuPy finds one)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="convnet-gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"convnet-gpu {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = sub.add_parser("train", help="train a model and write metrics.jsonl and summary.json")
    _add_device(train)
    train.add_argument(
        "--model",
        default="simple-cnn",
        help="simple-cnn, simple-cnn-bn, mini-resnet, or a model file NAME.toml "
        "(default: %(default)s)",
    )
    train.add_argument("--dataset", default="fashion-mnist", choices=DATASETS)
    train.add_argument(
        "--data-dir",
        help="folder holding the dataset's files (the four IDX files, "
        "or CIFAR-10's batches); default: the Debian package's "
        "/usr/share/datasets/<dataset>, then the download cache",
    )
    train.add_argument("--epochs", type=_positive_int, default=2)
    train.add_argument("--batch-size", type=_positive_int, default=64)
    train.add_argument("--lr", type=_positive_float, default=0.02)
    train.add_argument("--momentum", type=_fraction, default=0.9)
    train.add_argument("--weight-decay", type=_non_negative_float, default=0.0)
    train.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd")
    train.add_argument(
        "--max-grad-norm",
        type=_positive_float,
        metavar="NORM",
        help="clip the gradient's global L2 norm to NORM",
    )
    train.add_argument(
        "--schedule",
        choices=SCHEDULES,
        default="cosine",
        help="learning-rate schedule over all steps (default: %(default)s)",
    )
    train.add_argument("--label-smoothing", type=_fraction, default=0.0, metavar="E")
    train.add_argument(
        "--jitter",
        type=_non_negative_int,
        default=0,
        metavar="PAD",
        help="image jitter on the device: shift each training image by up to PAD "
        "pixels (zero padding) and flip it horizontally at random",
    )
    train.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="random horizontal flips of the training images (default: on with "
        "--jitter, off without): --jitter 0 --flip flips only, --jitter PAD "
        "--no-flip shifts only",
    )
    train.add_argument(
        "--val-split",
        type=_fraction,
        default=0.0,
        metavar="F",
        help="hold out this share of the training set for validation",
    )
    train.add_argument(
        "--early-stop",
        type=_positive_int,
        metavar="EPOCHS",
        help="stop when validation accuracy has not improved for EPOCHS epochs",
    )
    train.add_argument(
        "--plateau",
        action="store_true",
        help="on a validation regression: restore the best parameters, halve the "
        "learning rate, reset momentum (the seed's rule)",
    )
    train.add_argument("--seed", type=int, default=0)
    train.add_argument(
        "--train-subset",
        type=_positive_int,
        metavar="N",
        help="train on the first N training images only",
    )
    train.add_argument(
        "--out",
        metavar="DIR",
        help="run folder for metrics.jsonl, summary.json and "
        "checkpoint.npz (default: runs/<model>-<time>)",
    )
    train.add_argument(
        "--resume",
        metavar="DIR",
        help="continue the run saved in DIR with its own settings (writes to DIR)",
    )
    train.add_argument("--no-progress", action="store_true", help="never show the progress bar")

    evaluate = sub.add_parser("eval", help="score a checkpoint on the test set")
    evaluate.add_argument(
        "--checkpoint", metavar="DIR", required=True, help="a run folder (or its checkpoint.npz)"
    )
    _add_device(evaluate)
    evaluate.add_argument(
        "--dataset", choices=DATASETS, help="default: the dataset the checkpoint was trained on"
    )
    evaluate.add_argument("--data-dir")
    evaluate.add_argument("--batch-size", type=_positive_int, default=256)

    over = sub.add_parser("overfit", help="sanity check: memorize K training images")
    _add_device(over)
    over.add_argument("--model", default="simple-cnn")
    over.add_argument("--samples", type=_positive_int, default=64, metavar="K")
    over.add_argument("--batch-size", type=_positive_int, default=32)
    over.add_argument("--lr", type=_positive_float, default=0.01)
    over.add_argument("--max-steps", type=_positive_int, default=500)
    over.add_argument("--data-dir")
    over.add_argument("--seed", type=int, default=0)

    check = sub.add_parser("gradcheck", help="check every layer's gradients numerically (float64)")
    _add_device(check, default="cpu")
    check.add_argument("--seed", type=int, default=0)

    bench = sub.add_parser("bench", help="time training steps and inference per device")
    bench.add_argument(
        "--device",
        default="cpu,cuda",
        help="comma-separated devices (default: %(default)s; absent ones are skipped)",
    )
    bench.add_argument("--model", default="simple-cnn")
    bench.add_argument("--batch-size", type=_positive_int, default=128)
    bench.add_argument(
        "--steps", type=_positive_int, default=20, help="timed steps per measurement"
    )
    bench.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    bench.add_argument(
        "--peer",
        choices=["none", "torch"],
        default="none",
        help="also time PyTorch on the same devices (needs torch installed)",
    )
    bench.add_argument("--json", metavar="FILE", help="also write the results as JSON")

    plot = sub.add_parser(
        "plot",
        help="draw a run's loss and accuracy curves (and the confusion "
        "matrix after eval) as PNG files",
    )
    plot.add_argument("run_dir", metavar="RUN_DIR")
    plot.add_argument("--out", metavar="DIR", help="where to write the PNGs (default: RUN_DIR)")

    download = sub.add_parser(
        "download",
        help="fetch a dataset's official files (checksummed, resumable) into the cache folder",
    )
    download.add_argument("dataset", choices=DATASETS)
    download.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="default: $CONVNET_GPU_DATA/<dataset> or ~/.cache/convnet_gpu/<dataset>",
    )

    sub.add_parser("info", help="versions, devices and where the data is found")
    return parser


# ---- subcommands ----------------------------------------------------------------------------
def cmd_train(args) -> int:
    from .checkpoint import CHECKPOINT_NAME, read_checkpoint
    from .run import (
        build_net,
        build_run_optimizer,
        load_dataset,
        settings_from_args,
        settings_from_meta,
    )
    from .train import TrainConfig, Trainer

    settings, out_dir = settings_from_args(args), args.out
    if args.resume:
        _refuse_settings_beside_resume(args)
        resume_dir = Path(args.resume)
        resume_dir = resume_dir.parent if resume_dir.is_file() else resume_dir
        meta, _ = read_checkpoint(resume_dir)
        settings, out_dir = settings_from_meta(meta), args.out or resume_dir
    _build_model_or_usage_error(settings["model"])
    backend = _backend_or_usage_error(args.device)
    out_dir = Path(
        out_dir or f"runs/{Path(settings['model']).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    if not args.resume and (out_dir / CHECKPOINT_NAME).exists():
        raise UsageError(
            f"{out_dir} already holds a run (its {CHECKPOINT_NAME} would be "
            f"overwritten); continue it with --resume {out_dir} or pick another --out"
        )
    out_dir.mkdir(parents=True, exist_ok=True)  # fail now, not after the first epoch
    dataset = load_dataset(settings["dataset"], args.data_dir, settings["train_subset"])
    net = _usage_errors(
        build_net,
        settings["model"],
        backend,
        settings["batch_size"],
        dataset.input_shape,
        settings["seed"],
        dataset.num_classes,
        settings["label_smoothing"],
    )
    optimizer = _usage_errors(build_run_optimizer, settings, net)
    config = TrainConfig(
        epochs=settings["epochs"],
        batch_size=settings["batch_size"],
        seed=settings["seed"],
        schedule=settings["schedule"],
        val_split=settings["val_split"],
        early_stop=settings["early_stop"],
        plateau=settings["plateau"],
        jitter=settings["jitter"],
        flip=settings["flip"],
        out_dir=str(out_dir),
        progress=False if args.no_progress else None,
    )
    meta = {**settings, "device": backend.describe(), "train_images": int(len(dataset.train_y))}
    trainer = _usage_errors(Trainer, net, optimizer, dataset, config, _print_flush, meta)
    if args.resume:
        trainer.resume(resume_dir)
        if trainer.finished:
            print(f"{resume_dir} is complete ({len(trainer.history)} epoch(s)); nothing to resume")
            return 0
        print(
            f"resuming {args.resume} at epoch {trainer.position.epoch}, batch "
            f"{trainer.position.next_batch}, with its saved settings",
            flush=True,
        )
    print(
        f"training {settings['model']} on {settings['dataset']} ({len(dataset.train_y)} train / "
        f"{len(dataset.test_y)} test images) on {backend.describe()}, {settings['epochs']} "
        f"epoch(s), batch {settings['batch_size']}, {settings['optimizer']} lr {settings['lr']} "
        f"({settings['schedule']}), momentum {settings['momentum']}{_regularization(settings)}",
        flush=True,
    )
    summary = trainer.fit()
    print(
        f"test accuracy {summary['test_accuracy']:.4f} after {summary['epochs_run']} epoch(s) in "
        f"{summary['seconds']:.1f} s ({summary['images_per_second']:.0f} img/s); wrote "
        f"{out_dir}/metrics.jsonl, summary.json and checkpoint.npz"
    )
    return 0


def _regularization(settings: dict) -> str:
    """The header's tail: weight decay, jitter, flips and label smoothing, where they are on."""
    parts = [
        f"weight decay {settings['weight_decay']}" if settings["weight_decay"] else "",
        f"jitter {settings['jitter']}" if settings["jitter"] else "",
        "flips" if settings["flip"] else "",
        f"label smoothing {settings['label_smoothing']}" if settings["label_smoothing"] else "",
    ]
    return "".join(f", {part}" for part in parts if part)


def cmd_eval(args) -> int:
    from .checkpoint import load_into, read_checkpoint
    from .evaluate import evaluate_net, format_report
    from .fileio import write_json_atomic
    from .run import build_net, load_dataset

    meta, arrays = read_checkpoint(args.checkpoint)
    backend = _backend_or_usage_error(args.device)
    dataset = load_dataset(args.dataset or meta["dataset"], args.data_dir)
    net = _usage_errors(
        build_net,
        meta["model"],
        backend,
        args.batch_size,
        dataset.input_shape,
        meta["seed"],
        dataset.num_classes,
        meta["label_smoothing"],
    )
    load_into(meta, arrays, net, path=args.checkpoint)
    report = evaluate_net(net, dataset.test_x, dataset.test_y, dataset.num_classes)
    print(
        f"{meta['model']} from {args.checkpoint} on {args.dataset or meta['dataset']} "
        f"({len(dataset.test_y)} test images), {backend.describe()}"
    )
    print(format_report(report, dataset.classes))
    run_dir = Path(args.checkpoint)
    run_dir = run_dir if run_dir.is_dir() else run_dir.parent
    write_json_atomic(
        run_dir / "eval.json",
        {**report, "classes": list(dataset.classes), "dataset": args.dataset or meta["dataset"]},
    )
    print(f"wrote {run_dir / 'eval.json'} (convnet-gpu plot {run_dir} draws it)")
    return 0


def cmd_overfit(args) -> int:
    from .data import DataError, load_fashion_mnist
    from .optim import SGD
    from .run import build_net
    from .train import overfit

    _build_model_or_usage_error(args.model)
    backend = _backend_or_usage_error(args.device)
    try:
        data = load_fashion_mnist(args.data_dir, train_subset=args.samples)
    except DataError as exc:
        raise UsageError(str(exc)) from None
    images, labels = data.train_x, data.train_y
    net = _usage_errors(
        build_net,
        args.model,
        backend,
        min(args.batch_size, args.samples),
        data.input_shape,
        args.seed,
        data.num_classes,
    )
    steps, accuracy = overfit(net, SGD(args.lr, 0.9).setup(net), images, labels, args.max_steps)
    if steps is None:
        print(
            f"FAILED: {args.model} reached only {accuracy:.4f} training accuracy on "
            f"{args.samples} images after {args.max_steps} steps; a correct net memorizes them "
            f"(check the layers with `convnet-gpu gradcheck`, or try another --lr)"
        )
        return EXIT_FAILED
    print(
        f"{args.model} reached 100% training accuracy on {args.samples} images after {steps} "
        f"steps on {backend.describe()}"
    )
    return 0


def cmd_gradcheck(args) -> int:
    from .gradcheck import check_all

    backend = _backend_or_usage_error(args.device)
    print(f"gradient check on {backend.describe()} (float64, central differences)")
    print(f"{'layer':<34} {'mode':<11} {'max rel error':>13}  result")
    results = check_all(backend, seed=args.seed)
    for result in results:
        verdict = "pass" if result.passed else "FAIL"
        print(f"{result.name:<34} {result.mode:<11} {result.max_rel_error:>13.2e}  {verdict}")
    failed = [r.name for r in results if not r.passed]
    if failed:
        print(
            f"{len(failed)} of {len(results)} checks failed (tolerance {results[0].tolerance:g}): "
            f"{', '.join(failed)}"
        )
        return EXIT_FAILED
    print(f"all {len(results)} checks passed (tolerance {results[0].tolerance:g})")
    return 0


def cmd_bench(args) -> int:
    from .backends import parse_device
    from .bench import format_table, run_benchmarks
    from .fileio import write_json_atomic
    from .models import MODELS

    devices = [d.strip() for d in args.device.split(",") if d.strip()]
    for device in devices:
        try:
            parse_device(device)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    if args.model not in MODELS:
        raise UsageError(f"unknown model {args.model!r}; choose one of: {', '.join(MODELS)}")
    results = run_benchmarks(
        devices,
        args.model,
        args.batch_size,
        args.steps,
        args.warmup,
        peer=None if args.peer == "none" else args.peer,
    )
    print(
        f"model {args.model}, batch {args.batch_size}, {args.steps} timed steps after "
        f"{args.warmup} warm-up steps, fp32"
    )
    print(format_table(results))
    if args.json:
        write_json_atomic(args.json, results)
        print(f"wrote {args.json}")
    return 0


def cmd_plot(args) -> int:
    from .plot import PlotError, PlotUnavailable, plot_run

    try:
        written = plot_run(args.run_dir, args.out)
    except (PlotError, PlotUnavailable) as exc:
        raise UsageError(str(exc)) from None
    print("wrote " + ", ".join(str(path) for path in written))
    return 0


def cmd_download(args) -> int:
    from .data import fetch_dataset

    folder = fetch_dataset(
        args.dataset, args.cache_dir, progress=_download_progress if sys.stderr.isatty() else None
    )
    print(
        f"{args.dataset}: ready in {folder} (checksums verified); train with "
        f"--dataset {args.dataset}" + (f" --data-dir {folder}" if args.cache_dir else "")
    )
    return 0


def _download_progress(file_name: str, done: int, total: int | None) -> None:
    share = f"{100 * done / total:5.1f}%" if total else f"{done >> 20} MiB"
    end = "\n" if total and done >= total else ""
    print(f"\r  {file_name} {share}", end=end, file=sys.stderr, flush=True)


def cmd_info(args) -> int:
    import numpy

    from .backends import cuda_problem
    from .data import DataError, find_dataset_dir
    from .data.fashion_mnist import IDX_FILE_NAMES

    print(f"convnet-gpu {__version__}, Python {sys.version.split()[0]}, NumPy {numpy.__version__}")
    problem = cuda_problem(0)
    print(f"cuda: {'available' if problem is None else problem}")
    try:
        print(f"fashion-mnist: {find_dataset_dir(None, IDX_FILE_NAMES, 'fashion-mnist')}")
    except DataError as exc:
        print(f"fashion-mnist: not found ({exc})")
    return 0


COMMANDS = {
    "train": cmd_train,
    "eval": cmd_eval,
    "overfit": cmd_overfit,
    "gradcheck": cmd_gradcheck,
    "bench": cmd_bench,
    "plot": cmd_plot,
    "download": cmd_download,
    "info": cmd_info,
}


# ---- helpers --------------------------------------------------------------------------------
def _print_flush(line: str) -> None:
    print(line, flush=True)


def _backend_or_usage_error(device: str):
    from .backends import get_backend

    try:
        return get_backend(device, announce=_print_flush)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _refuse_settings_beside_resume(args) -> None:
    """--resume continues with the run's saved settings; a changed one would be silently lost."""
    from .run import RUN_SETTINGS

    defaults = build_parser().parse_args(["train"])
    for name in RUN_SETTINGS:
        if getattr(args, name) != getattr(defaults, name):
            flag = (
                "--"
                + ("no-" if getattr(args, name) is False and name == "flip" else "")
                + name.replace("_", "-")
            )
            raise UsageError(
                f"--resume continues with the run's saved settings; drop {flag} "
                f"(to change it, start a new run with --out)"
            )


def _usage_errors(function, *args):
    """Call function(*args); a ValueError (a model that does not fit its input) is a usage error."""
    try:
        return function(*args)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _build_model_or_usage_error(name: str):
    from .models import build_model

    try:
        return build_model(name)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def main(argv=None) -> int:
    from .backends import DeviceUnavailable
    from .checkpoint import CheckpointError
    from .data import DataError
    from .train import TrainingDiverged, TrainingInterrupted

    args = build_parser().parse_args(argv)
    prog = f"convnet-gpu {args.command}"
    try:
        return COMMANDS[args.command](args)
    except (UsageError, DeviceUnavailable, DataError, CheckpointError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # an unwritable --out, a full disk, ...
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"{prog}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_USAGE
    except TrainingDiverged as exc:
        print(f"{prog}: stopped: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except TrainingInterrupted as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
