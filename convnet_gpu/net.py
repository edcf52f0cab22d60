"""Net: a chain of layers whose blobs, parameters and workspaces are allocated once in setup."""

from __future__ import annotations

import copy

import numpy as np

from .backends import get_backend
from .blob import Blob
from .chain import Chain
from .distributed.shares import BatchShare
from .errors import ModelError
from .layers.base import BatchRows, parameter_owners, walk
from .limits import check_net_fits


class ParamBuffer:
    """Every learnable array of a net in one flat buffer (and its gradient in another).

    Layers see views of it; the optimizer updates the whole net with a few flat array ops.
    `decay_mask` is 1 where weight decay applies (weights) and 0 where it does not (biases).
    """

    def __init__(self, backend, specs, dtype, rng: np.random.Generator):
        offsets, total = [], 0
        for spec in specs:
            size = int(np.prod(spec.shape))
            offsets.append((spec, total, size))
            total += size
        self.size = total
        self.data = backend.zeros((total,), dtype)
        self.grad = backend.zeros((total,), dtype)
        host_values = np.zeros(total, dtype=np.float64)
        host_decay = np.zeros(total, dtype=dtype)
        for spec, start, size in offsets:
            host_values[start : start + size] = _initial_values(spec, rng).ravel()
            host_decay[start : start + size] = 1.0 if spec.decay else 0.0
        backend.copy_from_host(host_values.astype(dtype), self.data)
        self.decay_mask = backend.asarray(host_decay)
        self._offsets = offsets

    def span(self, index: int) -> tuple[int, int]:
        """Where the index-th ParamSpec lies in the flat buffers: (start, stop)."""
        _, start, size = self._offsets[index]
        return start, start + size

    def views(self, index: int, buffer):
        """The arrays of the index-th ParamSpec inside `buffer` (data or grad)."""
        spec, start, size = self._offsets[index]
        return buffer[start : start + size].reshape(spec.shape)


def _initial_values(spec, rng: np.random.Generator) -> np.ndarray:
    if spec.init == "zeros":
        return np.zeros(spec.shape)
    if spec.init == "ones":
        return np.ones(spec.shape)
    if spec.init == "he":
        return rng.standard_normal(spec.shape) * np.sqrt(2.0 / spec.fan_in)
    if spec.init == "uniform":
        bound = 1.0 / np.sqrt(spec.fan_in)
        return rng.uniform(-bound, bound, spec.shape)
    raise ValueError(f"unknown parameter init {spec.init!r}")


