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
