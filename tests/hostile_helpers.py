"""Helpers of the hostile-input tests (tests/test_hostile_*.py): tiny data and runs, the CLI run
in-process or as a subprocess under a memory cap, and the one assertion they all make.

A refused input must end with the exit status asked for, exactly one line on stderr, no
traceback, and no file of an earlier run changed (`tree_hashes` before and after).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np

from convnet_gpu import cli

REPO = Path(__file__).resolve().parents[1]
MEMORY_CAP = 2 << 30  # RLIMIT_AS of the subprocess cases: a refusal must come below it

TINY_MODEL = """
[[layers]]
type = "conv"
out = 4
kernel = 3
pad = 1

[[layers]]
type = "bias"

[[layers]]
type = "relu"

[[layers]]
type = "flatten"

[[layers]]
type = "dense"
out = 10

[[layers]]
type = "bias"
"""
IDX_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def idx_bytes(array: np.ndarray, dims=None) -> bytes:
    """An IDX file of uint8 `array`; `dims` forges the header's sizes."""
    dims = array.shape if dims is None else dims
    header = struct.pack(">HBB", 0, 0x08, len(dims)) + struct.pack(f">{len(dims)}I", *dims)
    return header + array.astype(np.uint8).tobytes()


def write_idx_dir(directory: Path, train=48, test=16, size=8, files=None, seed=0) -> Path:
    """An MNIST-layout folder of gzipped IDX files (`files` replaces some by name)."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    contents = {}
    for split, count in ((IDX_NAMES[0], train), (IDX_NAMES[2], test)):
        labels = rng.integers(0, 10, count)
        images = rng.integers(0, 60, (count, size, size)) + labels[:, None, None] * 19
        contents[split] = gzip.compress(idx_bytes(images))
        contents[split.replace("images-idx3", "labels-idx1")] = gzip.compress(idx_bytes(labels))
    contents.update(files or {})
    for name, payload in contents.items():
        (directory / f"{name}.gz").write_bytes(payload)
    return directory


def write_model(path: Path, text: str = TINY_MODEL) -> Path:
    path.write_text(text)
    return path


def train_args(data_dir, model, *more) -> list:
    return [
        "train", "--device", "cpu", "--threads", "1", "--data-dir", str(data_dir),
        "--model", str(model), "--no-progress", *more,
    ]  # fmt: skip


def run_in_process(capsys, *argv) -> tuple[int, str, str]:
    try:
        code = cli.main([str(arg) for arg in argv])
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_subprocess(
    *argv, memory_cap: int | None = None, env=None, code: str | None = None, timeout: int = 120
):
    """`python -m convnet_gpu argv` (or `python -c code argv`) from the repository, optionally
    under RLIMIT_AS = memory_cap; returns (exit status, stdout, stderr)."""

    def cap_memory():
        if memory_cap is not None:
            import resource

            resource.setrlimit(resource.RLIMIT_AS, (memory_cap, memory_cap))

    command = [sys.executable, "-c", code] if code else [sys.executable, "-m", "convnet_gpu"]
    result = subprocess.run(
        command + [str(arg) for arg in argv], capture_output=True, text=True, cwd=REPO,
        preexec_fn=cap_memory, env={**os.environ, **(env or {})}, timeout=timeout,
    )  # fmt: skip
    return result.returncode, result.stdout, result.stderr


def assert_refused(result, status: int = 2, *fragments: str) -> str:
    """The result of a refused command: `status`, one line on stderr holding every fragment,
    no traceback. Returns the line."""
    code, _, err = result
    lines = err.strip().splitlines()
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    assert code == status, (code, err)
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def tree_hashes(*folders: Path) -> dict:
    """sha256 of every file under the folders: equal before and after means nothing changed."""
    hashes = {}
    for folder in folders:
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file():
                hashes[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes
