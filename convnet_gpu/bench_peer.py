"""The PyTorch peer of a benchmark: the same architecture in PyTorch (eager), its device, and
the process-wide settings it runs under.

PyTorch's thread count and TF32 flags belong to the whole process, so a measurement sets them
inside `torch_settings()`, which puts them back afterwards: a bench (or a benchmark test) leaves
PyTorch as it found it.
"""

from __future__ import annotations

import contextlib

from .backends import DeviceUnavailable, parse_device
from .bench import INPUT_SHAPE, NUM_CLASSES, Contender, PeerUnavailable, synthetic_batch


@contextlib.contextmanager
def torch_settings():
    """Restore PyTorch's CPU thread count and TF32 flags on leaving, whatever was set inside."""
    import torch

    threads = torch.get_num_threads()
    cudnn_tf32 = torch.backends.cudnn.allow_tf32
    matmul_tf32 = torch.backends.cuda.matmul.allow_tf32
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.backends.cudnn.allow_tf32 = cudnn_tf32
        torch.backends.cuda.matmul.allow_tf32 = matmul_tf32


def torch_device(device: str, precision: str = "fp32", threads: int | None = None):
    """The torch.device of a device name ("cpu", "cuda", "cuda:N"), with PyTorch on `threads`
    CPU threads (None: as it is) and TF32 on for tf32 only (call it inside torch_settings())."""
    import torch

    kind, index = parse_device(device)
    if kind == "cpu" and precision != "fp32":
        raise PeerUnavailable(f"{precision} is a CUDA precision; the CPU rows are fp32 only")
    target = torch.device("cpu" if kind == "cpu" else f"cuda:{index}")
    if kind == "cpu" and threads is not None:
        torch.set_num_threads(threads)
    if target.type == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailable("PyTorch has no CUDA device here")
    tf32 = precision == "tf32"  # PyTorch's default lets cuDNN use TF32: say it either way
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    return target


def torch_contender(
    target, model: str, batch_size: int, seed: int = 0, input_shape=INPUT_SHAPE,
    num_classes: int = NUM_CLASSES,
) -> Contender:  # fmt: skip
    """The same architecture in PyTorch (eager) on `target`, at the thread count and TF32
    settings the caller has set."""
    import torch  # optional peer, never a dependency

    from .torch_models import torch_model

    torch.manual_seed(seed)
    net = torch_model(model, num_classes, input_shape).to(target)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    host_images, host_labels = synthetic_batch(batch_size, seed, input_shape, num_classes)
    images = torch.from_numpy(host_images)
    labels = torch.from_numpy(host_labels).long()
    on_cuda = target.type == "cuda"

    def train_step():
        net.train()
        optimizer.zero_grad(set_to_none=False)
        loss = torch.nn.functional.cross_entropy(net(images.to(target)), labels.to(target))
        loss.backward()
        optimizer.step()

    def infer_step():
        net.eval()
        with torch.no_grad():
            net(images.to(target))

    name = f"{target} (PyTorch {torch.__version__}, {torch.get_num_threads()} threads)"
    if on_cuda:
        gpu_name = torch.cuda.get_device_name(target)
        name = f"{target} (PyTorch {torch.__version__}, {gpu_name})"
    return Contender(
        "torch", name, None if on_cuda else torch.get_num_threads(), train_step, infer_step,
        synchronize=torch.cuda.synchronize if on_cuda else (lambda: None),
    )  # fmt: skip
