"""The Layer contract: shapes, parameters, workspaces, forward and backward side by side."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ParamSpec:
    """A learnable array a layer asks the Net for. The Net allocates it in one flat buffer."""

    name: str
    shape: tuple
    init: str = "he"  # one of WEIGHT_INITS, "zeros" or "ones"
    fan_in: int = 1
    decay: bool = True  # weight decay applies (weights yes; biases and norms no)


# How Conv2D and Dense draw their weights (fan_in = inputs per output value):
#   "he":      normal with std sqrt(2 / fan_in), which keeps ReLU activations at unit scale.
#   "uniform": uniform in +-1 / sqrt(fan_in) (std 1 / sqrt(3 fan_in)), PyTorch's default for
#              Conv2d and Linear. Where BatchNorm follows, the output ignores the weight scale,
#              and the smaller scale means larger effective steps: such nets train faster.
WEIGHT_INITS = ("he", "uniform")


def check_weight_init(init: str) -> str:
    if init not in WEIGHT_INITS:
        raise ValueError(f"unknown weight init {init!r}; use one of: {', '.join(WEIGHT_INITS)}")
    return init


def init_note(init: str) -> str:
    """The describe() suffix for a non-default init."""
    return "" if init == "he" else f", init={init}"


class BatchRows:
    """Which rows of a step's batch a net computes, and how they meet the rest of the batch.

    A plain net computes all of them: first 0 of total n. When a backend runs a net on several
    threads (workers.py), each worker's copy of the layers computes a contiguous slice; when
    several processes train together (distributed/), each rank computes a contiguous share of a
    global batch, which its threads split again. The few layers that look across rows ask here:
    Dropout draws the masks of its global rows (`first`), the loss divides by the whole global
    batch (`total`), and BatchNorm adds its per-channel sums over every slice and, with
    `sync_statistics`, every rank (all_reduce), counting `statistics_rows`; worker 0 alone
    updates the running statistics its workers share.
    """

    def __init__(self, index: int = 0, group=None):
        self.first = 0  # this copy's first row in the global batch
        self.total = 0  # the global batch's rows (the step's n over every rank)
        self.process_total = 0  # the rows this process computes (all its workers')
        self.index = index  # the worker; 0 also for a net alone
        self.group = group  # the threads all_reduce goes through (None: a net alone)
        self.comm = None  # the ranks it goes through (a distributed.Communicator; None: alone)
        self.sync_statistics = True  # BatchNorm's statistics over every rank, or this one's

    def place(self, first: int, total: int, process_total: int) -> None:
        self.first, self.total, self.process_total = first, total, process_total

    @property
    def _ranks(self):
        """The communicator BatchNorm's sums go through, or None (this process alone)."""
        comm = self.comm
        return comm if self.sync_statistics and comm is not None and comm.size > 1 else None

    @property
    def statistics_rows(self) -> int:
        """The rows BatchNorm's batch statistics are taken over."""
        return self.total if self._ranks is not None else self.process_total

    @property
    def shares_statistics(self) -> bool:
        """Whether BatchNorm's sums come from other copies too (threads or ranks)."""
        return self.group is not None or self._ranks is not None

    def all_reduce(self, arrays: tuple, scratch: tuple) -> None:
        """Replace each array by its sum over the copies the statistics span (the same sum, in
        the same order, on every copy); `scratch` holds arrays like them. Alone, nothing to do."""
        ranks = self._ranks
        if self.group is not None:
            self.group.all_reduce(self.index, arrays, scratch, ranks)
        elif ranks is not None:
            for array in arrays:
                ranks.all_reduce_sum(array)


