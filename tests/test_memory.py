"""convnet_gpu.memory: the host meter sees memory a measurement touches (and not before it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from convnet_gpu.memory import HostRssGrowth, memory_fields, meter_for

GROW_64_MIB = """
import numpy as np
from convnet_gpu.memory import HostRssGrowth
meter = HostRssGrowth()
meter.start()
during = np.ones(64 * 2**20 // 8)  # 64 MiB, every page written
print(meter.read())
"""


def test_host_rss_growth_sees_an_array_written_during_the_measurement():
    # In a fresh process: in this one, memory earlier tests freed may be reused, unseen.
    done = subprocess.run(
        [sys.executable, "-c", GROW_64_MIB], capture_output=True, text=True, check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    grown = done.stdout.strip()
    if grown == "None":
        pytest.skip("no /proc/self/clear_refs here (not Linux): the host meter reads None")
    assert 60 * 2**20 <= int(grown) < 96 * 2**20


def test_each_engine_and_device_has_its_meter():
    assert meter_for("convnet_gpu", "cpu").what == "host RSS growth"
    assert meter_for("torch", "cpu").what == "host RSS growth"
    assert meter_for("convnet_gpu", "cuda").what == "CuPy pool high-water growth"
    assert meter_for("torch", "cuda", "cuda:0").what == "torch.cuda.max_memory_allocated"


def test_memory_fields_say_how_the_peak_was_read():
    meter = HostRssGrowth()
    meter.start()
    fields = memory_fields(meter)
    assert fields["memory_measure"] == "host RSS growth"
    assert fields["peak_memory_bytes"] is None or fields["peak_memory_bytes"] >= 0
