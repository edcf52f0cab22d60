"""The commands besides train: eval, overfit, gradcheck, bench, plot, download, info."""

from __future__ import annotations

import shlex
import sys

from .. import __version__
from ..settings import RunSettings
from .common import UsageError, as_flags, backend_for
from .parser import EXIT_FAILED


def cmd_eval(args) -> int:
    from ..checkpoint import load_into, read_checkpoint
    from ..checkpoint_schema import settings_of
    from ..evaluate import evaluate_net, format_report
    from ..numerics import quiet_float_errors
    from ..run import build_net, load_dataset
    from ..rundir import RunDir

    run_dir = RunDir.of(args.checkpoint)
    meta, arrays = read_checkpoint(run_dir.checkpoint)
    settings = settings_of(meta, run_dir.checkpoint)
    backend = backend_for(args.device, args.precision or settings.precision, args.threads)
    dataset_name = args.dataset or settings.dataset
    dataset = load_dataset(dataset_name, args.data_dir)
    net = build_net(settings, backend, dataset, batch_size=args.batch_size)
    load_into(meta, arrays, net, path=run_dir.checkpoint)
    with quiet_float_errors():  # weights that overflow: the report shows the loss as nan
        report = evaluate_net(
            net, dataset.test_x, dataset.test_y, dataset.num_classes, cuda_graph=args.cuda_graph
        )
    print(
        f"{settings.model} from {args.checkpoint} on {dataset_name} "
        f"({len(dataset.test_y)} test images), {backend.describe()}"
    )
    print(format_report(report, dataset.classes))
    run_dir.write_eval({**report, "classes": list(dataset.classes), "dataset": dataset_name})
    print(f"wrote {run_dir.eval_report} (convnet-gpu plot {run_dir} draws it)")
    return 0


def cmd_overfit(args) -> int:
    from ..numerics import quiet_float_errors
    from ..optim import SGD
    from ..run import build_net, load_dataset
    from ..train import overfit

    settings = RunSettings(model=args.model, seed=args.seed)
    batch_size = min(args.batch_size, args.samples)
    backend = backend_for(args.device, threads=args.threads)
    data = load_dataset("fashion-mnist", args.data_dir, train_subset=args.samples)
    net = build_net(settings, backend, data, batch_size=batch_size)
    optimizer = SGD(args.lr, 0.9).setup(net)
    with quiet_float_errors():  # a diverging --lr: the FAILED line says so, not NumPy's warnings
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
    from ..gradcheck_cases import check_all

    backend = backend_for(args.device)
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
    from ..backends import parse_device
    from ..bench import format_table, run_benchmarks
    from ..data import dataset_info
    from ..fileio import write_json_atomic
    from ..models import build_model

    devices = [d.strip() for d in args.device.split(",") if d.strip()]
    if not devices:
        raise UsageError(f"`device`: no device in {args.device!r}; give cpu, cuda or both")
    for device in devices:
        parse_device(device)
    build_model(args.model)  # a bad name or model file: one line, before any timing
    info = dataset_info(args.dataset)
    rows = run_benchmarks(
        devices, args.model, args.batch_size, args.steps, args.warmup,
        peer=None if args.peer == "none" else args.peer,
        input_shape=info.input_shape, num_classes=info.num_classes, precision=args.precision,
        cuda_graph=args.cuda_graph, thread_counts=args.threads,
    )  # fmt: skip
    sizes = ", ".join(map(str, args.batch_size))
    print(
        f"model {args.model} on {args.dataset}-shaped batches {info.input_shape}, batch {sizes}, "
        f"{args.steps} timed steps after {args.warmup} warm-up steps (the first timed apart: "
        f"1st ms), {args.precision}; {_machine_line(rows)}"
    )
    print(as_flags(format_table(rows)))
    if args.layers:
        rows += _layer_rows(args, devices, rows, info)
    command = "convnet-gpu " + shlex.join(getattr(args, "argv", ["bench"]))
    rows = [{**row, "command": command} for row in rows]
    if args.json:
        write_json_atomic(args.json, rows)
        print(f"wrote {args.json} (convnet-gpu plot {args.json} draws it)")
    return 0


def _machine_line(rows: list[dict]) -> str:
    machine, commit = rows[0]["machine"], rows[0]["commit"]
    changes = " + uncommitted changes" if commit["dirty"] else ""
    at = (commit["id"] or "no git checkout")[:10] + changes
    load = rows[0]["load_average"]
    busy = f", load average {load[0]:.2f}" if load else ""
    return f"{machine['cpu']}, {machine['cores']} cores, commit {at}{busy}"


def _layer_rows(args, devices, step_rows, info) -> list[dict]:
    """Print the per-layer table of each device that ran, at each batch size; return its rows."""
    from ..backends import parse_device
    from ..profile import format_layer_table, profile_layers

    ran = [
        device for device in devices
        if any(r["requested"] == device and r["engine"] == "convnet_gpu" and "skipped" not in r
               for r in step_rows)
    ]  # fmt: skip
    origin = {
        key: step_rows[0][key] for key in ("machine", "commit", "measured_at", "load_average")
    }
    rows = []
    for device in ran:
        for batch_size in args.batch_size:
            described, pieces = profile_layers(
                device, args.model, batch_size, info.input_shape, info.num_classes,
                precision=args.precision,
            )  # fmt: skip
            print(f"\nper layer: {args.model}, batch {batch_size}, {described}")
            print(format_layer_table(pieces, described, batch_size))
            threads = 1 if parse_device(device)[0] == "cpu" else None
            rows += [
                {"kind": "layer", "engine": "convnet_gpu", "device": described,
                 "requested": device, "model": args.model, "batch_size": batch_size,
                 "threads": threads, "precision": args.precision, **piece, **origin}
                for piece in pieces
            ]  # fmt: skip
    return rows


def cmd_plot(args) -> int:
    from pathlib import Path

    from ..plot import plot_run

    if Path(args.source).is_file():
        from ..bench_plot import plot_bench

        written = plot_bench(args.source, args.out)
    else:
        written = plot_run(args.source, args.out)
    print("wrote " + ", ".join(str(path) for path in written))
    return 0


def cmd_download(args) -> int:
    from ..data import fetch_dataset

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

    from ..backends import cuda_problem
    from ..data import DATASETS, DataError

    print(f"convnet-gpu {__version__}, Python {sys.version.split()[0]}, NumPy {numpy.__version__}")
    problem = cuda_problem(0)
    print(f"cuda: {'available' if problem is None else problem}")
    for name, info in DATASETS.items():
        try:
            print(f"{name}: {info.find_dir()}")
        except DataError as exc:
            print(f"{name}: not found ({exc})")
    return 0
