"""Backend benchmark: training-step and inference throughput per device, side by side.

Each device gets the same model, batch size and synthetic batch. The first step (kernel
compilation, caches, the allocator's first blocks) is timed on its own and reported apart; the
steady state is timed after the warm-up steps, and the device is synchronized before the clock
stops. Every step copies its batch from the host, as training does. With `peer="torch"`, PyTorch
runs the same architecture on the same device in the same process (eager), so the ratio compares
like with like, at the same precision: our fp32 against PyTorch with TF32 off everywhere, our
tf32 against PyTorch with TF32 on for convolutions and matrix products.

Each row also holds the peak memory of its engine on its device (memory.py), and the machine,
the commit and the time (machine.provenance); `bench_schema.py` documents every field.
`convnet_gpu_contender` (here) and `bench_peer.torch_contender` are the steps themselves, without
the timing: the pytest-benchmark suite (tests/benchmarks) times the very same steps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .backends import DeviceUnavailable, cuda_problem, get_backend, parse_device
from .layers import SoftmaxCrossEntropy
from .machine import gpu_name, provenance
from .memory import memory_fields, meter_for
from .models import build_model
from .net import Net
from .optim import SGD
from .replay import StepRunner
from .settings import SettingError


class PeerUnavailable(RuntimeError):
    """The PyTorch peer cannot run this benchmark (no torch, or no peer for the model)."""


INPUT_SHAPE = (1, 28, 28)  # Fashion-MNIST's, the default
NUM_CLASSES = 10


@dataclass
class Contender:
    """One engine's training step and inference pass on one device, built and ready to time."""

    engine: str
    device: str  # as the engine describes it: "cpu (NumPy 2.4.6, ...)", "cuda:0 (PyTorch ...)"
    threads: int | None  # CPU threads a step runs on; None on CUDA
    train_step: Callable[[], None]
    infer_step: Callable[[], None]
    synchronize: Callable[[], None]
    min_warmup: int = 1  # steps before the steady state (ours: 2, so a CUDA graph is captured)
    notes: Callable[[bool], dict] = field(default=lambda trained: {})  # the row's extra fields


def synthetic_batch(batch_size: int, seed: int, input_shape=INPUT_SHAPE,
                    num_classes: int = NUM_CLASSES):  # fmt: skip
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((batch_size,) + tuple(input_shape)).astype(np.float32)
    labels = rng.integers(0, num_classes, size=batch_size).astype(np.int32)
    return images, labels


def time_steps(step, warmup: int, steps: int, synchronize) -> tuple[float, float]:
    """(seconds of the first step, seconds per step of the steady state). The first step is the
    first of `warmup` (at least 1) untimed steps; then `steps` steps are timed together."""
    synchronize()
    start = time.perf_counter()
    step()
    synchronize()
    first_s = time.perf_counter() - start
    for _ in range(max(warmup, 1) - 1):
        step()
    synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize()
    return first_s, (time.perf_counter() - start) / steps


# ---- the contenders -------------------------------------------------------------------------
def convnet_gpu_contender(
    backend, model: str, batch_size: int, seed: int = 0, input_shape=INPUT_SHAPE,
    num_classes: int = NUM_CLASSES, cuda_graph: str = "auto",
) -> Contender:  # fmt: skip
    """Our net on `backend`: a training step (SGD with momentum) and an inference pass, each
    copying the same synthetic batch from the host first."""
    net = Net(build_model(model, num_classes), SoftmaxCrossEntropy(), backend, seed=seed)
    net.setup(batch_size, input_shape)
    optimizer = SGD(lr=0.01, momentum=0.9).setup(net)
    images, labels = synthetic_batch(batch_size, seed, input_shape, num_classes)

    def train_work(n):
        net.forward(n, train=True)
        net.backward(n)
        optimizer.step()

    train_runner = StepRunner(backend, train_work, batch_size, cuda_graph)
    infer_runner = StepRunner(
        backend, lambda n: net.forward(n, train=False), batch_size, cuda_graph
    )

    def notes(trained: bool) -> dict:
        timed = [train_runner, infer_runner] if trained else [infer_runner]
        row = {"cuda_graph": "on" if all(r.replays for r in timed) else "off"}
        fallback = next((r.fallback for r in timed if r.fallback), None)
        if fallback:
            row["cuda_graph_fallback"] = fallback
        return row

    return Contender(
        "convnet_gpu", backend.describe(), _threads_of(backend),
        train_step=lambda: train_runner.run(net.load_batch(images, labels)),
        infer_step=lambda: infer_runner.run(net.load_batch(images)),
        synchronize=backend.synchronize, min_warmup=2, notes=notes,
    )  # fmt: skip


