"""The printed table of `convnet-gpu bench`: the step rows side by side."""

from __future__ import annotations

from .memory import mib


def format_table(rows: list[dict]) -> str:
    """The step rows side by side: steady-state figures, the first step apart, peak memory."""
    header = (
        f"{'engine':<12} {'device':<40} {'thr':>3} {'batch':>5} {'train img/s':>11} "
        f"{'ms/step':>8} {'1st ms':>8} {'infer img/s':>11} {'ms/step':>8} {'1st ms':>8} "
        f"{'peak MiB':>8}"
    )
    lines = [header, "-" * len(header)]
    for r in (r for r in rows if r.get("kind", "step") == "step"):
        threads = _threads(r)
        if "skipped" in r:
            lines.append(
                f"{r['engine']:<12} {r['device']:<40} {threads:>3} skipped: {r['skipped']}"
            )
            continue
        train = (
            f"{r['train_images_per_second']:>11.0f} {r['train_ms_per_step']:>8.2f} "
            f"{r['first_train_step_ms']:>8.1f}"
            if "train_images_per_second" in r
            else f"{'-':>11} {'-':>8} {'-':>8}"
        )
        lines.append(
            f"{r['engine']:<12} {r['device'][:40]:<40} {threads:>3} {r['batch_size']:>5} "
            f"{train} {r['infer_images_per_second']:>11.0f} {r['infer_ms_per_step']:>8.2f} "
            f"{r['first_infer_step_ms']:>8.1f} {mib(r.get('peak_memory_bytes')):>8}"
        )
        if "infer_vs_torch" in r:
            train_ratio = f"{r['train_vs_torch']:>10.2f}x" if "train_vs_torch" in r else ""
            lines.append(
                f"{'':<12} {'  vs PyTorch, same device and threads':<40} {'':>3} {'':>5} "
                f"{train_ratio:>11} {'':>8} {'':>8} {r['infer_vs_torch']:>10.2f}x"
            )
    return "\n".join(lines)


def _threads(row: dict) -> str:
    """The thr column: a count, "def" for a CPU row at its library's default (BLAS as it is
    configured, possibly on every core), "-" for a CUDA row."""
    if row.get("threads") is not None:
        return str(row["threads"])
    return "def" if str(row.get("device", "")).startswith("cpu") else "-"
