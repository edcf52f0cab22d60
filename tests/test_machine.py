"""convnet_gpu.machine: what every benchmark row says about the machine and the code."""

from __future__ import annotations

import re

import numpy as np

from convnet_gpu import machine


def test_provenance_names_the_cpu_the_cores_the_libraries_and_the_time():
    origin = machine.provenance()
    described = origin["machine"]
    assert described["cpu"] and described["cores"] >= 1
    assert described["cores"] <= described["logical_cpus"]
    assert described["libraries"]["numpy"] == np.__version__
    assert set(described["libraries"]) == set(machine.LIBRARIES)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", origin["measured_at"])
    load = origin["load_average"]
    assert load is None or (len(load) == 3 and all(value >= 0 for value in load))


def test_the_commit_is_this_checkout_s_or_null():
    commit = machine.git_commit()
    assert set(commit) == {"id", "dirty"}
    if commit["id"] is not None:  # a git checkout (the tests' usual home)
        assert re.fullmatch(r"[0-9a-f]{40}", commit["id"])
        assert isinstance(commit["dirty"], bool)


def test_no_gpu_is_named_without_cupy_loaded(monkeypatch):
    monkeypatch.delitem(__import__("sys").modules, "cupy", raising=False)
    assert machine.gpu_name() is None


def test_the_gpu_is_named_once_cupy_is_loaded(monkeypatch):
    class Runtime:
        @staticmethod
        def getDeviceProperties(index):
            return {"name": b"Test GPU"}

    fake_cupy = type("cupy", (), {"cuda": type("cuda", (), {"runtime": Runtime})})
    monkeypatch.setitem(__import__("sys").modules, "cupy", fake_cupy)
    assert machine.gpu_name() == "Test GPU"


def test_one_summary_line_for_the_table_the_titles_and_the_report():
    row = {
        "machine": {"cpu": "Test CPU", "cores": 2, "gpu": "NVIDIA H200"},
        "commit": {"id": "0123456789abcdef", "dirty": True},
        "measured_at": "2026-11-30T00:13:07+00:00",
        "load_average": [1.5, 1.0, 0.5],
    }
    assert machine.summary_line(row, "at the start") == (
        "Test CPU, 2 cores, NVIDIA H200, commit 0123456 + uncommitted changes, "
        "2026-11-30 00:13 UTC, load average 1.50 at the start"
    )
    bare = {
        "machine": {"cpu": "Test CPU", "cores": 2, "gpu": None},
        "commit": {"id": None, "dirty": None},
    }
    assert machine.summary_line(bare) == "Test CPU, 2 cores, no git checkout"
