"""Figures for a training run folder: loss and accuracy per epoch, and the confusion matrix.

`plot_run(run_dir)` reads the folder `convnet-gpu train --out DIR` writes:

* ``metrics.jsonl`` (one JSON object per epoch) gives ``loss.png`` (train/val/test loss),
  ``accuracy.png`` (train/val/test accuracy) and, when the records carry ``lr``, ``lr.png``;
  each figure plots the columns that are present.
* ``eval.json`` (written by ``convnet-gpu eval``), when present, gives ``confusion.png``.
* ``summary.json``, when readable, only names the model and dataset in the titles.

Inputs are checked before matplotlib is imported, so a bad folder is reported the same way
with or without it. matplotlib is an optional extra (``pip install "convnet-gpu[plot]"``); it is
imported lazily, and only through its object-oriented API (``Figure`` + the Agg canvas), so
plotting neither needs a display nor touches pyplot's global state. Each PNG is rendered to
bytes and written atomically.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

from .errors import UserError
from .fileio import write_bytes_atomic
from .rundir import RunDir

METRICS_FILE, EVAL_FILE, SUMMARY_FILE = RunDir.METRICS, RunDir.EVAL, RunDir.SUMMARY

# (metrics column, legend label, colour, line style) for each figure, in legend order.
LOSS_SERIES = (
    ("train_loss", "train", "tab:blue", "-"),
    ("val_loss", "validation", "tab:green", "--"),
    ("test_loss", "test", "tab:orange", "-"),
)
ACCURACY_SERIES = (
    ("train_accuracy", "train", "tab:blue", "-"),
    ("val_accuracy", "validation", "tab:green", "--"),
    ("test_accuracy", "test", "tab:orange", "-"),
)
LR_SERIES = (("lr", "learning rate", "tab:purple", "-"),)

DPI = 100
MAX_ANNOTATED_CLASSES = 30  # above this many classes the cells are too small for their counts


class PlotError(UserError):
    """A run folder that cannot be plotted; the message is one line naming the file."""


class PlotUnavailable(UserError):
    """matplotlib is not installed (the `plot` extra)."""


def plot_run(run_dir, out_dir=None) -> list[Path]:
    """Write the run's figures as PNGs into out_dir (default: run_dir); return their paths.

    loss.png and accuracy.png (each with whichever of its train/val/test columns metrics.jsonl
    has; a figure none of whose columns is present is left out), lr.png when the records carry
    "lr", and confusion.png when run_dir holds eval.json.
    Raises PlotError for a missing folder or an unreadable metrics.jsonl / eval.json, and
    PlotUnavailable when matplotlib is missing.
    """
    run = RunDir(run_dir)
    if not run.path.is_dir():
        what = "not a folder" if run.path.exists() else "no such run folder"
        raise PlotError(f"{run}: {what} (expected a training run folder holding {METRICS_FILE})")
    records = read_metrics(run.metrics)
    report = read_eval(run.eval_report) if run.eval_report.is_file() else None
    figures = [
        ("loss.png", LOSS_SERIES, "loss", "Loss", False),
        ("accuracy.png", ACCURACY_SERIES, "accuracy", "Accuracy", True),
        ("lr.png", LR_SERIES, "learning rate", "Learning rate", False),
    ]
    figures = [fig for fig in figures if any(_has_column(records, series[0]) for series in fig[1])]
    if not any(name in ("loss.png", "accuracy.png") for name, *_ in figures):
        names = ", ".join(series[0] for series in LOSS_SERIES + ACCURACY_SERIES)
        raise PlotError(f"{run.metrics}: no loss or accuracy columns ({names})")

    Figure, FigureCanvasAgg = matplotlib_canvas()
    subtitle = _run_title(run.path)
    out = RunDir(out_dir) if out_dir is not None else run
    written = []
    for name, columns, ylabel, title, percent in figures:
        fig = _epoch_figure(
            Figure, records, columns, ylabel, f"{title} per epoch{subtitle}", percent=percent
        )
        written.append(save_png(FigureCanvasAgg, fig, out.plot(name)))
    if report is not None:
        fig = _confusion_figure(Figure, report, subtitle)
        written.append(save_png(FigureCanvasAgg, fig, out.plot("confusion.png")))
    return written


# ---- reading ------------------------------------------------------------------------------------
def read_metrics(path) -> list[dict]:
    """The per-epoch records of a metrics.jsonl; PlotError (naming the file) when unusable."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlotError(f"{path}: not found (is {path.parent} a training run folder?)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PlotError(f"{path}: cannot read: {_reason(exc)}") from None
    records = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise PlotError(f"{path}: line {line_number}: not JSON lines ({exc.msg})") from None
        if not isinstance(record, dict):
            raise PlotError(
                f"{path}: line {line_number}: expected a JSON object, got {type(record).__name__}"
            )
        epoch = record.get("epoch", len(records) + 1)
        if not _is_number(epoch):
            raise PlotError(f"{path}: line {line_number}: epoch {epoch!r} is not a number")
        records.append({**record, "epoch": epoch})
    if not records:
        raise PlotError(f"{path}: empty, no epochs recorded")
    return records


