"""replay.py: a step run eagerly or replayed from a CUDA graph. On the CPU the runner runs every
step eagerly and refuses `on`; on a GPU a replayed run equals the eager run bit for bit (with
BatchNorm, Dropout, jitter, an lr schedule and a short last batch), replays allocate nothing,
and a step that allocates is refused at capture (auto falls back to eager steps)."""

from __future__ import annotations

import numpy as np
import pytest
from train_helpers import build_trainer

from convnet_gpu import Net, SoftmaxCrossEntropy
from convnet_gpu.data import Dataset
from convnet_gpu.errors import UserError
from convnet_gpu.layers import (
    BatchNorm,
    Bias,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    MaxPool2D,
    ReLU,
    Residual,
)
from convnet_gpu.replay import StepRunner, graphs_enabled


def tiny_dataset(train=70, test=30, seed=0):
    rng = np.random.default_rng(seed)
    x = lambda n: rng.standard_normal((n, 1, 12, 12)).astype(np.float32)
    y = lambda n: rng.integers(0, 3, n).astype(np.int32)
    return Dataset(x(train), y(train), x(test), y(test), ("a", "b", "c"), 0.0, 1.0)


def tiny_net(backend, seed=1):
    """Every kind of state a step changes: BatchNorm statistics, Dropout's counter, a residual."""
    block = Residual([Conv2D(4, 3, pad=1), BatchNorm(), ReLU(), Conv2D(4, 3, pad=1), BatchNorm()])
    layers = [
        Conv2D(4, 3, pad=1), BatchNorm(), ReLU(), block, ReLU(), MaxPool2D(2), Flatten(),
        Dense(8), Bias(), ReLU(), Dropout(0.25), Dense(3), Bias(),
    ]  # fmt: skip
    return Net(layers, SoftmaxCrossEntropy(), backend, seed=seed).setup(16, (1, 12, 12))