def _threads_of(backend) -> int | None:
    """The CPU threads a step of ours runs on, as a row reports them: None on CUDA, and None
    for the library's default (threads=None: BLAS runs on as many threads as it likes)."""
    return backend.threads if backend.name == "cpu" and backend.blas_single else None


# ---- one measurement ------------------------------------------------------------------------
def _measure(build, meter, steps: int, warmup: int, train: bool, batch_size: int) -> dict:
    """Build a contender and time it: its row's figures (the memory meter runs throughout)."""
    meter.start()
    contender = build()
    warmup = max(warmup, contender.min_warmup)
    row = {"engine": contender.engine, "device": contender.device,
           "batch_size": batch_size, "threads": contender.threads}  # fmt: skip
    if train:
        first_s, train_s = time_steps(contender.train_step, warmup, steps, contender.synchronize)
        row.update(_figures("train", batch_size, first_s, train_s))
    first_s, infer_s = time_steps(contender.infer_step, warmup, steps, contender.synchronize)
    row.update(_figures("infer", batch_size, first_s, infer_s))
    row.update(memory_fields(meter))
    row.update(contender.notes(train))
    return row


def _figures(key: str, batch_size: int, first_s: float, steady_s: float) -> dict:
    return {
        f"{key}_ms_per_step": steady_s * 1e3,
        f"{key}_images_per_second": batch_size / steady_s,
        f"first_{key}_step_ms": first_s * 1e3,
    }


def bench_convnet_gpu(
    device: str, model: str, batch_size: int, steps: int, warmup: int, seed: int = 0,
    input_shape=INPUT_SHAPE, num_classes: int = NUM_CLASSES, precision: str = "fp32",
    cuda_graph: str = "auto", threads: int | None = None, train: bool = True,
) -> dict:  # fmt: skip
    """Our training step and inference on `device`; train=False times inference alone."""
    backend = get_backend(device, precision=precision, threads=threads)
    meter = meter_for("convnet_gpu", "cpu" if backend.name == "cpu" else "cuda")
    row = _measure(
        lambda: convnet_gpu_contender(
            backend, model, batch_size, seed, input_shape, num_classes, cuda_graph
        ),
        meter, steps, warmup, train, batch_size,
    )  # fmt: skip
    return {**row, "precision": precision}


def bench_torch(
    device: str, model: str, batch_size: int, steps: int, warmup: int, seed: int = 0,
    input_shape=INPUT_SHAPE, num_classes: int = NUM_CLASSES, precision: str = "fp32",
    cuda_graph: str = "auto", threads: int | None = None, train: bool = True,
) -> dict:  # fmt: skip
    """The same architecture in PyTorch (eager, at `precision`), as a peer in the same run, on
    `threads` CPU threads where given."""
    from .bench_peer import torch_contender, torch_device, torch_settings
    from .models import MODELS

    if model not in MODELS:
        raise PeerUnavailable(f"no PyTorch peer for {model!r} (named models only)")
    with torch_settings():  # its threads and TF32 flags are the process's: put them back
        target = torch_device(device, precision, threads)
        meter = meter_for("torch", target.type, target)
        row = _measure(
            lambda: torch_contender(target, model, batch_size, seed, input_shape, num_classes),
            meter, steps, warmup, train, batch_size,
        )  # fmt: skip
    return {**row, "precision": precision}


