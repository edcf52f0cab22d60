"""Helpers shared by several test modules (import as `from helpers import ...`)."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest


def assert_one_line_mentioning(error: pytest.ExceptionInfo, *fragments: str) -> str:
    message = str(error.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def run_host_harness(source: str, tmp_path, include_dir) -> np.ndarray:
    """Build a C++ harness around CUDA sources with the host compiler, run it, and return the
    numbers it prints (one row per line). Skips when there is no host C++ compiler."""
    compiler = shutil.which("g++") or shutil.which("clang++")
    if compiler is None:
        pytest.skip("no host C++ compiler (g++ or clang++) to build the CUDA code for the CPU")
    (tmp_path / "harness.cpp").write_text(source)
    binary = tmp_path / "harness"
    subprocess.run(
        [
            compiler,
            "-std=c++17",
            "-O1",
            "-I",
            str(include_dir),
            "-o",
            str(binary),
            str(tmp_path / "harness.cpp"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    lines = subprocess.run(
        [str(binary)], check=True, capture_output=True, text=True, timeout=10
    ).stdout.split("\n")
    return np.array([[float(v) for v in line.split()] for line in lines if line])
