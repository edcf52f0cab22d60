"""Backend benchmark: training-step and inference throughput per device, side by side.

Each device gets the same model, batch size and synthetic batch; timing starts after a warm-up
(kernel compilation, allocator warm-up, the capture of a CUDA graph) and the device is
synchronized before the clock stops. Every step copies its batch from the host, as training
does. With `peer="torch"`, PyTorch runs the same architecture on the same device in the same
process (eager), so the ratio compares like with like, at the same precision: our fp32 against
PyTorch with TF32 off everywhere, our tf32 against PyTorch with TF32 on for convolutions and
matrix products.
"""

from __future__ import annotations

import time

import numpy as np

from .backends import DeviceUnavailable, get_backend, parse_device
from .layers import SoftmaxCrossEntropy
from .models import build_model
from .net import Net
from .optim import SGD
from .replay import StepRunner
from .settings import SettingError


class PeerUnavailable(RuntimeError):
    """The PyTorch peer cannot run this benchmark (no torch, or no peer for the model)."""


INPUT_SHAPE = (1, 28, 28)  # Fashion-MNIST's, the default
NUM_CLASSES = 10


def _synthetic_batch(batch_size: int, seed: int, input_shape, num_classes: int):
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((batch_size,) + tuple(input_shape)).astype(np.float32)
    labels = rng.integers(0, num_classes, size=batch_size).astype(np.int32)
    return images, labels


def _time_loop(step, warmup: int, steps: int, synchronize) -> float:
    """Seconds per step, after `warmup` untimed steps."""
    for _ in range(warmup):
        step()
    synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize()
    return (time.perf_counter() - start) / steps


def _result(engine, device, batch_size, train_s, infer_s, **notes) -> dict:
    """A result row; train_s None: training was not timed (the row has no train figures)."""
    row = {"engine": engine, "device": device, "batch_size": batch_size, **notes}
    if train_s is not None:
        row["train_ms_per_step"] = train_s * 1e3
        row["train_images_per_second"] = batch_size / train_s
    row["infer_ms_per_step"] = infer_s * 1e3
    row["infer_images_per_second"] = batch_size / infer_s
    return row


def bench_convnet_gpu(
    device: str, model: str, batch_size: int, steps: int, warmup: int, seed: int = 0,
    input_shape=INPUT_SHAPE, num_classes: int = NUM_CLASSES, precision: str = "fp32",
    cuda_graph: str = "auto", threads: int | None = None, train: bool = True,
) -> dict:  # fmt: skip
    """Our training step and inference on `device`; train=False times inference alone."""
    backend = get_backend(device, precision=precision, threads=threads)
    net = Net(build_model(model, num_classes), SoftmaxCrossEntropy(), backend, seed=seed)
    net.setup(batch_size, input_shape)
    optimizer = SGD(lr=0.01, momentum=0.9).setup(net)
    images, labels = _synthetic_batch(batch_size, seed, input_shape, num_classes)

    def train_work(n):
        net.forward(n, train=True)
        net.backward(n)
        optimizer.step()

    train_runner = StepRunner(backend, train_work, batch_size, cuda_graph)
    infer_runner = StepRunner(
        backend, lambda n: net.forward(n, train=False), batch_size, cuda_graph
    )
    train_s = None
    if train:
        train_s = _time_loop(
            lambda: train_runner.run(net.load_batch(images, labels)), max(warmup, 2), steps,
            backend.synchronize,
        )  # fmt: skip
    infer_s = _time_loop(
        lambda: infer_runner.run(net.load_batch(images)), max(warmup, 2), steps,
        backend.synchronize,
    )  # fmt: skip
    timed = [train_runner, infer_runner] if train else [infer_runner]
    notes = {"precision": precision, "cuda_graph": "on" if all(r.replays for r in timed) else "off"}
    fallback = next((r.fallback for r in timed if r.fallback), None)
    if fallback:
        notes["cuda_graph_fallback"] = fallback
    return _result("convnet_gpu", backend.describe(), batch_size, train_s, infer_s, **notes)