class Net:
    """A chain of layers, optionally followed by a loss.

    After `setup(batch_size, input_shape)` a step only writes into memory the net owns:
        n = net.load_batch(images, labels)   # host -> device, the one crossing
        net.forward(n, train=True)           # logits and, with a loss, net.loss.loss
        net.backward(n)                      # parameter gradients in net.params.grad
    """

    def __init__(self, layers, loss=None, backend=None, dtype=np.float32, seed: int = 0):
        self.chain = Chain(layers)
        self.layers = self.chain.layers
        self.loss = loss
        self.backend = backend if backend is not None else get_backend("cpu")
        self.dtype = np.dtype(dtype)
        self.seed = seed
        self.batch_size = None
        self.rows = BatchRows()  # all rows of the batch: this net computes them itself
        self.workers = None  # a WorkerGroup when the backend runs steps on several threads

    # ---- allocation -----------------------------------------------------------------------
    def setup(self, batch_size: int, input_shape, input_grad: bool = False) -> Net:
        """Allocate everything a step needs. `input_grad` also keeps d(loss)/d(input)."""
        be, dtype = self.backend, self.dtype
        self.batch_size, self.input_shape = batch_size, tuple(input_shape)
        self.shapes = self.chain.plan(self.input_shape)
        check_net_fits(be, self.layers, self.shapes, batch_size, dtype)  # before any allocation
        threads = min(be.threads, batch_size)
        templates = copy.deepcopy((self.layers, self.loss)) if threads > 1 else None
        self._bind_parameters(np.random.default_rng(self.seed))
        self.seed_random_layers(self.layers)
        self.input = Blob.allocate(
            be, (batch_size,) + self.input_shape, dtype, with_grad=input_grad
        )
        self.labels = be.zeros((batch_size,), "int32")
        for _, layer in walk(self.layers):
            layer.rows = self.rows
        # With workers, the net's own layers keep parameters and buffers but compute nothing.
        own_rows = 1 if threads > 1 else None
        self.chain.setup(be, batch_size, dtype, self.input_shape, layer_rows=own_rows)
        self.blobs = [self.input] + self.chain.blobs
        if self.loss is not None:
            self.loss.rows = self.rows
            try:
                self.loss.setup(be, self.shapes[-1], batch_size, dtype)
            except ValueError as exc:  # a model whose output does not fit its loss
                raise ModelError(f"the model's output {self.shapes[-1]}: {exc}") from None
        if threads > 1:
            from .workers import WorkerGroup

            self.workers = WorkerGroup(self, templates, threads)
        return self

    def _bind_parameters(self, rng: np.random.Generator) -> None:
        """One flat buffer for every layer's parameters, nested ones included; each layer gets
        views of its own, found once by its path."""
        specs = [spec for _, _, spec in parameter_owners(self.layers, self.input_shape)]
        self.params = ParamBuffer(self.backend, specs, self.dtype, rng)
        self.bind_parameters(self.layers, self.params.grad)

    def bind_parameters(self, layers, grad) -> None:
        """Give `layers` (this net's, or a worker's copy of them) views of the net's parameters
        and of `grad`, a buffer like params.grad, where their gradients go."""
        for index, (_, layer, spec) in enumerate(parameter_owners(layers, self.input_shape)):
            layer.params[spec.name] = self.params.views(index, self.params.data)
            layer.grads[spec.name] = self.params.views(index, grad)

    def seed_random_layers(self, layers) -> None:
        """Give each random layer left unseeded (seed None) its own seed, derived from the net's
        and its position, so two Dropout layers never share a mask stream (and a worker's copy
        of a layer draws what the net's would)."""
        for position, (_, layer) in enumerate(walk(layers)):
            if getattr(layer, "seed", 0) is None:
                layer.seed = (self.seed * 1_000_003 + position) % 2**32

    def span_ranks(self, comm, sync_statistics: bool = True) -> None:
        """Compute one rank's share of each global batch, meeting the other ranks through
        `comm` (a distributed.Communicator): BatchNorm's sums go through it when
        sync_statistics, else each rank normalizes with its own rows' statistics."""
        every_rows = [self.rows] + [w.rows for w in (self.workers.workers if self.workers else [])]
        for rows in every_rows:
            rows.comm, rows.sync_statistics = comm, sync_statistics

    @property
    def output_shape(self) -> tuple:
        return self.shapes[-1]

    # ---- a step ---------------------------------------------------------------------------
    def load_batch(self, images, labels=None) -> int:
        """Copy a host batch (n <= batch_size rows) into the input blob; returns n."""
        n = len(images)
        if self.batch_size is None:
            raise RuntimeError("call net.setup(batch_size, input_shape) before load_batch")
        if not 0 < n <= self.batch_size or tuple(images.shape[1:]) != self.input_shape:
            raise ValueError(
                f"batch of shape {tuple(images.shape)} does not fit this net "
                f"(at most {self.batch_size} rows of {self.input_shape})"
            )
        self.backend.copy_from_host(images, self.input.data[:n])
        if labels is not None:
            self.backend.copy_from_host(labels, self.labels[:n])
        return n

    def forward(self, n: int, train: bool = True, share=None):
        """Run the layers on the first n rows (and the loss, if any); returns the output view.

        `share` (a distributed.BatchShare) says these n rows are rows [first, first + n) of a
        global batch of `total` rows whose others other ranks compute: Dropout draws by global
        row, the loss divides by the global batch. None: the n rows are the whole batch."""
        share = share if share is not None else BatchShare(0, n, n)
        if self.workers is not None:
            return self.workers.forward(n, train, share)
        self.rows.place(share.first, share.total, n)
        output = self.chain.forward(self.input.data[:n], train)
        if self.loss is not None:
            self.loss.forward(output, self.labels[:n])
        return output

    def backward(self, n: int) -> None:
        """Gradients of the loss (or of sum(output * blobs[-1].grad) without a loss)."""
        if self.workers is not None:
            self.workers.backward(n)
            return
        if self.loss is not None:
            self.loss.backward(self.blobs[-1].grad[:n])
        x, dx = self.input.rows(n)
        self.chain.backward(x, dx)

    def count_correct(self, n: int):
        """0-d device array: how many of the last forward's n rows were classified right."""
        return self.loss.count_correct(self.blobs[-1].data[:n], self.labels[:n])

    # ---- inspection -----------------------------------------------------------------------
    def parameter_count(self) -> int:
        return self.params.size

    def named_buffers(self):
        """("<layer path>.<name>", array) of every layer's buffers (BatchNorm's running
        statistics), nested layers included: the state beside the parameters."""
        for path, layer in walk(self.layers):
            for name, array in layer.buffers.items():
                yield f"{path}.{name}", array

    def min_batch_rows(self) -> int:
        """The smallest training batch every layer can take (see Layer.min_rows)."""
        return max((layer.min_rows for _, layer in walk(self.layers)), default=1)

    def layer_parameters(self, index: int) -> dict:
        """name -> array of the index-th layer's parameters, with those of the layers inside it
        named by their path below it ("body.0.weight")."""
        named = {}
        for path, layer in walk([self.layers[index]]):
            prefix = path.partition(".")[2]
            named.update({(f"{prefix}.{k}" if prefix else k): v for k, v in layer.params.items()})
        return named

    def summary(self) -> str:
        lines = [f"input {self.input_shape}"]
        for index, (layer, shape) in enumerate(zip(self.layers, self.shapes[1:])):
            count = sum(int(np.prod(p.shape)) for p in self.layer_parameters(index).values())
            lines.append(f"{layer.describe():<40} -> {str(shape):<16} {count:>9} params")
        if self.loss is not None:
            lines.append(self.loss.name)
        lines.append(f"{self.parameter_count()} parameters")
        return "\n".join(lines)
