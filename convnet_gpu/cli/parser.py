"""The convnet-gpu argument parser: one subcommand each, run settings as RunSettings fields.

A run setting's flag is left off the namespace when not given (argparse.SUPPRESS), so its
default lives in RunSettings alone and `--resume` can tell a given flag from a default.
"""

from __future__ import annotations

import argparse
import functools

from .. import __version__
from ..distributed.communicator import ENGINES
from ..machine import machine_cores
from ..settings import (
    CUDA_GRAPH_MODES,
    DEFAULTS,
    FLOAT32_MAX,
    MAX_JITTER,
    OPTIMIZERS,
    PRECISIONS,
    SCHEDULES,
)

EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130
DATASET_NAMES = ("fashion-mnist", "mnist", "cifar-10")  # the data registry's keys (a test checks)
DESCRIPTION = "train, evaluate, sanity-check, gradient-check and benchmark convnets"
MODEL_HELP = "simple-cnn, simple-cnn-bn, mini-resnet, or a model file NAME.toml"


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
_positive_float = _bounded(
    float, lambda v: 0 < v <= FLOAT32_MAX, f"a finite number > 0 (at most {FLOAT32_MAX:.4g})"
)
_non_negative_float = _bounded(
    float, lambda v: 0 <= v <= FLOAT32_MAX, f"a finite number >= 0 (at most {FLOAT32_MAX:.4g})"
)
_jitter_pad = _bounded(int, lambda v: 0 <= v <= MAX_JITTER, f"in 0..{MAX_JITTER}")
_fraction = _bounded(float, lambda v: 0 <= v < 1, "in [0, 1)")
_seed = _bounded(
    int, lambda v: 0 <= v < 2**32, "an integer in 0..4294967295"
)  # counter_rng's uint32


def _positive_int_list(text: str) -> list[int]:
    """An argparse type: comma-separated whole numbers >= 1 ("32,128,512"), each once, in order."""
    values = []
    for item in text.split(","):
        try:
            value = int(item.strip())
        except ValueError:
            value = 0
        if value < 1:
            raise argparse.ArgumentTypeError(
                f"expected whole numbers >= 1 separated by commas, got {text!r}"
            )
        if value not in values:
            values.append(value)
    return values


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


def _add_cuda_graph(parser) -> None:
    parser.add_argument(
        "--cuda-graph",
        choices=CUDA_GRAPH_MODES,
        default="auto",
        help="record a step once as a CUDA graph and replay it (auto: on CUDA, falling back to "
        "eager steps if capture fails; on: fail instead; off: eager) (default: %(default)s)",
    )


def _add_device(parser, default="auto"):
    parser.add_argument(
        "--device",
        default=default,
        help="auto, cpu, cuda or cuda:N (default: %(default)s; auto takes a GPU if CuPy finds one)",
    )


def _add_threads(parser, per_rank: bool = False) -> None:
    cores = machine_cores()
    shared = ", shared among the ranks on this host under --distributed" if per_rank else ""
    parser.add_argument(
        "--threads", type=_positive_int, default=None if per_rank else cores, metavar="N",
        help="CPU threads a step runs on, each on a slice of the batch (default: this machine's "
        f"{cores} cores{shared}; a CUDA device ignores it)",
    )  # fmt: skip


def _add_distributed(parser) -> None:
    parser.add_argument(
        "--distributed", choices=ENGINES, default="none",
        help="train as one rank of an MPI launch (mpiexec -n N convnet-gpu train ...): each rank "
        "takes a block of every --batch-size batch, the gradient is summed over the ranks; mpi: "
        "over MPI (CPUs, or GPUs through the host), nccl: over NCCL, one GPU per rank "
        "(default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--bn", choices=("sync", "local"), default=None,
        help="BatchNorm's batch statistics under --distributed: over the global batch (sync: "
        "what one process computes, three small collectives per BatchNorm layer and step) or "
        "over each rank's rows (local) (default: sync; under --resume, the run's own)",
    )  # fmt: skip


