"""The operations the benchmark suite times, each written for both engines.

An Op is one layer (or block) of the named models at the size it has there, with our layers and
the PyTorch module that computes the same thing (bias-free where ours keeps the bias a layer of
its own). `ours_step` and `torch_step` return the timed function of one direction:

* forward: a training-mode forward pass (BatchNorm on batch statistics, the pooling's argmax
  kept), what a training step runs; PyTorch records its autograd graph, as training does.
* backward: the parameter gradients and, where the layer is not a net's first (`needs_dx`),
  the input gradient, from a fixed upstream gradient; PyTorch through torch.autograd.grad on a
  graph recorded once (so no gradient accumulates from call to call).

Each timed function ends by synchronizing its device, so an asynchronous GPU is timed to the
end of its work.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from convnet_gpu import BatchNorm, Conv2D, Dense, GlobalAvgPool, MaxPool2D, Net, SoftmaxCrossEntropy
from convnet_gpu.models import basic_block

LOSS = "softmax_xent"  # the loss: not a layer, timed through its own forward and backward


@dataclass(frozen=True)
class Op:
    name: str  # the test id
    title: str  # what the group says
    input_shape: tuple  # one sample's
    ours: Callable[[], list]  # our layers
    theirs: Callable  # nn -> the PyTorch module
    needs_dx: bool = True  # False: a net's first layer, whose input gradient nobody needs


OPS = [
    Op("conv1", "Conv2D 5x5, 1->32 ch, 28x28 (Net A's first)", (1, 28, 28),
       lambda: [Conv2D(32, 5, pad=2)], lambda nn: nn.Conv2d(1, 32, 5, padding=2, bias=False),
       needs_dx=False),
    Op("conv2", "Conv2D 5x5, 32->64 ch, 14x14 (Net A's second)", (32, 14, 14),
       lambda: [Conv2D(64, 5, pad=2)], lambda nn: nn.Conv2d(32, 64, 5, padding=2, bias=False)),
    Op("maxpool1", "MaxPool2D 2x2, 32 ch, 28x28", (32, 28, 28),
       lambda: [MaxPool2D(2)], lambda nn: nn.MaxPool2d(2)),
    Op("maxpool2", "MaxPool2D 2x2, 64 ch, 14x14", (64, 14, 14),
       lambda: [MaxPool2D(2)], lambda nn: nn.MaxPool2d(2)),
    Op("global_avgpool", "global average pooling, 128 ch, 7x7", (128, 7, 7),
       lambda: [GlobalAvgPool()], lambda nn: nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())),
    Op("dense1", "Dense 3136->1024 (Net A's first)", (3136,),
       lambda: [Dense(1024)], lambda nn: nn.Linear(3136, 1024, bias=False)),
    Op("dense2", "Dense 1024->10 (Net A's classifier)", (1024,),
       lambda: [Dense(10)], lambda nn: nn.Linear(1024, 10, bias=False)),
    Op("batchnorm", "BatchNorm, 32 ch, 28x28 (training)", (32, 28, 28),
       lambda: [BatchNorm()], lambda nn: nn.BatchNorm2d(32)),
    Op("residual", "basic block 32->64 ch, stride 2, 28x28 (Net B's second)", (32, 28, 28),
       lambda: basic_block(32, 64, stride=2), lambda nn: _torch_block(32, 64, 2)),
]  # fmt: skip
OP_NAMES = [op.name for op in OPS] + [LOSS]
CLASSES = 10


def _torch_block(in_channels, out_channels, stride):
    from convnet_gpu.torch_models import BasicBlock

    return BasicBlock(in_channels, out_channels, stride)


def group_title(name: str) -> str:
    if name == LOSS:
        return f"softmax cross-entropy, {CLASSES} classes"
    return next(op.title for op in OPS if op.name == name)


def _host_inputs(shape, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape).astype(np.float32)


# ---- ours -----------------------------------------------------------------------------------
def ours_step(name: str, backend, batch: int, direction: str):
    """Our timed function for one op and direction, after one untimed forward (and backward)."""
    if name == LOSS:
        return _ours_loss(backend, batch, direction)
    op = next(op for op in OPS if op.name == name)
    net = Net(op.ours(), None, backend, seed=0).setup(batch, op.input_shape, input_grad=op.needs_dx)
    n = net.load_batch(_host_inputs((batch,) + op.input_shape))
    backend.copy_from_host(_host_inputs(net.blobs[-1].grad.shape, 1), net.blobs[-1].grad)
    net.forward(n, train=True)
    if direction == "forward":
        return lambda: (net.forward(n, train=True), backend.synchronize())
    net.backward(n)
    return lambda: (net.backward(n), backend.synchronize())


def _ours_loss(backend, batch: int, direction: str):
    loss = SoftmaxCrossEntropy()
    loss.setup(backend, (CLASSES,), batch, np.float32)
    logits = backend.asarray(_host_inputs((batch, CLASSES)))
    labels = backend.asarray(np.arange(batch, dtype=np.int32) % CLASSES)
    d_logits = backend.empty((batch, CLASSES), np.float32)
    loss.forward(logits, labels)
    if direction == "forward":
        return lambda: (loss.forward(logits, labels), backend.synchronize())
    return lambda: (loss.backward(d_logits), backend.synchronize())


# ---- PyTorch --------------------------------------------------------------------------------
def torch_step(name: str, device, batch: int, direction: str):
    """PyTorch's timed function for one op and direction on a torch.device."""
    import torch

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if name == LOSS:
        logits = torch.from_numpy(_host_inputs((batch, CLASSES))).to(device).requires_grad_()
        labels = (torch.arange(batch) % CLASSES).to(device)
        forward = lambda: torch.nn.functional.cross_entropy(logits, labels)
        wrt = [logits]
    else:
        op = next(op for op in OPS if op.name == name)
        module = op.theirs(torch.nn).to(device).train()
        x = torch.from_numpy(_host_inputs((batch,) + op.input_shape)).to(device)
        x.requires_grad_(op.needs_dx)
        forward = lambda: module(x)
        wrt = list(module.parameters()) + ([x] if op.needs_dx else [])
    if direction == "forward":
        return lambda: (forward(), sync())
    y = forward()
    dy = torch.from_numpy(_host_inputs(tuple(y.shape), 1)).to(device) if y.dim() else None
    return lambda: (torch.autograd.grad(y, wrt, dy, retain_graph=True), sync())