def bench_torch(
    device: str, model: str, batch_size: int, steps: int, warmup: int, seed: int = 0,
    input_shape=INPUT_SHAPE, num_classes: int = NUM_CLASSES, precision: str = "fp32",
    cuda_graph: str = "auto", threads: int | None = None, train: bool = True,
) -> dict:  # fmt: skip
    """The same architecture in PyTorch (eager, at `precision`), as a peer in the same run, on
    `threads` CPU threads where given."""
    from .models import MODELS

    if model not in MODELS:
        raise PeerUnavailable(f"no PyTorch peer for {model!r} (named models only)")
    import torch  # optional peer, never a dependency

    from .torch_models import torch_model

    kind, index = parse_device(device)
    if kind == "cpu" and precision != "fp32":
        raise PeerUnavailable(f"{precision} is a CUDA precision; the CPU rows are fp32 only")
    torch_device = torch.device("cpu" if kind == "cpu" else f"cuda:{index}")
    if kind == "cpu" and threads is not None:
        torch.set_num_threads(threads)
    if torch_device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailable("PyTorch has no CUDA device here")
    tf32 = precision == "tf32"  # PyTorch's default lets cuDNN use TF32: say it either way
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.manual_seed(seed)
    net = torch_model(model, num_classes, input_shape).to(torch_device)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    host_images, host_labels = _synthetic_batch(batch_size, seed, input_shape, num_classes)
    images = torch.from_numpy(host_images)
    labels = torch.from_numpy(host_labels).long()
    sync = torch.cuda.synchronize if torch_device.type == "cuda" else (lambda: None)

    def train_step():
        net.train()
        optimizer.zero_grad(set_to_none=False)
        loss = torch.nn.functional.cross_entropy(
            net(images.to(torch_device)), labels.to(torch_device)
        )
        loss.backward()
        optimizer.step()

    def infer_step():
        net.eval()
        with torch.no_grad():
            net(images.to(torch_device))

    train_s = _time_loop(train_step, warmup, steps, sync) if train else None
    infer_s = _time_loop(infer_step, warmup, steps, sync)
    name = f"{torch_device} (PyTorch {torch.__version__}, {torch.get_num_threads()} threads)"
    if torch_device.type == "cuda":
        gpu_name = torch.cuda.get_device_name(torch_device)
        name = f"{torch_device} (PyTorch {torch.__version__}, {gpu_name})"
    return _result("torch", name, batch_size, train_s, infer_s, precision=precision)


def run_benchmarks(
    devices,
    model: str,
    batch_size: int,
    steps: int,
    warmup: int,
    peer: str | None = None,
    seed: int = 0,
    input_shape=INPUT_SHAPE,
    num_classes: int = NUM_CLASSES,
    precision: str = "fp32",
    cuda_graph: str = "auto",
    threads: int | None = None,
) -> list[dict]:
    """One result per (engine, device); an unusable device or peer is reported as skipped.
    `threads` is the CPU threads of both engines' CPU rows (None: each library's default)."""
    engines = [("convnet_gpu", bench_convnet_gpu)]
    if peer == "torch":
        engines.append(("torch", bench_torch))
    results = []
    for device in devices:
        for engine, bench in engines:
            try:
                result = bench(
                    device, model, batch_size, steps, warmup, seed, input_shape, num_classes,
                    precision=precision, cuda_graph=cuda_graph, threads=threads,
                )  # fmt: skip
            except (DeviceUnavailable, PeerUnavailable, SettingError, ImportError) as exc:
                result = {
                    "engine": engine,
                    "device": device,
                    "batch_size": batch_size,
                    "skipped": str(exc).splitlines()[0],
                }
            results.append({**result, "requested": device, "model": model})
    _add_ratios(results)
    return results


def _add_ratios(results: list[dict]) -> None:
    """Mark each convnet_gpu result with its speed relative to the torch peer on that device."""
    by_device: dict[str, list[dict]] = {}
    for result in results:
        by_device.setdefault(result["requested"], []).append(result)
    for group in by_device.values():
        ours = [r for r in group if r["engine"] == "convnet_gpu" and "skipped" not in r]
        peers = [r for r in group if r["engine"] == "torch" and "skipped" not in r]
        if ours and peers:
            for key in ("train", "infer"):
                ours[0][f"{key}_vs_torch"] = (
                    ours[0][f"{key}_images_per_second"] / peers[0][f"{key}_images_per_second"]
                )


def format_table(results: list[dict]) -> str:
    header = (
        f"{'engine':<12} {'device':<44} {'batch':>5} {'train img/s':>12} {'ms/step':>8} "
        f"{'infer img/s':>12} {'ms/step':>8}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        if "skipped" in r:
            lines.append(f"{r['engine']:<12} {r['device']:<44} skipped: {r['skipped']}")
            continue
        lines.append(
            f"{r['engine']:<12} {r['device'][:44]:<44} {r['batch_size']:>5} "
            f"{r['train_images_per_second']:>12.0f} {r['train_ms_per_step']:>8.2f} "
            f"{r['infer_images_per_second']:>12.0f} {r['infer_ms_per_step']:>8.2f}"
        )
        if "train_vs_torch" in r:
            lines.append(
                f"{'':<12} {'  vs PyTorch on the same device':<44} {'':>5} "
                f"{r['train_vs_torch']:>11.2f}x {'':>8} {r['infer_vs_torch']:>11.2f}x"
            )
    return "\n".join(lines)