def _add_train(sub) -> None:
    train = sub.add_parser("train", help="train a model and write metrics.jsonl and summary.json")
    _add_device(train)
    _add_threads(train, per_rank=True)
    _add_distributed(train)
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
        type=_jitter_pad, metavar="PAD",
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
    _setting(train, "seed", type=_seed)
    _setting(
        train, "train_subset", "train on the first N training images only",
        type=_positive_int, metavar="N",
    )  # fmt: skip
    _setting(
        train, "precision", "float32 matrix products (tf32: CUDA tensor cores)", choices=PRECISIONS
    )
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
    _add_cuda_graph(train)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="convnet-gpu", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"convnet-gpu {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_train(sub)

    evaluate = sub.add_parser("eval", help="score a checkpoint on the test set")
    evaluate.add_argument(
        "--checkpoint", metavar="DIR", required=True, help="a run folder (or its checkpoint.npz)"
    )
    _add_device(evaluate)
    _add_threads(evaluate)
    evaluate.add_argument(
        "--dataset", choices=DATASET_NAMES, help="default: the dataset the run trained on"
    )
    evaluate.add_argument("--data-dir")
    evaluate.add_argument("--batch-size", type=_positive_int, default=256)
    evaluate.add_argument(
        "--precision", choices=PRECISIONS, help="default: the precision the run trained with"
    )
    _add_cuda_graph(evaluate)

    over = sub.add_parser("overfit", help="sanity check: memorize K training images")
    _add_device(over)
    _add_threads(over)
    over.add_argument("--model", default="simple-cnn", help=MODEL_HELP)
    over.add_argument("--samples", type=_positive_int, default=64, metavar="K")
    over.add_argument("--batch-size", type=_positive_int, default=32)
    over.add_argument("--lr", type=_positive_float, default=0.01)
    over.add_argument("--max-steps", type=_positive_int, default=500)
    over.add_argument("--data-dir")
    over.add_argument("--seed", type=_seed, default=0)

    check = sub.add_parser("gradcheck", help="check every layer's gradients numerically (float64)")
    _add_device(check, default="cpu")
    check.add_argument("--seed", type=_seed, default=0)

    bench = sub.add_parser("bench", help="time training steps and inference per device")
    bench.add_argument(
        "--device",
        default="cpu,cuda",
        help="comma-separated devices (default: %(default)s; absent ones are skipped)",
    )
    cores = machine_cores()
    bench.add_argument(
        "--threads", type=_positive_int_list, default=[cores], metavar="N[,N...]",
        help="CPU threads of both engines' CPU rows; a list (1,2,4) measures each: the thread "
        f"scaling curve (default: this machine's {cores} cores; a CUDA device ignores it)",
    )  # fmt: skip
    bench.add_argument("--model", default="simple-cnn", help=MODEL_HELP)
    bench.add_argument(
        "--dataset",
        choices=DATASET_NAMES,
        default="fashion-mnist",
        help="whose image shape and classes the synthetic batches have (default: %(default)s)",
    )
    bench.add_argument(
        "--batch-size", type=_positive_int_list, default=[128], metavar="B[,B...]",
        help="images per step; a list (32,128,512) measures each: the batch scaling curve "
        "(default: 128)",
    )  # fmt: skip
    bench.add_argument(
        "--steps", type=_positive_int, default=20, help="timed steps per measurement"
    )
    bench.add_argument(
        "--warmup", type=_non_negative_int, default=3,
        help="untimed steps first; the first step (compilation, caches) is reported apart",
    )  # fmt: skip
    bench.add_argument(
        "--peer",
        choices=["none", "torch"],
        default="none",
        help="also time PyTorch on the same devices (needs torch installed; named models only)",
    )
    bench.add_argument(
        "--layers", action="store_true",
        help="also time each layer's forward and backward (on one CPU thread; CUDA: each piece "
        "replayed as a CUDA graph), at every batch size",
    )  # fmt: skip
    bench.add_argument(
        "--json", metavar="FILE",
        help="also write every row as JSON (docs/bench-schema.json); `convnet-gpu plot FILE` "
        "draws it",
    )  # fmt: skip
    bench.add_argument(
        "--precision", choices=PRECISIONS, default="fp32",
        help="float32 matrix products, ours and the peer's (default: %(default)s)",
    )  # fmt: skip
    _add_cuda_graph(bench)

    plot = sub.add_parser(
        "plot",
        help="draw a run's loss and accuracy curves (and the confusion matrix after eval), or a "
        "bench JSON's scaling curves and per-layer bars, as PNGs",
    )
    plot.add_argument(
        "source", metavar="RUN_DIR|BENCH.json",
        help="a training run folder, or a file `convnet-gpu bench --json` wrote",
    )  # fmt: skip
    plot.add_argument(
        "--out",
        metavar="DIR",
        help="where to write the PNGs (default: RUN_DIR, or the file's folder)",
    )

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

    sweep = sub.add_parser(
        "sweep",
        help="train every point of a grid of settings (a TOML file), alone or spread over the "
        "ranks of an MPI launch, and write one table",
    )
    sweep.add_argument(
        "config", metavar="GRID.toml",
        help="a [base] table of shared settings and a [grid] table of each setting's values",
    )  # fmt: skip
    _add_device(sweep)
    _add_threads(sweep, per_rank=True)
    sweep.add_argument("--data-dir")
    sweep.add_argument(
        "--out", metavar="DIR",
        help="the sweep's folder: a run folder per point and sweep.json (default: "
        "runs/<GRID>)",
    )  # fmt: skip
    sweep.add_argument(
        "--distributed", choices=("none", "mpi"), default="none",
        help="spread the points over the ranks of an MPI launch (mpiexec -n K convnet-gpu "
        "sweep ...), each rank training its points alone (default: %(default)s)",
    )  # fmt: skip
    _add_cuda_graph(sweep)

    sub.add_parser("info", help="versions, devices and where each dataset is found")
    return parser


@functools.lru_cache(maxsize=1)
def _train_flags() -> dict:
    """`train`'s flags by setting name (built once: a sweep checks every value of its grid)."""
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    return {action.dest: action for action in train._actions}


def parse_setting(name: str, value):
    """A run setting's value from a file (a sweep's TOML), checked as `train` checks its flag:
    the flag's own type, choices and on/off form. Returns the parsed value; ValueError with the
    flag's complaint otherwise."""
    action = _train_flags()[name]
    if action.nargs == 0:  # --plateau, --flip/--no-flip
        if not isinstance(value, bool):
            raise ValueError(f"{flag(name)}: expected true or false, got {value!r}")
        return value
    wanted = "a string" if action.type is None else "a number"
    if isinstance(value, (bool, list, dict)) or (
        action.type is None and not isinstance(value, str)
    ):
        raise ValueError(f"{flag(name)}: expected {wanted}, got {value!r}")
    try:
        parsed = action.type(str(value)) if action.type is not None else value
    except argparse.ArgumentTypeError as exc:
        raise ValueError(f"{flag(name)}: {exc}") from None
    if action.choices is not None and parsed not in action.choices:
        known = ", ".join(map(str, action.choices))
        raise ValueError(f"{flag(name)}: {value!r} is not one of {known}")
    return parsed
