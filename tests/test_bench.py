"""convnet_gpu.bench: the rows of a run (devices x threads x batch sizes x engines), the first
step apart from the steady state, the peak memory, and the provenance every row carries."""

from __future__ import annotations

import pytest

from convnet_gpu.bench import (
    add_ratios,
    bench_convnet_gpu,
    convnet_gpu_contender,
    format_table,
    run_benchmarks,
    time_steps,
)
from convnet_gpu.bench_schema import validate
from convnet_gpu.machine import machine_cores

TINY = dict(steps=1, warmup=1)


def test_a_run_has_a_row_per_thread_count_and_batch_size_each_carrying_its_provenance():
    rows = run_benchmarks(["cpu"], "simple-cnn", [4, 8], thread_counts=[1, 2], **TINY)
    assert [(r["threads"], r["batch_size"]) for r in rows] == [(1, 4), (1, 8), (2, 4), (2, 8)]
    for row in rows:
        assert row["kind"] == "step" and row["engine"] == "convnet_gpu"
        assert row["first_train_step_ms"] > 0 and row["train_images_per_second"] > 0
        assert row["machine"]["cores"] == machine_cores() and "id" in row["commit"]
    assert validate(rows) == []


def test_a_cuda_device_is_measured_once_per_batch_size_whatever_the_threads():
    rows = run_benchmarks(["cuda"], "simple-cnn", [4], thread_counts=[1, 2], **TINY)
    assert len(rows) == 1 and rows[0]["threads"] is None
    assert validate(rows) == []


def test_the_first_step_is_timed_apart_and_never_in_the_steady_state():
    calls = []
    first_s, steady_s = time_steps(lambda: calls.append(1), warmup=3, steps=5, synchronize=list)
    assert len(calls) == 1 + 2 + 5  # the first, the rest of the warm-up, the timed steps
    assert first_s >= 0 and steady_s >= 0


def test_inference_alone_leaves_the_training_figures_out():
    row = bench_convnet_gpu("cpu", "simple-cnn", 4, train=False, threads=1, **TINY)
    assert "train_images_per_second" not in row and row["infer_images_per_second"] > 0
    assert row["memory_measure"] == "host RSS growth"


def test_a_contender_s_steps_run_on_the_backend_it_was_given(cpu_backend):
    contender = convnet_gpu_contender(cpu_backend, "simple-cnn", 4)
    contender.train_step()
    contender.infer_step()
    contender.synchronize()
    assert contender.engine == "convnet_gpu" and contender.threads == 1


def test_ratios_compare_rows_of_one_group_only():
    ours = {"engine": "convnet_gpu", "train_images_per_second": 300.0,
            "infer_images_per_second": 900.0}  # fmt: skip
    peer = {"engine": "torch", "train_images_per_second": 200.0, "infer_images_per_second": 1800.0}
    add_ratios([ours, peer])
    assert ours["train_vs_torch"] == pytest.approx(1.5)
    assert ours["infer_vs_torch"] == pytest.approx(0.5)
    lonely = dict(ours, engine="convnet_gpu")
    lonely.pop("train_vs_torch"), lonely.pop("infer_vs_torch")
    add_ratios([lonely, {"engine": "torch", "skipped": "no torch"}])
    assert "train_vs_torch" not in lonely


def test_the_peer_runs_at_the_same_threads_and_batch():
    pytest.importorskip("torch")
    rows = run_benchmarks(["cpu"], "simple-cnn", [4], peer="torch", thread_counts=[1], **TINY)
    ours, peer = rows
    assert peer["engine"] == "torch" and peer["threads"] == 1 and peer["batch_size"] == 4
    assert ours["train_vs_torch"] > 0 and ours["infer_vs_torch"] > 0
    assert peer["first_train_step_ms"] > 0 and peer["memory_measure"] == "host RSS growth"
    assert validate(rows) == []
    assert "vs PyTorch" in format_table(rows)


def test_the_table_shows_skipped_rows_with_their_reason():
    rows = run_benchmarks(["cpu"], "examples/small-resnet.toml", [2], peer="torch",
                          thread_counts=[1], **TINY)  # fmt: skip
    assert rows[1]["skipped"].startswith("no PyTorch peer")
    assert "skipped:" in format_table(rows)
    assert validate(rows) == []
