"""convnet-gpu: train, evaluate, sanity-check, gradient-check and benchmark convnets.

Commands: train, eval, overfit, plot, gradcheck, bench, download, info.

Every problem a user can fix (a bad flag, missing data, a bad model file or checkpoint, a
missing GPU) is a UserError: one line on stderr and exit status 2. A failed check or a diverged
run exits 1, Ctrl-C 130; no traceback for any of them. The parser imports no part of the
training stack, so `--help` answers at once.
"""

from __future__ import annotations

import argparse
import re
import sys
import time

from . import __version__
from .errors import TrainingDiverged, TrainingInterrupted, UserError
from .settings import DEFAULTS, OPTIMIZERS, SCHEDULES, RunSettings

EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130
DATASET_NAMES = ("fashion-mnist", "mnist", "cifar-10")  # the data registry's keys (a test checks)
MODEL_HELP = "simple-cnn, simple-cnn-bn, mini-resnet, or a model file NAME.toml"


class UsageError(Exception):
    """A problem with the command line itself; the message says how to fix it."""


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
_positive_float = _bounded(float, lambda v: 0 < v < float("inf"), "a finite number > 0")
_non_negative_float = _bounded(float, lambda v: 0 <= v < float("inf"), "a finite number >= 0")
_fraction = _bounded(float, lambda v: 0 <= v < 1, "in [0, 1)")


def flag(setting: str, value=None) -> str:
    """The command-line spelling of a run setting (`--no-flip` for flip=False)."""
    prefix = "no-" if setting == "flip" and value is False else ""
    return f"--{prefix}{setting.replace('_', '-')}"


def _setting(parser, name: str, help: str = "", **kwargs) -> None:
    """A flag for the run setting `name`; left unset, it is absent from the namespace and the
    setting keeps its default from RunSettings (named in the help)."""
    default = getattr(DEFAULTS, name)
    shown = "" if default is None else f" (default: {default})"
    parser.add_argument(
        flag(name), dest=name, default=argparse.SUPPRESS, help=help + shown, **kwargs
    )


def _add_device(parser, default="auto"):
    parser.add_argument(
        "--device",
        default=default,
        help="auto, cpu, cuda or cuda:N (default: %(default)s; auto takes a GPU if CuPy finds one)",
    )