class Counting:
    """A step function that counts its eager calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, n):
        self.calls.append(n)


def test_on_the_cpu_every_step_runs_eagerly(cpu_backend):
    work = Counting()
    runner = StepRunner(cpu_backend, work, full_rows=8, mode="auto")
    for n in (8, 8, 8, 5):
        runner.run(n)
    assert work.calls == [8, 8, 8, 5] and runner.replays == 0 and not runner.enabled


def test_graphs_on_is_refused_on_the_cpu_and_modes_are_checked(cpu_backend):
    with pytest.raises(UserError, match="needs a CUDA device"):
        StepRunner(cpu_backend, Counting(), 8, mode="on")
    with pytest.raises(UserError, match="unknown `cuda_graph` mode 'sometimes'"):
        graphs_enabled(cpu_backend, "sometimes")
    assert not graphs_enabled(cpu_backend, "off") and not graphs_enabled(cpu_backend, "auto")


# ---- on a GPU ---------------------------------------------------------------------------------
def _trained(backend, mode):
    net = tiny_net(backend)
    trainer = build_trainer(
        net, tiny_dataset(), cuda_graph=mode, epochs=2, batch_size=16, lr=0.05, jitter=1,
        weight_decay=1e-3,
    )  # fmt: skip
    trainer.fit()
    host = backend.to_host
    state = {"params": host(net.params.data), "velocity": host(trainer.optimizer.velocity)}
    state.update({name: host(array) for name, array in net.named_buffers()})
    return state, trainer


@pytest.mark.gpu
def test_replayed_training_equals_eager_training_bit_for_bit(cuda_backend):
    eager, eager_trainer = _trained(cuda_backend, "off")
    replayed, trainer = _trained(cuda_backend, "on")
    assert trainer.train_step.replays > 0 and trainer.eval_step.replays > 0
    assert eager_trainer.train_step.replays == 0
    assert eager.keys() == replayed.keys()
    for key in eager:
        np.testing.assert_array_equal(replayed[key], eager[key], err_msg=key)
    for key in ("train_loss", "test_loss", "test_accuracy"):
        assert [r[key] for r in trainer.epoch_metrics] == [
            r[key] for r in eager_trainer.epoch_metrics
        ], key


@pytest.mark.gpu
def test_replays_allocate_nothing(cuda_backend):
    import cupy

    net = tiny_net(cuda_backend)
    trainer = build_trainer(net, tiny_dataset(), cuda_graph="on", epochs=1, batch_size=16)
    images = np.zeros((16, 1, 12, 12), np.float32)
    labels = np.zeros(16, np.int32)
    for _ in range(3):  # eager warm-up, capture + replay, replay
        trainer.train_step.run(net.load_batch(images, labels))
    cuda_backend.synchronize()
    pool = cupy.get_default_memory_pool()
    before = (pool.used_bytes(), pool.total_bytes())
    for _ in range(20):
        trainer.train_step.run(net.load_batch(images, labels))
    cuda_backend.synchronize()
    assert (pool.used_bytes(), pool.total_bytes()) == before
    assert trainer.train_step.replays == 22  # capture + replay, replay, and 20 more


@pytest.mark.gpu
def test_a_step_that_allocates_cannot_be_captured(cuda_backend):
    def allocating_work(n):
        cuda_backend.xp.zeros(n)  # a fresh array every step: the graph could not own it

    with pytest.raises(UserError, match="allocated"):
        runner = StepRunner(cuda_backend, allocating_work, 4, mode="on")
        for _ in range(2):
            runner.run(4)
    runner = StepRunner(cuda_backend, allocating_work, 4, mode="auto")
    for _ in range(3):
        runner.run(4)
    assert "allocated" in runner.fallback and runner.replays == 0 and not runner.enabled


@pytest.mark.gpu
def test_each_replay_sees_its_own_batch_while_the_host_runs_ahead(cuda_backend):
    """The host refills one batch buffer (as the loader does) for the next step while the GPU
    still replays the last one; every step must see the images and labels it was given."""
    xp, steps, batch = cuda_backend.xp, 40, 64
    net = Net([Flatten(), Dense(3), Bias()], SoftmaxCrossEntropy(), cuda_backend)
    net.setup(batch, (8, 8, 8))
    clock = cuda_backend.counter(0)
    positions = cuda_backend.asarray(np.arange(steps, dtype=np.int64))
    at_clock = cuda_backend.zeros((steps,), "bool")
    image_log = cuda_backend.zeros((steps,), np.float32)
    label_log = cuda_backend.zeros((steps,), np.int32)

    def record(n):  # device work: a forward pass, then pixel 0 and label 0 of the batch at [clock]
        net.forward(n, train=True)
        xp.equal(positions, clock, out=at_clock)
        xp.copyto(image_log, net.input.data[0, 0, 0, 0], where=at_clock)
        xp.copyto(label_log, net.labels[0], where=at_clock)
        cuda_backend.increment(clock)

    runner = StepRunner(cuda_backend, record, batch, mode="on")
    host_images = np.empty((batch, 8, 8, 8), np.float32)
    host_labels = np.empty(batch, np.int32)
    for step in range(steps):
        host_images.fill(step)
        host_labels.fill(step % 3)
        runner.run(net.load_batch(host_images, host_labels))
    assert runner.replays == steps - 1
    np.testing.assert_array_equal(cuda_backend.to_host(image_log), np.arange(steps))
    np.testing.assert_array_equal(cuda_backend.to_host(label_log), np.arange(steps) % 3)


@pytest.mark.gpu
def test_eager_gpu_training_follows_the_cpu(cuda_backend, cpu_backend):
    """The same run on NumPy and on CUDA (eager): the same masks and jitter (counter-based), so
    the parameters differ only by float32 rounding after an epoch of BatchNorm training."""
    states = [_trained(backend, "off")[0] for backend in (cpu_backend, cuda_backend)]
    for key in states[0]:
        np.testing.assert_allclose(states[1][key], states[0][key], rtol=1e-3, atol=1e-4,
                                   err_msg=key)  # fmt: skip
