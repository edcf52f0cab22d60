"""Trainer: the epoch loop, evaluation, metrics files and progress display.

Loss and accuracy are accumulated on the device and read once per epoch, so a training step
makes no host round trip beyond copying its batch in.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .data import MinibatchLoader
from .fileio import write_json_atomic, write_jsonl_atomic
from .optim import scheduled_lr


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass
class TrainConfig:
    epochs: int = 2
    batch_size: int = 64
    seed: int = 0
    schedule: str = "cosine"
    out_dir: str | None = None
    progress: bool | None = None  # None: a bar only when stderr is a terminal


class _DeviceTotals:
    """Running sums of loss*n and correct predictions, kept as 0-d device arrays."""

    def __init__(self, backend, dtype):
        self.xp = backend.xp
        self.loss_sum = backend.zeros((), "float64")
        self.correct = backend.zeros((), "int64")
        self.batch_loss = backend.zeros((), "float64")
        self.count = 0

    def reset(self):
        self.loss_sum.fill(0)
        self.correct.fill(0)
        self.count = 0

    def add(self, mean_loss, correct, n: int):
        xp = self.xp
        xp.multiply(mean_loss, n, out=self.batch_loss)
        xp.add(self.loss_sum, self.batch_loss, out=self.loss_sum)
        xp.add(self.correct, correct, out=self.correct)
        self.count += n

    def read(self) -> tuple[float, float]:
        """(mean loss, accuracy): the one host read per pass."""
        return float(self.loss_sum) / self.count, int(self.correct) / self.count


class Trainer:
    def __init__(self, net, optimizer, dataset, config: TrainConfig, log=print, meta=None):
        self.net, self.optimizer, self.dataset, self.config = net, optimizer, dataset, config
        self.log = log
        self.meta = dict(meta or {})
        self.train_loader = MinibatchLoader(dataset.train_x, dataset.train_y, config.batch_size)
        self.test_loader = MinibatchLoader(dataset.test_x, dataset.test_y, config.batch_size)
        self.totals = _DeviceTotals(net.backend, net.dtype)
        self.rng = np.random.default_rng(config.seed)
        self.base_lr = optimizer.lr
        self.step_count = 0
        self.total_steps = config.epochs * len(self.train_loader)
        self.history: list[dict] = []

    def train_epoch(self, epoch: int) -> tuple[float, float, float]:
        """One pass over the shuffled training set: (mean loss, accuracy, seconds)."""
        net, totals = self.net, self.totals
        totals.reset()
        bar = tqdm(total=len(self.train_loader), desc=f"epoch {epoch}", unit="batch",
                   leave=False, disable=self._bar_disabled())
        start = time.perf_counter()
        for images, labels in self.train_loader.epoch(self.rng):
            n = net.load_batch(images, labels)
            net.forward(n, train=True)
            net.backward(n)
            self.optimizer.lr = scheduled_lr(self.config.schedule, self.base_lr,
                                             self.step_count, self.total_steps)
            self.optimizer.step()
            self.step_count += 1
            totals.add(net.loss.loss, net.count_correct(n), n)
            bar.update(1)
        net.backend.synchronize()
        seconds = time.perf_counter() - start
        bar.close()
        loss, accuracy = totals.read()
        if not math.isfinite(loss):
            raise TrainingDiverged(f"training loss became {loss} in epoch {epoch}; "
                                   f"lower --lr (now {self.optimizer.lr})")
        return loss, accuracy, seconds

    def evaluate(self, loader=None) -> tuple[float, float]:
        """(mean loss, accuracy) over a loader (the test set by default), in inference mode."""
        net, totals = self.net, self.totals
        totals.reset()
        for images, labels in (loader or self.test_loader).epoch():
            n = net.load_batch(images, labels)
            net.forward(n, train=False)
            totals.add(net.loss.loss, net.count_correct(n), n)
        return totals.read()

    def fit(self) -> dict:
        config, started = self.config, time.perf_counter()
        train_seconds = 0.0
        for epoch in range(1, config.epochs + 1):
            train_loss, train_acc, seconds = self.train_epoch(epoch)
            test_loss, test_acc = self.evaluate()
            train_seconds += seconds
            record = {"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_acc,
                      "test_loss": test_loss, "test_accuracy": test_acc, "seconds": seconds,
                      "images_per_second": self.train_loader.num_samples / seconds}
            self.history.append(record)
            self.log(f"epoch {epoch}/{config.epochs}  train loss {train_loss:.4f}  "
                     f"test acc {test_acc:.4f}  {record['images_per_second']:.0f} img/s  "
                     f"{seconds:.1f} s")
            self._write_metrics()
        summary = {**self.meta, "test_accuracy": self.history[-1]["test_accuracy"],
                   "test_loss": self.history[-1]["test_loss"], "epochs": config.epochs,
                   "images_per_second": self.train_loader.num_samples * config.epochs / train_seconds,
                   "seconds": time.perf_counter() - started, "train_seconds": train_seconds}
        if config.out_dir:
            write_json_atomic(Path(config.out_dir) / "summary.json", summary)
        return summary

    def _write_metrics(self):
        if self.config.out_dir:
            write_jsonl_atomic(Path(self.config.out_dir) / "metrics.jsonl", self.history)

    def _bar_disabled(self):
        return None if self.config.progress is None else not self.config.progress