# ---- a run: devices x thread counts x batch sizes x engines ---------------------------------
def run_benchmarks(
    devices,
    model: str,
    batch_sizes,
    steps: int,
    warmup: int,
    peer: str | None = None,
    seed: int = 0,
    input_shape=INPUT_SHAPE,
    num_classes: int = NUM_CLASSES,
    precision: str = "fp32",
    cuda_graph: str = "auto",
    thread_counts=(None,),
) -> list[dict]:
    """One row per (device, thread count, batch size, engine); an unusable device or peer, or a
    batch that does not fit in memory, gives a row that says why it was skipped. `thread_counts`
    are the CPU threads of both engines' CPU rows (None: each library's default; an int holds our
    BLAS to one thread for the rest of the process, NumpyBackend's design); a CUDA device
    (`auto` included, where it picks one) is measured once per batch size.

    Before its first measured row on a device, each engine runs once unmeasured (the smallest
    batch, one step): the process's one-time costs (imports, numba's loading, PyTorch's set-up,
    CUDA contexts) stay out of every row, so a row's first step is that batch's own (kernels and
    caches for its shapes, the allocator's first blocks) and its peak memory is its own."""
    engines = [("convnet_gpu", bench_convnet_gpu)]
    if peer == "torch":
        engines.append(("torch", bench_torch))
    origin = provenance()
    common = dict(seed=seed, input_shape=input_shape, num_classes=num_classes,
                  precision=precision, cuda_graph=cuda_graph)  # fmt: skip
    rows = []
    for requested in devices:
        device = resolve_device(requested)
        cpu = device == "cpu"
        for _, bench in engines:
            _warm_up(bench, device, model, min(batch_sizes), thread_counts[0] if cpu else None,
                     common)  # fmt: skip
        for threads in thread_counts if cpu else (None,):
            for batch_size in batch_sizes:
                group = []  # the engines of one (device, threads, batch): what a ratio compares
                for engine, bench in engines:
                    try:
                        row = bench(device, model, batch_size, steps, warmup, threads=threads,
                                    **common)  # fmt: skip
                    except Exception as exc:
                        if not _skippable(exc):
                            raise
                        row = _skipped(engine, requested, batch_size, threads, exc)
                    group.append({"kind": "step", **row, "requested": requested, "model": model,
                                  "steps": steps, "warmup": warmup, **origin})  # fmt: skip
                add_ratios(group)
                rows += group
    origin["machine"]["gpu"] = gpu_name()  # CuPy is loaded once a CUDA row ran; rows share it
    return rows


def resolve_device(device: str) -> str:
    """`auto` as the device it picks (cuda:N where CUDA works, else cpu); others unchanged."""
    kind, index = parse_device(device)
    if kind != "auto":
        return device
    return f"cuda:{index}" if cuda_problem(index) is None else "cpu"


def _warm_up(bench, device: str, model: str, batch_size: int, threads, common: dict) -> None:
    """One unmeasured step of an engine on a device; what fails here, the measured rows say."""
    try:
        bench(device, model, batch_size, 1, 1, threads=threads, train=True, **common)
    except Exception as exc:
        if not _skippable(exc):
            raise


def _is_out_of_memory(exc: BaseException) -> bool:
    # CuPy's and PyTorch's errors by name: neither library is imported to catch its own
    return isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError"


SKIPS = (DeviceUnavailable, PeerUnavailable, SettingError, ImportError)


def _skippable(exc: BaseException) -> bool:
    """Whether an error makes a row that says why it was skipped (else it ends the run)."""
    return isinstance(exc, SKIPS) or _is_out_of_memory(exc)


def _skipped(engine: str, device: str, batch_size: int, threads, exc: BaseException) -> dict:
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if _is_out_of_memory(exc):  # the largest batch of a scaling list: the rows before it stand
        reason = f"out of memory ({type(exc).__name__})"
    return {"engine": engine, "device": device, "batch_size": batch_size, "threads": threads,
            "skipped": reason}  # fmt: skip


def add_ratios(group: list[dict]) -> None:
    """Mark the convnet_gpu row of a group (one device, thread count and batch size) with its
    speed relative to the group's torch row."""
    ours = [r for r in group if r["engine"] == "convnet_gpu" and "skipped" not in r]
    peers = [r for r in group if r["engine"] == "torch" and "skipped" not in r]
    if not (ours and peers):
        return
    for key in ("train", "infer"):
        if f"{key}_images_per_second" in ours[0] and f"{key}_images_per_second" in peers[0]:
            ours[0][f"{key}_vs_torch"] = (
                ours[0][f"{key}_images_per_second"] / peers[0][f"{key}_images_per_second"]
            )
