"""convnet_gpu.bench_report: docs/benchmarks.md's generated section, from bench and
pytest-benchmark JSON, written between its markers and nowhere else."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from convnet_gpu.bench import run_benchmarks
from convnet_gpu.bench_report import BEGIN, END, first_problem, render, replace_section

ORIGIN = {
    "machine": {"cpu": "Test CPU", "cores": 2, "gpu": None, "python": "3.11.7",
                "libraries": {"numpy": "2.4.6", "torch": "2.13.0", "cupy": None}},
    "commit": {"id": "abcdef0123456789", "dirty": False},
    "measured_at": "2026-11-29T23:50:00+00:00",
    "load_average": [1.25, 1.0, 0.5],
    "command": "convnet-gpu bench --device cpu --model mini-resnet --peer torch",
    "steps": 20, "warmup": 3,
}  # fmt: skip


def step(engine, **figures):
    return {"kind": "step", "engine": engine, "device": f"cpu ({engine})", "requested": "cpu",
            "model": "mini-resnet", "batch_size": 128, "threads": 2,
            **figures, **ORIGIN}  # fmt: skip


BENCH = [
    step("convnet_gpu", train_images_per_second=380.0, infer_images_per_second=1200.0,
         first_train_step_ms=900.0, train_vs_torch=0.95, infer_vs_torch=2.0,
         peak_memory_bytes=300 * 2**20),
    step("torch", train_images_per_second=400.0, infer_images_per_second=600.0,
         first_train_step_ms=450.0, peak_memory_bytes=100 * 2**20),
    {**step("convnet_gpu"), "requested": "cuda", "threads": None, "skipped": "no GPU"},
    {"kind": "layer", "engine": "convnet_gpu", "device": "cpu (1 thread)", "requested": "cpu",
     "model": "mini-resnet", "batch_size": 128, "threads": 1, "position": 0, "layer_index": 0,
     "layer": "Conv2D(32, 3x3)", "phase": "forward", "ms": 4.25, **ORIGIN},
]  # fmt: skip

PYTEST_BENCHMARK = {
    "datetime": "2026-11-30T00:10:00",
    "machine_info": {"convnet_gpu": {"machine": ORIGIN["machine"], "commit": ORIGIN["commit"]}},
    "benchmarks": [
        {"group": "conv2 | forward | batch 32", "extra_info": {"engine": "convnet_gpu"},
         "stats": {"median": 0.004}},
        {"group": "conv2 | forward | batch 32", "extra_info": {"engine": "torch"},
         "stats": {"median": 0.005}},
    ],
}  # fmt: skip


def test_a_bench_file_becomes_its_command_its_provenance_and_its_tables():
    section = render([("b.json", BENCH)])
    assert "### mini-resnet: `convnet-gpu bench --device cpu --model mini-resnet --peer torch`" in (
        section
    )
    assert (
        "Measured on Test CPU, 2 cores, commit abcdef0, 2026-11-29 23:50 UTC, load average 1.25 "
        "at the start; Python 3.11.7, numpy 2.4.6, torch 2.13.0. From `b.json`; 20 timed steps "
        "after 3 warm-up steps."
    ) in section
    row = "| cpu | 2 | 128 | 380 | 400 | **0.95x** | 1,200 | 600 | **2.00x** | 900 / 450 |"
    assert row + " 300 / 100 |" in section
    assert "Skipped: convnet_gpu on cuda: no GPU." in section
    assert "| 0 Conv2D(32, 3x3) | 4.25 |  |  |" in section


def test_a_pytest_benchmark_file_puts_each_group_s_engines_side_by_side():
    section = render([("bench.json", PYTEST_BENCHMARK)])
    assert "| conv2 \\| forward \\| batch 32 | 4.000 | 5.000 | 1.25x |" in section


def test_the_section_goes_between_the_markers_and_the_rest_stays():
    doc = "# Benchmarks\n\nhand-written history\n"
    once = replace_section(doc, "first")
    assert once.startswith(doc) and once.endswith(f"{BEGIN}\nfirst\n{END}\n")
    twice = replace_section(once + "\nmore history\n", "second")
    assert "first" not in twice and f"{BEGIN}\nsecond\n{END}" in twice
    assert twice.startswith(doc) and twice.endswith("\nmore history\n")


def test_a_file_render_cannot_read_is_one_line_naming_its_first_problem(tmp_path):
    real = run_benchmarks(["cpu"], "simple-cnn", [2], steps=1, warmup=1, thread_counts=[1])
    assert first_problem("new.json", real) is None
    assert first_problem("bench.json", PYTEST_BENCHMARK) is None
    older = [{k: v for k, v in row.items() if k != "model"} for row in real]
    assert first_problem("old.json", older) == (
        "old.json: not a valid bench file (docs/bench-schema.json): $[0]: missing 'model'"
    )
    path = tmp_path / "old.json"
    path.write_text(json.dumps(older))
    script = Path(__file__).resolve().parent.parent / "scripts" / "bench_report.py"
    root = str(script.parent.parent)  # this checkout's package, not another install's
    done = subprocess.run([sys.executable, str(script), str(path)], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": root})  # fmt: skip
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [
        "bench_report: old.json: not a valid bench file (docs/bench-schema.json): "
        "$[0]: missing 'model'"
    ]


def test_the_pytest_benchmark_provenance_reads_its_load_at_the_end():
    document = {
        **PYTEST_BENCHMARK,
        "machine_info": {
            "convnet_gpu": {
                "machine": ORIGIN["machine"],
                "commit": ORIGIN["commit"],
                "load_average": [2.0],
            }
        },
    }
    section = render([("bench.json", document)])
    assert "commit abcdef0, 2026-11-30 00:10 UTC, load average 2.00 at the end; Python" in section
    assert "From `bench.json`." in section


def test_the_committed_section_is_what_the_committed_json_renders():
    """docs/benchmarks.md's generated section is exactly what scripts/bench_report.py makes from
    docs/bench/*.json (in name order, as the shell's glob gives them): figures cannot drift."""
    root = Path(__file__).resolve().parents[1]
    paths = sorted((root / "docs" / "bench").glob("*.json"))
    assert paths, "docs/bench holds the JSON the generated section is made from"
    files = [(p.name, json.loads(p.read_text(encoding="utf-8"))) for p in paths]
    doc = (root / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    section = doc[doc.index(BEGIN) : doc.index(END) + len(END)]
    assert replace_section(section, render(files)) == section