def _add_train(sub) -> None:
    train = sub.add_parser("train", help="train a model and write metrics.jsonl and summary.json")
    _add_device(train)
    _setting(train, "model", MODEL_HELP)
    _setting(train, "dataset", choices=DATASET_NAMES)
    train.add_argument(
        "--data-dir",
        help="folder holding the dataset's files (the four IDX files, or CIFAR-10's batches); "
        "default: the Debian package's /usr/share/datasets/<dataset>, then the download cache",
    )
    _setting(train, "epochs", type=_positive_int)
    _setting(train, "batch_size", type=_positive_int)
    _setting(train, "lr", "the peak learning rate", type=_positive_float)
    _setting(train, "momentum", type=_fraction)
    _setting(train, "weight_decay", type=_non_negative_float)
    _setting(train, "optimizer", choices=OPTIMIZERS)
    _setting(
        train, "max_grad_norm", "clip the gradient's global L2 norm to NORM",
        type=_positive_float, metavar="NORM",
    )  # fmt: skip
    _setting(train, "schedule", "learning-rate schedule over all steps", choices=SCHEDULES)
    _setting(train, "label_smoothing", type=_fraction, metavar="E")
    _setting(
        train, "jitter", "image jitter on the device: shift each training image by up to PAD "
        "pixels (zero padding) and flip it horizontally at random",
        type=_non_negative_int, metavar="PAD",
    )  # fmt: skip
    _setting(
        train, "flip", "random horizontal flips of the training images (default: on with "
        "--jitter, off without): --jitter 0 --flip flips only, --jitter PAD --no-flip shifts only",
        action=argparse.BooleanOptionalAction,
    )  # fmt: skip
    _setting(
        train, "val_split", "hold out this share of the training set for validation",
        type=_fraction, metavar="F",
    )  # fmt: skip
    _setting(
        train, "early_stop", "stop when validation accuracy has not improved for EPOCHS epochs",
        type=_positive_int, metavar="EPOCHS",
    )  # fmt: skip
    _setting(
        train, "plateau", "on a validation regression: restore the best parameters, halve the "
        "learning rate, reset momentum", action="store_true",
    )  # fmt: skip
    _setting(train, "seed", type=int)
    _setting(
        train, "train_subset", "train on the first N training images only",
        type=_positive_int, metavar="N",
    )  # fmt: skip
    train.add_argument(
        "--out",
        metavar="DIR",
        help="run folder for metrics.jsonl, summary.json and checkpoint.npz "
        "(default: runs/<model>-<time>)",
    )
    train.add_argument(
        "--resume",
        metavar="DIR",
        help="continue the run saved in DIR (or DIR/checkpoint.npz) with its own settings",
    )
    train.add_argument("--no-progress", action="store_true", help="never show the progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="convnet-gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"convnet-gpu {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_train(sub)

    evaluate = sub.add_parser("eval", help="score a checkpoint on the test set")
    evaluate.add_argument(
        "--checkpoint", metavar="DIR", required=True, help="a run folder (or its checkpoint.npz)"
    )
    _add_device(evaluate)
    evaluate.add_argument(
        "--dataset", choices=DATASET_NAMES, help="default: the dataset the run trained on"
    )
    evaluate.add_argument("--data-dir")
    evaluate.add_argument("--batch-size", type=_positive_int, default=256)

    over = sub.add_parser("overfit", help="sanity check: memorize K training images")
    _add_device(over)
    over.add_argument("--model", default="simple-cnn", help=MODEL_HELP)
    over.add_argument("--samples", type=_positive_int, default=64, metavar="K")
    over.add_argument("--batch-size", type=_positive_int, default=32)
    over.add_argument("--lr", type=_positive_float, default=0.01)
    over.add_argument("--max-steps", type=_positive_int, default=500)
    over.add_argument("--data-dir")
    over.add_argument("--seed", type=int, default=0)

    check = sub.add_parser("gradcheck", help="check every layer's gradients numerically (float64)")
    _add_device(check, default="cpu")
    check.add_argument("--seed", type=_non_negative_int, default=0)

    bench = sub.add_parser("bench", help="time training steps and inference per device")
    bench.add_argument(
        "--device",
        default="cpu,cuda",
        help="comma-separated devices (default: %(default)s; absent ones are skipped)",
    )
    bench.add_argument("--model", default="simple-cnn", help=MODEL_HELP)
    bench.add_argument(
        "--dataset",
        choices=DATASET_NAMES,
        default="fashion-mnist",
        help="whose image shape and classes the synthetic batches have (default: %(default)s)",
    )
    bench.add_argument("--batch-size", type=_positive_int, default=128)
    bench.add_argument(
        "--steps", type=_positive_int, default=20, help="timed steps per measurement"
    )
    bench.add_argument("--warmup", type=_non_negative_int, default=3, help="untimed steps first")
    bench.add_argument(
        "--peer",
        choices=["none", "torch"],
        default="none",
        help="also time PyTorch on the same devices (needs torch installed; named models only)",
    )
    bench.add_argument("--json", metavar="FILE", help="also write the results as JSON")

    plot = sub.add_parser(
        "plot",
        help="draw a run's loss and accuracy curves (and the confusion matrix after eval) as PNGs",
    )
    plot.add_argument("run_dir", metavar="RUN_DIR")
    plot.add_argument("--out", metavar="DIR", help="where to write the PNGs (default: RUN_DIR)")

    download = sub.add_parser(
        "download",
        help="fetch a dataset's official files (checksummed, resumable) into the cache folder",
    )
    download.add_argument("dataset", choices=DATASET_NAMES)
    download.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="default: $CONVNET_GPU_DATA/<dataset> or ~/.cache/convnet_gpu/<dataset>",
    )

    sub.add_parser("info", help="versions, devices and where each dataset is found")
    return parser


# ---- train ----------------------------------------------------------------------------------
def cmd_train(args) -> int:
    from .checkpoint import read_checkpoint
    from .rundir import RunDir

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
        settings = RunSettings.from_meta(meta["settings"])
        run_dir = RunDir(args.out) if args.out else resumed
        if run_dir.path.resolve() != resumed.path.resolve() and run_dir.holds_run():
            raise UsageError(
                f"{run_dir} already holds another run (its {RunDir.CHECKPOINT} would be "
                f"overwritten); pick another --out or leave it out to continue in {resumed}"
            )
    else:
        settings = RunSettings.from_args(args)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir = RunDir(args.out or f"runs/{_model_stem(settings.model)}-{stamp}")
        if run_dir.holds_run():
            raise UsageError(
                f"{run_dir} already holds a run (its {RunDir.CHECKPOINT} would be overwritten); "
                f"continue it with --resume {run_dir} or pick another --out"
            )
    trainer, dataset = _build_trainer(args, settings, run_dir)
    if args.resume:
        trainer.restore(meta, arrays, resumed.checkpoint)
        if trainer.finished:
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
    from .models import build_model
    from .run import TrainingData, build_net, build_run_optimizer, load_dataset
    from .train import Trainer

    build_model(settings.model)  # a bad model file is reported before the data is loaded
    backend = _backend(args.device)
    run_dir.create()  # fail now (unwritable folder), not after the first epoch
    dataset = load_dataset(settings.dataset, args.data_dir, settings.train_subset)
    net = build_net(settings, backend, dataset)
    optimizer = build_run_optimizer(settings, net)
    data = TrainingData.split(dataset, settings)
    meta = {"device": backend.describe(), "train_images": int(len(dataset.train_y))}
    trainer = Trainer(
        net, optimizer, data, settings, run_dir, _print_flush,
        progress=False if args.no_progress else None, meta=meta,
    )  # fmt: skip
    return trainer, dataset


