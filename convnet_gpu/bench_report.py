"""docs/benchmarks.md's generated section: tables rendered from benchmark JSON files, so the
figures in the docs cannot drift from what was measured.

    python scripts/bench_report.py FILE.json [FILE.json ...] [--doc docs/benchmarks.md]

Each file is either what `convnet-gpu bench --json` writes (bench_schema.py) or what
`pytest tests/benchmarks --benchmark-only --benchmark-json=FILE` writes. Each becomes a
subsection naming the command, the commit, the machine and the date, with its table: per
engine, device, threads and batch the steady-state img/s, ours against PyTorch, the first step
and peak memory; the per-layer times of `--layers`; or, for pytest-benchmark, each group's
median time, ours against PyTorch. `replace_section` writes the section between the markers
BEGIN and END (appended at the end the first time), leaving the rest of the document alone.
"""

from __future__ import annotations

BEGIN = "<!-- bench-report:begin: scripts/bench_report.py writes what follows; edit there -->"
END = "<!-- bench-report:end -->"
HEADING = "## Generated from benchmark JSON (scripts/bench_report.py)"
ENGINES = ("convnet_gpu", "torch")


def render(files: list[tuple[str, object]]) -> str:
    """The whole generated section for (file name, parsed JSON) pairs, in the order given."""
    parts = [
        HEADING,
        "Ratios are ours / PyTorch's images per second (or PyTorch's time / ours) measured in "
        "the same run; on a shared machine compare ratios, not absolute figures, across runs.",
    ]
    for name, document in files:
        if isinstance(document, dict) and "benchmarks" in document:
            parts.append(render_pytest_benchmark(name, document))
        else:
            parts.append(render_bench(name, document))
    return "\n\n".join(parts) + "\n"


def replace_section(doc: str, section: str) -> str:
    """doc with `section` between BEGIN and END (appended, with the markers, if absent)."""
    block = f"{BEGIN}\n{section.rstrip()}\n{END}"
    if BEGIN in doc and END in doc:
        before, _, rest = doc.partition(BEGIN)
        _, _, after = rest.partition(END)
        return before + block + after
    return doc.rstrip("\n") + "\n\n" + block + "\n"


# ---- convnet-gpu bench --json ---------------------------------------------------------------
def render_bench(name: str, rows: list[dict]) -> str:
    first = rows[0]
    models = sorted({r["model"] for r in rows})
    lines = [
        f"### {', '.join(models)}: `{first.get('command', 'convnet-gpu bench')}`",
        "",
        _provenance_line(first, name),
    ]
    steps = [r for r in rows if r.get("kind", "step") == "step"]
    if steps:
        lines += ["", *_step_table(steps)]
    skipped = sorted({f"{r['engine']} on {r['requested']}: {r['skipped']}" for r in steps
                      if "skipped" in r})  # fmt: skip
    if skipped:
        lines += ["", "Skipped: " + "; ".join(skipped) + "."]
    layers = [r for r in rows if r.get("kind") == "layer"]
    for (device, batch), pieces in _by_profile(layers).items():
        lines += ["", *_layer_table(device, batch, pieces)]
    return "\n".join(lines)


def _provenance_line(row: dict, name: str) -> str:
    machine, commit = row.get("machine", {}), row.get("commit", {})
    libraries = machine.get("libraries", {})
    versions = ", ".join(f"{lib} {v}" for lib, v in libraries.items() if v and lib != "cupy")
    if machine.get("gpu") and libraries.get("cupy"):
        versions += f", cupy {libraries['cupy']}"
    at = (commit.get("id") or "no git checkout")[:7]
    if commit.get("dirty"):
        at += " plus uncommitted changes"
    gpu = f", {machine['gpu']}" if machine.get("gpu") else ""
    load = row.get("load_average")
    busy = f", load average {load[0]:.2f} at the start" if load else ""
    return (
        f"Measured {row.get('measured_at', '?')[:16].replace('T', ' ')} UTC at commit {at} on "
        f"{machine.get('cpu', '?')} ({machine.get('cores', '?')} cores{gpu}{busy}); Python "
        f"{machine.get('python', '?')}, {versions}. From `{name}`; "
        f"{row.get('steps', '?')} timed steps after {row.get('warmup', '?')} warm-up steps."
    )


