"""Training-level checks: the controlled-overfitting sanity check, the schedule, the trainer."""

from __future__ import annotations

import math

import numpy as np
import pytest
from train_helpers import build_trainer

from convnet_gpu import SGD, Net, SoftmaxCrossEntropy, build_model
from convnet_gpu.data import DataError, Dataset, load_fashion_mnist
from convnet_gpu.errors import TrainingDiverged
from convnet_gpu.settings import SettingError
from convnet_gpu.train import overfit


def small_training_set(count: int = 64):
    """The first `count` Fashion-MNIST images when the package is installed, else synthetic ones."""
    try:
        data = load_fashion_mnist(train_subset=count)
        return data.train_x, data.train_y
    except DataError:
        rng = np.random.default_rng(0)
        return (
            rng.standard_normal((count, 1, 28, 28)).astype(np.float32),
            rng.integers(0, 10, count).astype(np.int32),
        )


def test_simple_cnn_overfits_64_images_to_100_percent(backend):
    """The seed's sanity check: a correct net memorizes a tiny training set."""
    images, labels = small_training_set(64)
    net = Net(build_model("simple-cnn"), SoftmaxCrossEntropy(), backend, seed=0).setup(
        32, (1, 28, 28)
    )
    steps, accuracy = overfit(
        net, SGD(lr=0.01, momentum=0.9).setup(net), images, labels, max_steps=300
    )
    assert steps is not None, f"training accuracy {accuracy} after 300 steps"
    assert accuracy == 1.0


def test_overfit_reports_failure_when_it_cannot_learn():
    images, labels = small_training_set(64)
    net = Net(build_model("simple-cnn"), SoftmaxCrossEntropy(), seed=0).setup(32, (1, 28, 28))
    steps, accuracy = overfit(
        net, SGD(lr=1e-9, momentum=0.0).setup(net), images, labels, max_steps=4
    )
    assert steps is None and accuracy < 1.0


def tiny_dataset(train=70, test=30, seed=0):
    rng = np.random.default_rng(seed)
    make_x = lambda n: rng.standard_normal((n, 1, 12, 12)).astype(np.float32)
    make_y = lambda n: rng.integers(0, 3, n).astype(np.int32)
    return Dataset(
        make_x(train), make_y(train), make_x(test), make_y(test), ("a", "b", "c"), 0.0, 1.0
    )


def tiny_net(backend=None):
    from convnet_gpu.layers import Bias, Conv2D, Dense, Flatten, MaxPool2D, ReLU

    layers = [Conv2D(4, 3, pad=1), Bias(), ReLU(), MaxPool2D(2), Flatten(), Dense(3), Bias()]
    net = Net(layers, SoftmaxCrossEntropy(), backend, seed=1)
    return net.setup(16, (1, 12, 12))


def test_trainer_counts_every_image_including_the_last_partial_batch(tmp_path):
    data = tiny_dataset()
    net = tiny_net()
    trainer = build_trainer(net, data, tmp_path, epochs=1, batch_size=16)
    summary = trainer.fit()
    assert trainer.totals.count == 30  # the last pass was the 30-image test set (16 + 14)
    # test accuracy is a multiple of 1/30, so every test image was counted exactly once
    assert math.isclose(summary["test_accuracy"] * 30, round(summary["test_accuracy"] * 30))
    assert trainer.position.step == 5  # ceil(70 / 16) training steps


def test_trainer_evaluation_matches_a_direct_count():
    data = tiny_dataset()
    net = tiny_net()
    trainer = build_trainer(net, data, epochs=1, batch_size=16)
    loss, accuracy = trainer.evaluate()
    correct, losses = 0, []
    for start in range(0, 30, 16):
        n = net.load_batch(data.test_x[start : start + 16], data.test_y[start : start + 16])
        logits = net.backend.to_host(net.forward(n, train=False)).astype(np.float64)
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        losses += list(-log_probs[np.arange(n), data.test_y[start : start + n]])
        correct += int((logits.argmax(axis=1) == data.test_y[start : start + n]).sum())
    assert accuracy == correct / 30
    assert loss == pytest.approx(np.mean(losses), rel=1e-5)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_diverging_run_stops_with_a_message():
    data = tiny_dataset()
    data.train_x[:] = 1e30  # overflows float32 arithmetic in the first step
    net = tiny_net()
    trainer = build_trainer(net, data, epochs=1, batch_size=16)
    with pytest.raises(TrainingDiverged, match="lower `lr`"):
        trainer.fit()


def test_val_split_holds_out_a_seeded_share_and_records_val_metrics():
    data = tiny_dataset(train=100)
    net = tiny_net()
    trainer = build_trainer(net, data, epochs=2, batch_size=16, val_split=0.2, seed=5)
    assert trainer.data.train.num_samples == 80 and trainer.data.val.num_samples == 20
    held_out = {tuple(row.ravel()[:3]) for row in trainer.data.val.x}
    trained = {tuple(row.ravel()[:3]) for row in trainer.data.train.x}
    assert not held_out & trained  # disjoint
    trainer.fit()
    assert all(
        {"val_loss", "val_accuracy", "lr"} <= record.keys() for record in trainer.epoch_metrics
    )


def test_early_stopping_and_plateau_need_a_validation_split():
    for needs_validation in ({"early_stop": 2}, {"plateau": True}):
        with pytest.raises(SettingError, match="validation accuracy") as refusal:
            build_trainer(tiny_net(), tiny_dataset(), **needs_validation)
        assert refusal.value.setting == "val_split"


def test_early_stopping_stops_after_patience_epochs_without_improvement(monkeypatch):
    data = tiny_dataset(train=60)
    net = tiny_net()
    trainer = build_trainer(net, data, epochs=10, batch_size=16, val_split=0.25, early_stop=2)
    accuracies = iter([0.5, 0.6, 0.6, 0.55, 0.9, 0.9])
    real_evaluate = trainer.evaluate
    monkeypatch.setattr(
        trainer,
        "evaluate",
        lambda loader=None: (
            (1.0, next(accuracies)) if loader is trainer.data.val else real_evaluate(loader)
        ),
    )
    summary = trainer.fit()
    assert summary["epochs_run"] == 4 and summary["stopped_early"]  # best at 2; 3 and 4 no better


def test_plateau_rule_restores_the_best_parameters_halves_lr_and_resets_momentum(monkeypatch):
    data = tiny_dataset(train=60)
    net = tiny_net()
    optimizer = SGD(0.01, momentum=0.9).setup(net)
    trainer = build_trainer(
        net, data, optimizer=optimizer, epochs=3, batch_size=16, val_split=0.25, plateau=True,
        schedule="constant",
    )  # fmt: skip
    accuracies = iter([0.6, 0.4, 0.7])
    snapshots = []
    real_evaluate = trainer.evaluate

    def evaluate(loader=None):
        if loader is trainer.data.val:
            snapshots.append(net.params.data.copy())
            return 1.0, next(accuracies)
        return real_evaluate(loader)

    monkeypatch.setattr(trainer, "evaluate", evaluate)
    trainer.train_epoch()
    trainer._end_epoch(0.0, 0.0, 1.0, 1)  # epoch 1: 0.6, the best so far
    trainer.train_epoch()
    trainer._end_epoch(0.0, 0.0, 1.0, 1)  # epoch 2: 0.4, a regression
    assert np.array_equal(net.params.data, snapshots[0])  # the epoch-1 parameters are back
    assert not np.any(optimizer.velocity)  # momentum reset
    trainer.train_epoch()
    assert optimizer.lr == pytest.approx(0.005)  # halved for the next epoch's steps
