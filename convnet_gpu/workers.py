"""A net's step on several CPU threads: each worker runs its own copy of the layers on a
contiguous slice of the batch.

The copies compute on row slices of the net's own blobs (views), read the net's one parameter
buffer, and write their parameter gradients into buffers of their own (worker 0 into the net's),
which are then added in a fixed order; the weights of the net's top-level Dense layers, whose
gradient is as big as the weight whatever the rows, get it once, over the whole batch, split
over the threads by rows of the weight; those of 1 MiB or more (simple-cnn's first) run over the
whole batch altogether: the workers run the spans of layers between them, and the group computes
such a layer split over the threads by columns of its output (and, in backward, by rows of its
weight). Everything a worker needs besides the blobs (im2col
buffers, masks, BatchNorm's normalized input) is its own, allocated once in setup. Layers that
look across rows ask their BatchRows (layers/base.py): Dropout draws its rows' part of the
batch's masks, the loss divides by the whole batch, and BatchNorm adds its per-channel sums over
all workers (all_reduce: between two barriers worker 0 adds the slots in worker order, and over
the ranks of a distributed run, and every worker copies its sums). So a step is deterministic
for a given number of threads, and equals the one-thread step up to the order in which float
sums are added.

NumPy releases the GIL inside its array operations and BLAS calls, so the workers really run at
once; BLAS itself is kept to one thread (backends/numpy_backend.py), so the threads do not
compete with a second pool of BLAS threads.
"""

from __future__ import annotations

import copy
import threading

from .backends.numpy_backend import split_evenly
from .blob import Blob
from .chain import Chain
from .layers.base import BatchRows, parameter_owners, walk
from .layers.dense import Dense

# A top-level Dense weight at least this big runs over the whole batch (_dense_forward).
WHOLE_BATCH_DENSE_BYTES = 1 << 20


