"""What a measurement ran on: the CPU model and cores, the GPU, the library versions, the commit.

Every benchmark row carries `provenance()`, so a figure can always be traced to the machine and
the code that produced it. Nothing here imports PyTorch or CuPy: versions come from the installed
distributions' metadata, and the GPU is named only when CuPy is already loaded (a CUDA benchmark
loads it) or when asked for.
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path

# The libraries whose versions decide a figure: the name a row reports -> its distributions.
LIBRARIES = {
    "convnet-gpu": ("convnet-gpu",),
    "numpy": ("numpy",),
    "numba": ("numba",),
    "cupy": ("cupy-cuda12x", "cupy-cuda13x", "cupy"),
    "torch": ("torch",),
}


def machine_cores() -> int:
    """The cores this process may run on (a container's or taskset's share, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cpu_model() -> str:
    """The CPU's model name as the OS reports it ("AMD EPYC", "Intel(R) Xeon(R) ...")."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:  # not Linux: platform's answer is the best there is
        pass
    return platform.processor() or platform.machine() or "unknown"


def library_versions() -> dict:
    """name -> installed version (None where not installed), for each of LIBRARIES."""
    versions = {}
    for name, distributions in LIBRARIES.items():
        versions[name] = None
        for distribution in distributions:
            try:
                versions[name] = metadata.version(distribution)
                break
            except metadata.PackageNotFoundError:
                continue
    return versions


def gpu_name(index: int = 0) -> str | None:
    """The name of CUDA device `index`, or None where there is none (or CuPy is not loaded)."""
    cupy = sys.modules.get("cupy")
    if cupy is None:
        return None
    try:
        name = cupy.cuda.runtime.getDeviceProperties(index)["name"]
    except Exception:  # no driver, no device: CuPy raises its own error types
        return None
    return name.decode(errors="replace") if isinstance(name, bytes) else str(name)


@lru_cache(maxsize=1)
def git_commit() -> dict:
    """{"id": the commit hash, "dirty": uncommitted changes?} of the checkout this package runs
    from; {"id": None, "dirty": None} where it is not a git checkout (an installed wheel)."""
    root = Path(__file__).resolve().parent.parent

    def git(*args) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != root:  # another project's repository around us
        return {"id": None, "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"id": git("rev-parse", "HEAD"), "dirty": None if status is None else bool(status)}


def describe_machine() -> dict:
    """The machine, as every benchmark row records it."""
    return {
        "cpu": cpu_model(),
        "cores": machine_cores(),
        "logical_cpus": os.cpu_count() or 1,
        "gpu": gpu_name(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "libraries": library_versions(),
    }


def load_average() -> list[float] | None:
    """The system's load average over 1, 5 and 15 minutes (None where the OS has none): on a
    shared machine it says how busy the cores were when a figure was taken."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def provenance() -> dict:
    """What a result row carries besides its figures: the machine, the commit, the time (UTC)
    and the load average when the run started."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return {
        "machine": describe_machine(),
        "commit": git_commit(),
        "measured_at": now.isoformat(timespec="seconds"),
        "load_average": load_average(),
    }
