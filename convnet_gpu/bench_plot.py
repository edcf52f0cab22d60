"""Figures of a `convnet-gpu bench --json` file: images/s against batch size and against CPU
threads, per engine and device, and the per-layer bars of `--layers`.

`plot_bench(path)` writes next to the file (or into out_dir), named after its stem:

* ``STEM-batch.png``: training and inference images/s against batch size, one line per engine,
  device and thread count (a colour per device and thread count; ours solid, PyTorch dashed);
  drawn where some line has two batch sizes or more.
* ``STEM-threads.png``: images/s against CPU threads, one line per engine and batch size (a
  colour per batch size; ours solid, PyTorch dashed), each
  with its linear scaling from its fewest threads dotted (what a path that used every core
  fully would reach); drawn where some line has two thread counts or more.
* ``STEM-layers-DEVICE-bBATCH.png``: each layer's forward and backward milliseconds as stacked
  bars, then the loss and the optimizer's update, one figure per `--layers` profile.

Every title names the model, the CPU and its cores (and the GPU), and the commit. matplotlib is
the `plot` extra, imported as plot.py does (no pyplot, no display).
"""

from __future__ import annotations

import json
from pathlib import Path

from .plot import DPI, PlotError, _matplotlib, _save

PHASE_COLOURS = {"forward": "tab:blue", "backward": "tab:orange", "update": "tab:green"}
ENGINE_NAMES = {"convnet_gpu": "convnet_gpu", "torch": "PyTorch"}
ENGINE_STYLES = {
    "convnet_gpu": {"linestyle": "-", "marker": "o"},
    "torch": {"linestyle": "--", "marker": "s"},
}
PANELS = (("train_images_per_second", "training step"), ("infer_images_per_second", "inference"))


def plot_bench(path, out_dir=None) -> list[Path]:
    """Write the file's figures as PNGs; return their paths. PlotError when the file is not a
    bench file or holds nothing to draw (one batch size, one thread count, no --layers)."""
    path = Path(path)
    rows = read_bench(path)
    steps = [r for r in rows if r.get("kind", "step") == "step" and "skipped" not in r]
    layers = [r for r in rows if r.get("kind") == "layer"]
    out = Path(out_dir) if out_dir is not None else path.parent
    figures = []
    if _longest_series(steps, _batch_key, "batch_size") >= 2:
        figures.append(("batch", lambda Figure: _scaling_figure(Figure, steps, "batch_size")))
    if _longest_series(steps, _threads_key, "threads") >= 2:
        figures.append(("threads", lambda Figure: _scaling_figure(Figure, steps, "threads")))
    for (device, batch), pieces in _profiles(layers).items():
        figures.append((f"layers-{_slug(device)}-b{batch}",
                        lambda Figure, pieces=pieces: _layer_figure(Figure, pieces)))  # fmt: skip
    if not figures:
        raise PlotError(
            f"{path}: nothing to draw: one batch size, one thread count and no --layers rows "
            "(bench --batch-size 32,128,512 --threads 1,2 --layers draws curves and bars)"
        )
    Figure, FigureCanvasAgg = _matplotlib()
    out.mkdir(parents=True, exist_ok=True)
    return [
        _save(FigureCanvasAgg, draw(Figure), out / f"{path.stem}-{name}.png")
        for name, draw in figures
    ]


# ---- reading ------------------------------------------------------------------------------------
def read_bench(path: Path) -> list[dict]:
    """The rows of a bench JSON file; PlotError (naming the file) when it is not one."""
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise PlotError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PlotError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    if not (isinstance(rows, list) and rows and all(_is_bench_row(r) for r in rows)):
        raise PlotError(
            f"{path}: not a `convnet-gpu bench --json` file (expected an array of result rows "
            "with engine, device and batch_size), nor a run folder"
        )
    return rows


def _is_bench_row(row) -> bool:
    return isinstance(row, dict) and {"engine", "device", "batch_size"} <= row.keys()


# ---- grouping -----------------------------------------------------------------------------------
def _batch_key(row: dict) -> tuple:
    """A line of the batch figure: one engine on one device at one thread count."""
    return (
        row.get("model", ""),
        row["engine"],
        row.get("requested", row["device"]),
        row.get("threads"),
    )


def _threads_key(row: dict) -> tuple:
    """A line of the thread figure: one engine at one batch size, on the CPU."""
    return row.get("model", ""), row["engine"], row.get("requested", "cpu"), row["batch_size"]


def _series(rows: list[dict], key, x: str) -> dict:
    """key -> [(x, row)] sorted by x; the thread figure keeps CPU rows with a thread count."""
    lines: dict = {}
    for row in rows:
        if x == "threads" and (row.get("threads") is None or row.get("requested", "cpu") != "cpu"):
            continue
        lines.setdefault(key(row), []).append((row[x], row))
    return {k: sorted(points, key=lambda point: point[0]) for k, points in lines.items()}


def _longest_series(rows, key, x: str) -> int:
    return max((len({p[0] for p in points}) for points in _series(rows, key, x).values()),
               default=0)  # fmt: skip


def _profiles(layer_rows: list[dict]) -> dict:
    """(device asked for, batch size) -> its --layers rows in step order."""
    profiles: dict = {}
    for row in layer_rows:
        profiles.setdefault((row.get("requested", row["device"]), row["batch_size"]), []).append(
            row
        )
    return {k: sorted(v, key=lambda r: r["position"]) for k, v in profiles.items()}