class WorkerGroup:
    """The workers of a set-up net; net.forward and net.backward hand their work to run()."""

    def __init__(self, net, templates, threads: int):
        slices = split_evenly(net.batch_size, threads)  # each worker's rows
        self.net, self.pool = net, net.backend.pool
        self.barrier = threading.Barrier(len(slices))
        self.slots = [None] * len(slices)  # each worker's arrays during an all_reduce
        self.reduced = None  # worker 0's sums of the current all_reduce, which all copy
        self.workers = [
            Worker(net, copy.deepcopy(templates), index, rows.start, rows.stop - rows.start, self)
            for index, rows in enumerate(slices)
        ]
        self.dense_weights = _top_level_dense_weights(net)  # (chain index, param index)
        for worker in self.workers:
            for chain_index, _ in self.dense_weights:
                worker.layers[chain_index].weight_grad_elsewhere = True
        # The gradients the workers' copies take, which are added up: all but those weights.
        skipped = sorted(net.params.span(index) for _, index in self.dense_weights)
        self.summed_spans = _complement(skipped, net.params.size)
        # Dense layers whose weight outgrows a core's cache run over the whole batch, between
        # the workers' spans of layers (_dense_forward, _dense_backward).
        self.whole_batch = _whole_batch_dense(net, self.dense_weights)
        self.spans = _spans_between(len(net.layers), sorted(self.whole_batch))
        _check_no_stage_crosses(self.workers[0].chain, self.whole_batch)

    def __len__(self) -> int:
        return len(self.workers)

    # ---- a step ---------------------------------------------------------------------------
    def forward(self, n: int, train: bool, share):
        """The n rows of a step, which are rows [share.first, share.first + n) of a global
        batch of share.total rows (layers/base.py BatchRows)."""
        for span in self.spans:
            self._run(lambda worker, span=span: worker.forward(n, train, span, share))
            if span.stop in self.whole_batch:
                self._dense_forward(n, span.stop)
        loss = self.net.loss
        if loss is not None:  # the batch's mean loss: the workers' shares, added in order
            shares = [worker.loss.loss for worker in self.workers]
            _add_in_order(self.net.backend.xp, shares, loss.loss)
        return self.net.blobs[-1].data[:n]

    def backward(self, n: int) -> None:
        for span in reversed(self.spans):
            if span.stop in self.whole_batch:
                self._dense_backward(n, span.stop, self.whole_batch[span.stop], input_grad=True)
            self._run(lambda worker, span=span: worker.backward(n, span))
        for chain_index, param_index in self.dense_weights:
            if chain_index not in self.whole_batch:  # the workers made its dx
                self._dense_backward(n, chain_index, param_index, input_grad=False)
        grads = [worker.grad for worker in self.workers]  # worker 0's is the net's
        xp = self.net.backend.xp
        for start, stop in self.summed_spans:

            def add_chunk(chunk: slice, start=start) -> None:
                part = slice(start + chunk.start, start + chunk.stop)
                for grad in grads[1:]:
                    xp.add(grads[0][part], grad[part], out=grads[0][part])

            self.net.backend.in_chunks(stop - start, add_chunk)

    # A Dense layer over the whole batch. Each worker's copy would read the whole weight (fc1 of
    # simple-cnn: 12.8 MB, beyond a core's cache) for its few rows, in forward and again for
    # dx: T threads streamed it 2T times a step. Split by columns of y in forward and by rows of
    # the weight in backward, the threads read it twice in all; measured on 2 Zen 3 cores, fc1's
    # forward at batch 128 took 6.1 ms split by rows of x and 5.0 ms by columns of y.
    def _dense_forward(self, n: int, chain_index: int) -> None:
        net, xp = self.net, self.net.backend.xp
        x, y = net.blobs[chain_index].data[:n], net.blobs[chain_index + 1].data[:n]
        weight = net.layers[chain_index].params["weight"]  # (in, out)
        net.backend.in_chunks(
            weight.shape[1], lambda cols: xp.matmul(x, weight[:, cols], out=y[:, cols])
        )

    def _dense_backward(self, n: int, chain_index: int, param_index: int, input_grad: bool):
        """A top-level Dense's weight gradient x.T @ dy over the whole batch (the workers wrote
        their rows of x and dy into the net's blobs), and with input_grad its dx = dy @ W.T,
        both split over the threads by rows of the weight: one GEMM with all n rows, where each
        worker would take a thin one and write the whole gradient, and no sum of those copies
        afterwards (at 8 threads they dominated)."""
        net, xp = self.net, self.net.backend.xp
        x, dx = net.blobs[chain_index].rows(n)
        dy = net.blobs[chain_index + 1].grad[:n]
        weight = net.layers[chain_index].params["weight"]  # (in, out)
        grad = net.params.views(param_index, net.params.grad)

        def rows_of_weight(rows: slice) -> None:
            xp.matmul(x[:, rows].T, dy, out=grad[rows])
            if input_grad and dx is not None:
                xp.matmul(dy, weight[rows].T, out=dx[:, rows])

        net.backend.in_chunks(len(weight), rows_of_weight)

    def _run(self, job) -> None:
        """job(worker) on every worker at once; an error in one stops the others (their
        barrier breaks) and is raised here."""
        futures = [self.pool.submit(self._guarded, job, worker) for worker in self.workers]
        errors = [future.exception() for future in futures]
        self.barrier.reset()  # a broken barrier is usable again for the next step
        first = next((e for e in errors if e and not isinstance(e, threading.BrokenBarrierError)),
                     next((e for e in errors if e), None))  # fmt: skip
        if first is not None:
            raise first

    def _guarded(self, job, worker) -> None:
        try:
            job(worker)
        except BaseException:
            self.barrier.abort()
            raise

    # ---- what BatchNorm needs across workers -------------------------------------------------
    def all_reduce(self, index: int, arrays: tuple, scratch: tuple, ranks=None) -> None:
        """Called by every worker with arrays of the same shapes: each ends up holding their
        sum over the workers, added in worker order by worker 0 (the same bits on every
        worker), and then over the ranks of `ranks` (a Communicator, or None: this process)."""
        xp = self.net.backend.xp
        self.slots[index] = arrays
        self.barrier.wait()  # every worker's arrays are in place
        if index == 0:
            for k, total in enumerate(scratch):
                _add_in_order(xp, [slot[k] for slot in self.slots], total)
                if ranks is not None:
                    ranks.all_reduce_sum(total)
            self.reduced = scratch
        self.barrier.wait()  # worker 0's sums are done and every slot was read: overwrite
        for array, total in zip(arrays, self.reduced):
            xp.copyto(array, total)

    # ---- state the workers copy from the net ----------------------------------------------------
    def copy_state_from_net(self) -> None:
        """Give every worker's layers the net's layer state (Dropout's step after a checkpoint
        is loaded, say): walk() pairs each net layer with the worker's copy of it."""
        for worker in self.workers:
            for (_, own), (_, theirs) in zip(walk(self.net.layers), walk(worker.layers)):
                scalars = own.state_scalars()
                if scalars:
                    theirs.load_state_scalars(scalars)


def _add_in_order(xp, parts, out) -> None:
    """out = parts[0] + parts[1] + ..., added in that order (the same bits wherever it runs)."""
    xp.copyto(out, parts[0])
    for part in parts[1:]:
        xp.add(out, part, out=out)