def _step_table(steps: list[dict]) -> list[str]:
    header = (
        "| device | threads | batch | train img/s: ours | PyTorch | ratio | infer img/s: ours "
        "| PyTorch | ratio | first train step ms: ours / PyTorch | peak MiB: ours / PyTorch |"
    )
    lines = [header, "|" + "---|" * 11]
    for key, group in _by_config(steps).items():
        ours, peer = group.get("convnet_gpu"), group.get("torch")
        if ours is None:
            continue
        device, threads, batch = key
        lines.append(
            f"| {device} | {'-' if threads is None else threads} | {batch} | "
            f"{_num(ours, 'train_images_per_second')} | {_num(peer, 'train_images_per_second')} | "
            f"{_ratio(ours, 'train_vs_torch')} | {_num(ours, 'infer_images_per_second')} | "
            f"{_num(peer, 'infer_images_per_second')} | {_ratio(ours, 'infer_vs_torch')} | "
            f"{_num(ours, 'first_train_step_ms')} / {_num(peer, 'first_train_step_ms')} | "
            f"{_mib(ours)} / {_mib(peer)} |"
        )
    return lines


def _by_config(steps: list[dict]) -> dict:
    """(device asked for, threads, batch) -> engine -> its row, skipped rows left out."""
    configs: dict = {}
    for row in steps:
        if "skipped" not in row:
            key = (row["requested"], row.get("threads"), row["batch_size"])
            configs.setdefault(key, {})[row["engine"]] = row
    return configs


def _by_profile(layers: list[dict]) -> dict:
    profiles: dict = {}
    for row in layers:
        profiles.setdefault((row["device"], row["batch_size"]), []).append(row)
    return profiles


def _layer_table(device: str, batch: int, pieces: list[dict]) -> list[str]:
    names, times = [], {}
    for row in sorted(pieces, key=lambda r: r["position"]):
        label = (
            row["layer"] if row["layer_index"] is None else f"{row['layer_index']} {row['layer']}"
        )
        if label not in times:
            names.append(label)
            times[label] = {}
        times[label][row["phase"]] = times[label].get(row["phase"], 0.0) + row["ms"]
    total = sum(row["ms"] for row in pieces)
    lines = [
        f"Per layer (`--layers`), batch {batch}, {device}: {total:.1f} ms a step in all.",
        "",
        "| layer | forward ms | backward ms | update ms |",
        "|---|---|---|---|",
    ]
    for label in names:
        cells = [f"{times[label][p]:.2f}" if p in times[label] else ""
                 for p in ("forward", "backward", "update")]  # fmt: skip
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def _num(row, key: str) -> str:
    if row is None or key not in row:
        return "-"
    value = row[key]
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _ratio(row, key: str) -> str:
    return f"**{row[key]:.2f}x**" if row is not None and key in row else "-"


def _mib(row) -> str:
    if row is None or row.get("peak_memory_bytes") is None:
        return "-"
    return f"{row['peak_memory_bytes'] / 2**20:.0f}"


# ---- pytest-benchmark --benchmark-json ------------------------------------------------------
def render_pytest_benchmark(name: str, document: dict) -> str:
    info = document.get("machine_info", {})
    ours = info.get("convnet_gpu", {})
    commit = ours.get("commit") or {}
    machine = ours.get("machine") or {"cpu": info.get("cpu", {}).get("brand_raw", "?")}
    row = {"machine": machine, "commit": commit, "measured_at": document.get("datetime", "?")}
    if ours.get("load_average"):  # pytest-benchmark writes its JSON after the run
        row["load_average"] = ours["load_average"]
    lines = [
        "### pytest-benchmark: `pytest tests/benchmarks --benchmark-only --benchmark-json=FILE`",
        "",
        _provenance_line(row, name).split(" From ")[0].replace("at the start", "at the end")
        + f" From `{name}`.",
        "",
        "Median time of one call (ms), each group's rows side by side; the ratio is PyTorch's "
        "time over ours (above 1: ours is faster).",
        "",
        "| group | ours ms | PyTorch ms | ratio |",
        "|---|---|---|---|",
    ]
    groups: dict = {}
    for bench in document["benchmarks"]:
        engine = bench.get("extra_info", {}).get("engine")
        if engine in ENGINES:
            groups.setdefault(bench["group"], {})[engine] = bench["stats"]["median"] * 1e3
    for group, medians in groups.items():
        ours_ms, theirs_ms = medians.get("convnet_gpu"), medians.get("torch")
        ratio = f"{theirs_ms / ours_ms:.2f}x" if ours_ms and theirs_ms else "-"
        cell = group.replace("|", "\\|")  # the groups' own separators, not table cells
        lines.append(f"| {cell} | {_ms(ours_ms)} | {_ms(theirs_ms)} | {ratio} |")
    return "\n".join(lines)


def _ms(value) -> str:
    return "-" if value is None else f"{value:.3f}"