def _fit(trainer, run_dir) -> dict:
    try:
        return trainer.fit()
    except TrainingInterrupted as exc:
        if exc.saved is None:
            raise
        raise TrainingInterrupted(f"{exc}; continue with --resume {run_dir}", exc.saved) from None


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


# ---- the other commands ---------------------------------------------------------------------
def cmd_eval(args) -> int:
    from .checkpoint import load_into, read_checkpoint
    from .evaluate import evaluate_net, format_report
    from .run import build_net, load_dataset
    from .rundir import RunDir

    run_dir = RunDir.of(args.checkpoint)
    meta, arrays = read_checkpoint(run_dir.checkpoint)
    settings = RunSettings.from_meta(meta["settings"])
    backend = _backend(args.device)
    dataset_name = args.dataset or settings.dataset
    dataset = load_dataset(dataset_name, args.data_dir)
    net = build_net(settings, backend, dataset, batch_size=args.batch_size)
    load_into(meta, arrays, net, path=run_dir.checkpoint)
    report = evaluate_net(net, dataset.test_x, dataset.test_y, dataset.num_classes)
    print(
        f"{settings.model} from {args.checkpoint} on {dataset_name} "
        f"({len(dataset.test_y)} test images), {backend.describe()}"
    )
    print(format_report(report, dataset.classes))
    run_dir.write_eval({**report, "classes": list(dataset.classes), "dataset": dataset_name})
    print(f"wrote {run_dir.eval_report} (convnet-gpu plot {run_dir} draws it)")
    return 0


def cmd_overfit(args) -> int:
    from .optim import SGD
    from .run import build_net, load_dataset
    from .train import overfit

    settings = RunSettings(model=args.model, seed=args.seed)
    batch_size = min(args.batch_size, args.samples)
    backend = _backend(args.device)
    data = load_dataset("fashion-mnist", args.data_dir, train_subset=args.samples)
    net = build_net(settings, backend, data, batch_size=batch_size)
    optimizer = SGD(args.lr, 0.9).setup(net)
    steps, accuracy = overfit(net, optimizer, data.train_x, data.train_y, args.max_steps)
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

    backend = _backend(args.device)
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
    from .data import dataset_info
    from .fileio import write_json_atomic
    from .models import build_model

    devices = [d.strip() for d in args.device.split(",") if d.strip()]
    for device in devices:
        parse_device(device)
    build_model(args.model)  # a bad name or model file: one line, before any timing
    info = dataset_info(args.dataset)
    results = run_benchmarks(
        devices, args.model, args.batch_size, args.steps, args.warmup,
        peer=None if args.peer == "none" else args.peer,
        input_shape=info.input_shape, num_classes=info.num_classes,
    )  # fmt: skip
    print(
        f"model {args.model} on {args.dataset}-shaped batches {info.input_shape}, batch "
        f"{args.batch_size}, {args.steps} timed steps after {args.warmup} warm-up steps, fp32"
    )
    print(format_table(results))
    if args.json:
        write_json_atomic(args.json, results)
        print(f"wrote {args.json}")
    return 0


def cmd_plot(args) -> int:
    from .plot import plot_run

    written = plot_run(args.run_dir, args.out)
    print("wrote " + ", ".join(str(path) for path in written))
    return 0


def cmd_download(args) -> int:
    from .data import fetch_dataset

    progress = _download_progress if sys.stderr.isatty() else None
    folder = fetch_dataset(args.dataset, args.cache_dir, progress=progress)
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
    from .data import DATASETS, DataError

    print(f"convnet-gpu {__version__}, Python {sys.version.split()[0]}, NumPy {numpy.__version__}")
    problem = cuda_problem(0)
    print(f"cuda: {'available' if problem is None else problem}")
    for name, info in DATASETS.items():
        try:
            print(f"{name}: {info.find_dir()}")
        except DataError as exc:
            print(f"{name}: not found ({exc})")
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


def _backend(device: str):
    from .backends import get_backend

    return get_backend(device, announce=_print_flush)


def describe_error(exc: Exception) -> str:
    """The one line a UserError becomes: each `name` the library writes for a setting or an
    option becomes its flag (errors.py); an OSError names its file."""
    if isinstance(exc, OSError):  # an unwritable --out, a full disk, ...
        return f"{exc.strerror or exc}" + (f" ({exc.filename})" if exc.filename else "")
    return re.sub(r"`([a-z_]+)`", lambda name: flag(name.group(1)), str(exc))


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    prog = f"convnet-gpu {args.command}"
    try:
        return COMMANDS[args.command](args)
    except (UsageError, UserError, OSError) as exc:
        print(f"{prog}: error: {describe_error(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except TrainingDiverged as exc:
        print(f"{prog}: stopped: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (TrainingInterrupted, KeyboardInterrupt) as exc:
        print(f"{prog}: {exc or 'interrupted'}", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
