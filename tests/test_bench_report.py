"""convnet_gpu.bench_report: docs/benchmarks.md's generated section, from bench and
pytest-benchmark JSON, written between its markers and nowhere else."""

from __future__ import annotations

from convnet_gpu.bench_report import BEGIN, END, render, replace_section

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
    assert "commit abcdef0 on Test CPU (2 cores, load average 1.25 at the start)" in section
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
