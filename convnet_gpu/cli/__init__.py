"""convnet-gpu: train, evaluate, sanity-check, gradient-check and benchmark convnets.

Commands: train, eval, overfit, plot, gradcheck, bench, download, info.

Every problem a user can fix (a bad flag, missing data, a bad model file or checkpoint, a
missing GPU) is a UserError: one line on stderr and exit status 2. A failed check, a diverged
run or running out of memory (sizes are checked before allocating; this is the last resort)
exits 1, Ctrl-C 130 (from the first import of this package on); no traceback for any of them.
The parser imports no part of the training stack, so `--help` answers at once.
"""

from __future__ import annotations

import sys


def _interrupted_while_starting() -> SystemExit:
    """Ctrl-C before main() stands in its try (while the CLI's modules import): the same one
    line and exit status as later, not a KeyboardInterrupt traceback."""
    print("convnet-gpu: interrupted", file=sys.stderr)
    return SystemExit(130)


try:
    from ..errors import TrainingDiverged, TrainingInterrupted, UserError
    from .commands import (
        cmd_bench,
        cmd_download,
        cmd_eval,
        cmd_gradcheck,
        cmd_info,
        cmd_overfit,
        cmd_plot,
    )
    from .common import UsageError, as_flags
    from .parser import (
        DATASET_NAMES,
        EXIT_FAILED,
        EXIT_INTERRUPTED,
        EXIT_USAGE,
        build_parser,
        flag,
    )
    from .train_command import cmd_train
except KeyboardInterrupt:
    raise _interrupted_while_starting() from None

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
__all__ = ["main", "build_parser", "COMMANDS", "DATASET_NAMES", "UsageError", "flag"]


def describe_error(exc: Exception) -> str:
    """The one line a UserError becomes: each `name` the library writes for a setting or an
    option becomes its flag (errors.py); an OSError names its file."""
    if isinstance(exc, OSError):  # an unwritable --out, a full disk, ...
        return f"{exc.strerror or exc}" + (f" ({exc.filename})" if exc.filename else "")
    return as_flags(str(exc))


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
    except KeyboardInterrupt:
        raise _interrupted_while_starting() from None
    args.argv = argv  # the command as given: bench records it in every row
    prog = f"convnet-gpu {args.command}"
    try:
        return COMMANDS[args.command](args)
    except (UsageError, UserError, OSError) as exc:
        print(f"{prog}: error: {describe_error(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except TrainingDiverged as exc:
        print(f"{prog}: stopped: {as_flags(str(exc))}", file=sys.stderr)
        return EXIT_FAILED
    except (TrainingInterrupted, KeyboardInterrupt) as exc:
        print(f"{prog}: {str(exc) or 'interrupted'}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except MemoryError:  # the last resort: sizes are checked before allocating, but not all
        print(f"{prog}: error: {_out_of_memory_advice(args)}", file=sys.stderr)
        return EXIT_FAILED


def _out_of_memory_advice(args) -> str:
    if getattr(args, "resume", None):
        fix = "a resumed run keeps its settings: start a new run (--out) with a lower --batch-size"
    elif args.command in ("train", "eval", "overfit", "bench"):  # the commands with --batch-size
        fix = "lower --batch-size or use a smaller model"
    else:
        fix = "free some memory and try again"
    return f"out of memory (an allocation failed); {fix}"


if __name__ == "__main__":
    sys.exit(main())