# ---- drawing ------------------------------------------------------------------------------------
def _scaling_figure(Figure, rows: list[dict], x: str):
    from matplotlib.ticker import FixedLocator, ScalarFormatter

    key = _batch_key if x == "batch_size" else _threads_key
    lines = _series(rows, key, x)
    models = {k[0] for k in lines}
    fig = Figure(figsize=(12, 5), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, 2)
    # One colour per configuration, one line style per engine: ours solid, PyTorch dashed.
    configs = list(dict.fromkeys(_config(line) for line in lines))
    colours = dict(zip(configs, _palette(len(configs))))
    xs = sorted({point[0] for points in lines.values() for point in points})
    for ax, (column, panel) in zip(axes, PANELS):
        for line, points in lines.items():
            drawn = [(value, row[column]) for value, row in points if column in row]
            if not drawn:
                continue
            label = _line_label(line, x, len(models) > 1)
            colour = colours[_config(line)]
            style = ENGINE_STYLES.get(line[1], ENGINE_STYLES["convnet_gpu"])
            ax.plot(*zip(*drawn), color=colour, label=label, **style)
            if x == "threads" and len(drawn) > 1:  # linear scaling from the fewest threads
                (t0, v0), last = drawn[0], drawn[-1][0]
                ax.plot([t0, last], [v0, v0 * last / t0], linestyle=":", linewidth=1,
                        color=colour)  # fmt: skip
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_locator(FixedLocator(xs))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_locator(FixedLocator([]))
        ax.set_xlabel("batch size" if x == "batch_size" else "CPU threads")
        ax.set_ylabel("images / s")
        ax.set_ylim(bottom=0)
        ax.set_title(panel)
        ax.grid(True, alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        if x == "threads":
            from matplotlib.lines import Line2D

            handles.append(Line2D([], [], linestyle=":", color="grey"))
            labels.append("linear scaling from the fewest threads")
        ax.legend(handles, labels, loc="best", fontsize=8)
    what = "batch size" if x == "batch_size" else "CPU threads"
    fig.suptitle(f"{_model_title(models)}: images/s against {what}\n{_machine_title(rows)}")
    return fig


def _layer_figure(Figure, pieces: list[dict]):
    names, totals = [], {}
    for row in pieces:  # one bar per layer (forward + backward), then the loss and the update
        name = (
            row["layer"] if row["layer_index"] is None else f"{row['layer_index']} {row['layer']}"
        )
        if name not in totals:
            names.append(name)
            totals[name] = dict.fromkeys(PHASE_COLOURS, 0.0)
        totals[name][row["phase"]] += row["ms"]
    height = max(4.0, 0.32 * len(names) + 1.8)
    fig = Figure(figsize=(10, height), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    positions = range(len(names))
    left = [0.0] * len(names)
    for phase, colour in PHASE_COLOURS.items():
        widths = [totals[name][phase] for name in names]
        if any(widths):
            ax.barh(positions, widths, left=left, color=colour, label=phase)
            left = [a + b for a, b in zip(left, widths)]
    for position, width in zip(positions, left):  # each bar's milliseconds at its end
        ax.annotate(f"{width:.2f}", (width, position), xytext=(3, 0), textcoords="offset points",
                    va="center", fontsize=7)  # fmt: skip
    ax.set_xlim(0, max(left, default=1.0) * 1.1 or 1.0)
    ax.set_yticks(list(positions), labels=[_short(name) for name in names], fontsize=8)
    ax.invert_yaxis()  # the first layer on top, as a step runs
    ax.set_xlabel("milliseconds per call")
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(loc="lower right")
    first = pieces[0]
    total = sum(row["ms"] for row in pieces)
    fig.suptitle(
        f"{first.get('model', '')}: per layer, batch {first['batch_size']}, {total:.1f} ms a step "
        f"in all\n{first['device']}\n{_machine_title(pieces)}",
        fontsize=10,
    )
    return fig


# ---- labels -------------------------------------------------------------------------------------
def _config(line: tuple) -> tuple:
    """A line's key without its engine: what ours and PyTorch's lines of one colour share."""
    model, _, device, last = line
    return model, device, last


def _line_label(line: tuple, x: str, with_model: bool) -> str:
    model, engine, device, last = line
    varying = f"{last} thread{'s' if last != 1 else ''}" if x == "batch_size" else f"batch {last}"
    if x == "batch_size" and last is None:
        varying = ""
    parts = [ENGINE_NAMES.get(engine, engine), device, varying] + ([model] if with_model else [])
    return ", ".join(part for part in parts if part)


def _model_title(models: set) -> str:
    return ", ".join(sorted(m for m in models if m)) or "bench"


def _machine_title(rows: list[dict]) -> str:
    """The CPU, its cores, the GPU where one was used, and the commit of the file's first row."""
    row = rows[0]
    machine, commit = row.get("machine") or {}, row.get("commit") or {}
    parts = [f"{machine.get('cpu', 'unknown CPU')}, {machine.get('cores', '?')} cores"]
    if machine.get("gpu"):
        parts.append(machine["gpu"])
    commit_id = commit.get("id")
    if commit_id:
        parts.append(f"commit {commit_id[:7]}" + (" (+ changes)" if commit.get("dirty") else ""))
    if row.get("measured_at"):
        parts.append(row["measured_at"][:10])
    if row.get("load_average"):  # how busy a shared machine was
        parts.append(f"load average {row['load_average'][0]:.2f}")
    return ", ".join(parts)


def _palette(count: int) -> list:
    names = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown",
             "tab:pink", "tab:gray", "tab:olive", "tab:cyan"]  # fmt: skip
    return [names[i % len(names)] for i in range(count)]


def _short(name: str, width: int = 44) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-")