def read_eval(path) -> dict:
    """eval.json's report, checked: a square count matrix and one class name per row."""
    path = Path(path)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PlotError(f"{path}: not found") from None
    except json.JSONDecodeError as exc:
        raise PlotError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PlotError(f"{path}: cannot read: {_reason(exc)}") from None
    if not isinstance(report, dict):
        raise PlotError(f"{path}: expected a JSON object, got {type(report).__name__}")
    confusion = report.get("confusion")
    if not (
        isinstance(confusion, list)
        and confusion
        and all(isinstance(row, list) and len(row) == len(confusion) for row in confusion)
        and all(_is_number(count) for row in confusion for count in row)
    ):
        raise PlotError(f'{path}: "confusion" is not a square matrix of counts')
    n = len(confusion)
    classes = report.get("classes")
    if classes is None:
        classes = [str(i) for i in range(n)]
    elif not isinstance(classes, list) or len(classes) != n:
        raise PlotError(f'{path}: "classes" should list {n} names, one per confusion row')
    accuracy = report.get("accuracy")
    return {
        "confusion": confusion,
        "classes": [str(name) for name in classes],
        "accuracy": accuracy if _is_number(accuracy) else None,
    }


def _run_title(run_dir: Path) -> str:
    """A second title line: '<model> on <dataset> (<folder>)' from summary.json, else the folder."""
    try:
        summary = json.loads((run_dir / SUMMARY_FILE).read_text(encoding="utf-8"))
        return f"\n{summary['model']} on {summary['dataset']} ({run_dir.resolve().name})"
    except (OSError, ValueError, KeyError, TypeError):  # titles only: any problem drops the detail
        return f"\n{run_dir.resolve().name}"


# ---- drawing ------------------------------------------------------------------------------------
def matplotlib_canvas():
    """(Figure, FigureCanvasAgg) for figures drawn without pyplot (here and in bench_plot.py),
    or PlotUnavailable when matplotlib cannot be imported."""
    try:
        import matplotlib  # noqa: F401  (first, so a blocked or missing parent package fails here)
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotUnavailable(
            'plotting needs matplotlib: pip install "convnet-gpu[plot]"'
        ) from None
    return Figure, FigureCanvasAgg


def _epoch_figure(Figure, records, columns, ylabel: str, title: str, percent: bool):
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    fig = Figure(figsize=(7.5, 4.8), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    epochs = [r["epoch"] for r in records]
    single = len(set(epochs)) == 1
    for column, label, color, style in columns:
        if not _has_column(records, column):
            continue
        values = [_float(r.get(column)) for r in records]
        last = next(v for v in reversed(values) if math.isfinite(v))
        final = f"{last:.1%}" if percent else f"{last:.4g}"  # in the legend: never overlaps a line
        ax.plot(
            epochs,
            values,
            linestyle=style,
            color=color,
            marker="o",
            markersize=7 if single else 4,
            label=f"{label} (last {final})",
        )
    ax.set_title(title)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    if single:  # one point: a symmetric window around it, one tick (no 0.995, 1.005, ...)
        ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
        ax.set_xticks([epochs[0]])
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if percent:
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best")
    return fig


def _confusion_figure(Figure, report: dict, subtitle: str):
    import numpy as np

    counts = np.asarray(report["confusion"], dtype=float)
    classes = report["classes"]
    n = len(classes)
    side = min(max(5.5, 0.65 * n + 3.0), 20.0)
    fig = Figure(figsize=(side + 1.0, side), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(counts, cmap="Blues", interpolation="nearest", vmin=0)
    colorbar = fig.colorbar(image, ax=ax, shrink=0.8)
    colorbar.set_label("images")
    ticks = range(n)
    ax.set_xticks(
        ticks,
        labels=classes,
        rotation=45 if n > 3 else 0,
        ha="right" if n > 3 else "center",
        rotation_mode="anchor",
    )
    ax.set_yticks(ticks, labels=classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if n <= MAX_ANNOTATED_CLASSES:
        peak = counts.max() if counts.size else 0.0
        fontsize = 9 if n <= 12 else 7
        for i in range(n):
            for j in range(n):
                value = counts[i, j]
                text = f"{int(value)}" if float(value).is_integer() else f"{value:.3g}"
                dark = peak > 0 and value > 0.55 * peak
                ax.text(
                    j,
                    i,
                    text,
                    ha="center",
                    va="center",
                    fontsize=fontsize,
                    color="white" if dark else "black",
                )
    accuracy = report["accuracy"]
    headline = "Confusion matrix" + (f" (accuracy {accuracy:.2%})" if accuracy is not None else "")
    ax.set_title(headline + subtitle)
    return fig


def save_png(FigureCanvasAgg, fig, path: Path) -> Path:
    """Write fig as a PNG at path, atomically (run figures and bench_plot.py's alike)."""
    buffer = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buffer)
    write_bytes_atomic(path, buffer.getvalue())
    return path


# ---- helpers ------------------------------------------------------------------------------------
def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _float(value) -> float:
    """A plottable value: numbers as floats; missing, null, infinite or non-numbers as NaN."""
    if not _is_number(value) or not math.isfinite(value):
        return math.nan
    return float(value)


def _has_column(records, column: str) -> bool:
    return any(_is_number(r.get(column)) and math.isfinite(r[column]) for r in records)


def _reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc)