def _top_level_dense_weights(net) -> list[tuple[int, int]]:
    """(chain index, parameter index) of every Dense weight in the net's chain itself (a Dense
    nested in a block keeps its per-worker gradient)."""
    return [
        (int(path), index)
        for index, (path, layer, spec) in enumerate(parameter_owners(net.layers, net.input_shape))
        if "." not in path and isinstance(layer, Dense) and spec.name == "weight"
    ]


def _whole_batch_dense(net, dense_weights) -> dict[int, int]:
    """chain index -> parameter index of the top-level Dense layers whose weight is at least
    WHOLE_BATCH_DENSE_BYTES."""
    whole_batch = {}
    for chain_index, param_index in dense_weights:
        start, stop = net.params.span(param_index)
        if (stop - start) * net.dtype.itemsize >= WHOLE_BATCH_DENSE_BYTES:
            whole_batch[chain_index] = param_index
    return whole_batch


def _check_no_stage_crosses(chain, whole_batch) -> None:
    """The spans between whole-batch layers must cut the chain between its stages (a fused
    stage holding such a layer would run in a span it does not start in)."""
    for stage in chain.stages:
        if any(stage.first < index <= stage.last for index in whole_batch):
            raise AssertionError(f"a fused stage {stage} holds a whole-batch layer")


def _spans_between(layer_count: int, whole_batch: list[int]) -> list[range]:
    """The spans of layers the workers run, split at each whole-batch layer (which the group
    runs after the span that ends at it): 10 layers with 4 whole-batch -> [0, 4), [5, 10)."""
    spans, start = [], 0
    for index in whole_batch:
        spans.append(range(start, index))
        start = index + 1
    spans.append(range(start, layer_count))
    return spans


def _complement(spans: list[tuple[int, int]], size: int) -> list[tuple[int, int]]:
    """The parts of [0, size) outside the sorted, disjoint spans."""
    gaps, position = [], 0
    for start, stop in spans:
        if start > position:
            gaps.append((position, start))
        position = stop
    if position < size:
        gaps.append((position, size))
    return gaps


class Worker:
    """Copies of a net's layers (and loss), set up for rows [first, first + rows) of its blobs."""

    def __init__(self, net, templates, index: int, first: int, rows: int, group: WorkerGroup):
        be, dtype = net.backend, net.dtype
        self.layers, self.loss = templates
        self.first, self.size = first, rows
        self.rows = BatchRows(index, group)
        net.seed_random_layers(self.layers)
        self.grad = net.params.grad if index == 0 else be.zeros(net.params.grad.shape, dtype)
        net.bind_parameters(self.layers, self.grad)  # the net's weights, read by all
        for _, layer in walk(self.layers):
            layer.rows = self.rows
        self.chain = Chain(self.layers)
        in_rows = slice(first, first + rows)
        views = [Blob(b.data[in_rows], None if b.grad is None else b.grad[in_rows])
                 for b in net.blobs]  # fmt: skip
        self.input, self.output = views[0], views[-1]
        self.chain.setup(be, rows, dtype, net.input_shape, blobs=views[1:])
        self.labels = net.labels[in_rows]
        if self.loss is not None:
            self.loss.rows = self.rows
            self.loss.setup(be, net.output_shape, rows, dtype)
        self._share_buffers(net)

    def _share_buffers(self, net) -> None:
        """The net's layer buffers (BatchNorm's running statistics) in place of the copies':
        one set of statistics, updated by worker 0 alone. Worker 0 also advances the net's
        Dropout counters (the others keep their own, advancing in step), so the net's layers
        hold the state a checkpoint saves."""
        for (_, own), (_, theirs) in zip(walk(net.layers), walk(self.layers)):
            for name in theirs.buffers:
                theirs.buffers[name] = own.buffers[name]
            if self.rows.index == 0 and getattr(own, "counter", None) is not None:
                theirs.counter = own.counter

    def _rows(self, n: int) -> int:
        return max(0, min(self.size, n - self.first))

    def _span_input(self, span: range):
        """The input blob (a row view) of a span's first layer."""
        return self.input if span.start == 0 else self.chain.blobs[span.start - 1]

    def forward(self, n: int, train: bool, span: range, share) -> None:
        rows = self._rows(n)  # a worker past the batch's end still joins the all_reduces
        self.rows.place(share.first + self.first, share.total, n)
        output = self.chain.forward(self._span_input(span).data[:rows], train, span)
        if self.loss is not None and span.stop == len(self.layers):
            self.loss.forward(output, self.labels[:rows])

    def backward(self, n: int, span: range) -> None:
        rows = self._rows(n)
        if self.loss is not None and span.stop == len(self.layers):
            self.loss.backward(self.output.grad[:rows])
        x, dx = self._span_input(span).rows(rows)
        self.chain.backward(x, dx, span=span)