class Layer:
    """One simple operation with its own backward.

    Shapes exclude the batch dimension. `setup` allocates every workspace for `batch_size`;
    `forward(x, y, train)` and `backward(x, y, dy, dx)` only write into `y`, `dx`, the
    parameter gradients and those workspaces. `x`, `y`, `dy`, `dx` are views of the first n
    rows of their blobs; `dx` is None when nothing upstream needs the input gradient.
    `buffers` holds state that is not learned but belongs in a checkpoint (BatchNorm's running
    statistics), allocated in setup. `min_rows` is the smallest batch the layer can take in
    training (set in setup; BatchNorm over flat features needs two rows for a variance).
    `rows` (a BatchRows, set by the Net) says which rows of the batch the layer computes.
    """

    def __init__(self):
        self.params: dict = {}  # name -> array view into the Net's flat parameter buffer
        self.grads: dict = {}  # name -> array view into the Net's flat gradient buffer
        self.buffers: dict = {}  # name -> array the layer owns and updates (not learnable)
        self.backend = None
        self.min_rows = 1
        self.rows = BatchRows()  # replaced by the Net's

    @property
    def name(self) -> str:
        return type(self).__name__

    def output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def param_specs(self, input_shape: tuple) -> list[ParamSpec]:
        return []

    def setup(self, backend, input_shape: tuple, batch_size: int, dtype) -> None:
        self.backend = backend

    def forward(self, x, y, train: bool) -> None:
        raise NotImplementedError

    def backward(self, x, y, dy, dx) -> None:
        raise NotImplementedError

    def children(self) -> list[tuple[str, Layer]]:
        """(name, layer) of the layers inside this one (a residual block's branches); none here."""
        return []

    def child_inputs(self, input_shape: tuple) -> list[tuple[str, Layer, tuple]]:
        """(name, layer, its input shape) of the layers inside this one, for an input shape."""
        return []

    def state_scalars(self) -> dict:
        """Host numbers a checkpoint must keep to continue exactly (Dropout's step counter)."""
        return {}

    def load_state_scalars(self, scalars: dict) -> None:
        pass

    def check_state_scalars(self, scalars: dict) -> None:
        """ValueError unless a checkpoint's scalars (keys as state_scalars') are ones this layer
        can take; before load_state_scalars, which may trust them."""

    def describe(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return self.describe()


def walk(layers):
    """(path, layer) for every layer of a list, depth first, including those inside composites:
    paths are "3" for the fourth layer, "3.body.0" for the first layer of its body, ..."""
    for index, layer in enumerate(layers):
        yield from _walk_one(str(index), layer)


def _walk_one(path: str, layer):
    yield path, layer
    for name, child in layer.children():
        yield from _walk_one(f"{path}.{name}", child)


def walk_with_inputs(layers, input_shape):
    """(path, layer, input shape) for every layer of a list fed `input_shape`, depth first and
    in walk() order: how a Net binds each layer, nested or not, to its parameters."""
    shape = tuple(input_shape)
    for index, layer in enumerate(layers):
        yield from _walk_one_with_input(str(index), layer, shape)
        shape = tuple(layer.output_shape(shape))


def parameter_owners(layers, input_shape):
    """(path, layer, ParamSpec) for every parameter of a list fed `input_shape`, nested layers
    included, in the order of a Net's flat parameter buffer."""
    for path, layer, shape in walk_with_inputs(layers, input_shape):
        for spec in layer.param_specs(shape):
            yield path, layer, spec


def _walk_one_with_input(path: str, layer, input_shape: tuple):
    yield path, layer, input_shape
    for name, child, child_shape in layer.child_inputs(input_shape):
        yield from _walk_one_with_input(f"{path}.{name}", child, child_shape)


def per_channel(input_shape) -> tuple[tuple, tuple]:
    """How a per-channel array (Bias, BatchNorm) meets a batch of `input_shape` samples:
    (its broadcast shape, the batch axes to sum over). (C, H, W) inputs: (C, 1, 1) over
    (n, C, H, W), summing axes (0, 2, 3); flat (F,) inputs: (F,) over (n, F), summing axis 0."""
    channels, spatial_dims = input_shape[0], len(input_shape) - 1
    return (channels,) + (1,) * spatial_dims, (0,) + tuple(range(2, spatial_dims + 2))
