"""convnet_gpu.bench: the rows of a run (devices x threads x batch sizes x engines), the first
step apart from the steady state, the peak memory, and the provenance every row carries."""

from __future__ import annotations

import time

import pytest

from convnet_gpu import bench
from convnet_gpu.bench import (
    add_ratios,
    bench_convnet_gpu,
    convnet_gpu_contender,
    run_benchmarks,
    time_steps,
)
from convnet_gpu.bench_schema import validate
from convnet_gpu.bench_table import format_table
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


def test_a_slow_first_step_stays_out_of_the_steady_state():
    calls = []

    def step():  # compiles (sleeps) on its first call only, like a kernel cache
        calls.append(1)
        if len(calls) == 1:
            time.sleep(0.2)

    first_s, steady_s = time_steps(step, warmup=2, steps=4, synchronize=lambda: None)
    assert first_s >= 0.2 and steady_s < 0.02


def test_inference_alone_leaves_the_training_figures_out():
    row = bench_convnet_gpu("cpu", "simple-cnn", 4, train=False, threads=1, **TINY)
    assert "train_images_per_second" not in row and row["infer_images_per_second"] > 0
    assert row["memory_measure"] == "host RSS growth"


def test_a_contender_s_steps_run_on_the_backend_it_was_given(cpu_backend):
    contender = convnet_gpu_contender(cpu_backend, "simple-cnn", 4)
    contender.train_step()
    contender.infer_step()
    contender.synchronize()
    assert contender.engine == "convnet_gpu" and contender.threads is None  # library default


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


def test_auto_on_the_cpu_measures_each_thread_count_it_was_given(monkeypatch):
    monkeypatch.setattr(bench, "cuda_problem", lambda index: "no GPU here")
    rows = run_benchmarks(["auto"], "simple-cnn", [4], thread_counts=[1, 2], **TINY)
    assert [(r["requested"], r["threads"]) for r in rows] == [("auto", 1), ("auto", 2)]
    assert ", 2 threads" in rows[1]["device"]


def test_the_library_default_is_reported_as_no_thread_count_not_as_one():
    rows = run_benchmarks(["cpu"], "simple-cnn", [4], **TINY)  # thread_counts=(None,)
    assert rows[0]["threads"] is None and validate(rows) == []
    assert format_table(rows).splitlines()[2][54:57] == "def"  # the thr column


def test_each_engine_warms_up_once_per_device_before_its_measured_rows(monkeypatch):
    calls = []

    def fake_bench(device, model, batch_size, steps, warmup, **kwargs):
        calls.append((batch_size, steps, kwargs["threads"]))
        return {"engine": "convnet_gpu", "device": device, "batch_size": batch_size,
                "threads": kwargs["threads"], "infer_images_per_second": 1.0}  # fmt: skip

    monkeypatch.setattr(bench, "bench_convnet_gpu", fake_bench)
    run_benchmarks(["cpu"], "simple-cnn", [64, 8], thread_counts=[2, 1], **TINY)
    assert calls == [(8, 1, 2), (64, 1, 2), (8, 1, 2), (64, 1, 1), (8, 1, 1)]


def test_the_first_row_s_peak_memory_holds_no_one_time_costs():
    rows = run_benchmarks(["cpu"], "simple-cnn", [8, 64], thread_counts=[1], **TINY)
    small, large = (row["peak_memory_bytes"] for row in rows)
    assert small is not None and large is not None and small <= large


def test_a_batch_that_does_not_fit_in_memory_is_a_skipped_row_and_the_others_stand(monkeypatch):
    measure = bench.bench_convnet_gpu

    def running_out_at_64(device, model, batch_size, *args, **kwargs):
        if batch_size == 64:
            raise MemoryError("Unable to allocate 3.2 GiB")
        return measure(device, model, batch_size, *args, **kwargs)

    monkeypatch.setattr(bench, "bench_convnet_gpu", running_out_at_64)
    rows = run_benchmarks(["cpu"], "simple-cnn", [4, 64], thread_counts=[1], **TINY)
    assert rows[0]["infer_images_per_second"] > 0
    assert rows[1]["skipped"] == "out of memory (MemoryError)" and rows[1]["batch_size"] == 64
    assert validate(rows) == []
    assert "skipped: out of memory" in format_table(rows)


def test_other_errors_still_end_the_run(monkeypatch):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(bench, "bench_convnet_gpu", broken)
    with pytest.raises(ZeroDivisionError):
        run_benchmarks(["cpu"], "simple-cnn", [4], **TINY)


def test_the_peer_leaves_pytorch_s_threads_and_tf32_flags_as_it_found_them():
    torch = pytest.importorskip("torch")
    before = (torch.get_num_threads(), torch.backends.cudnn.allow_tf32,
              torch.backends.cuda.matmul.allow_tf32)  # fmt: skip
    rows = run_benchmarks(["cpu"], "simple-cnn", [4], peer="torch", thread_counts=[1], **TINY)
    assert rows[1]["threads"] == 1  # it did run on one thread
    after = (torch.get_num_threads(), torch.backends.cudnn.allow_tf32,
             torch.backends.cuda.matmul.allow_tf32)  # fmt: skip
    assert after == before
