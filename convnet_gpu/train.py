"""Trainer: the epoch loop, evaluation, checkpoints, metrics files and progress display.

Loss and accuracy are accumulated on the device and read once per epoch; per-step losses go to
a small device window that is read every NAN_CHECK_STEPS steps, so a NaN/inf is caught (and its
step named) without a host round trip per step.

A checkpoint is written after every epoch (and on Ctrl-C, mid-epoch). It holds the sample order
of the current epoch, the position in it and the RNG state, so `--resume` continues exactly
where the run stopped: on the CPU the result is bitwise identical to an uninterrupted run.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .augment import Jitter
from .checkpoint import CHECKPOINT_NAME, load_into, read_checkpoint, save_checkpoint
from .data import MinibatchLoader
from .fileio import write_json_atomic, write_jsonl_atomic
from .layers import BatchNorm
from .layers.base import walk
from .optim import scheduled_lr
from .selection import Selection, split_validation

NAN_CHECK_STEPS = 50


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


class TrainingInterrupted(Exception):
    """Ctrl-C during training; a checkpoint was saved when the run has an output folder."""


class _StopBetweenSteps(Exception):
    """Raised at a step boundary after a Ctrl-C, where the run's state is consistent."""


@dataclass
class TrainConfig:
    epochs: int = 2
    batch_size: int = 64
    seed: int = 0
    schedule: str = "cosine"
    val_split: float = 0.0  # share of the training set held out for validation
    early_stop: int | None = None  # stop after this many epochs without a better val accuracy
    plateau: bool = False  # the seed's rule on a val regression (see Selection)
    jitter: int = 0  # random shift of up to this many pixels (0: none) ...
    flip: bool = False  # ... and random horizontal flips, on the device
    out_dir: str | None = None
    progress: bool | None = None  # None: a bar only when stderr is a terminal


@dataclass
class Position:
    """Where training stands: the next batch of `epoch` (1-based), in that epoch's sample order."""

    epoch: int = 1
    next_batch: int = 0
    step: int = 0  # optimizer steps taken so far (the schedule's clock)
    order: np.ndarray | None = None  # this epoch's sample order; None until drawn
    history: list = field(default_factory=list)
    stopped_early: bool = False


class _DeviceTotals:
    """Running sums of loss*n and correct predictions, kept as 0-d device arrays."""

    def __init__(self, backend):
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


class _NanWatch:
    """Keeps the last NAN_CHECK_STEPS step losses on the device; checks them in one read."""

    def __init__(self, backend, dtype):
        self.backend = backend
        self.window = backend.zeros((NAN_CHECK_STEPS,), dtype)
        self.first_step = 0
        self.filled = 0

    def record(self, loss, step: int):
        if self.filled == 0:
            self.first_step = step
        self.backend.xp.copyto(self.window[self.filled : self.filled + 1], loss)
        self.filled += 1
        if self.filled == NAN_CHECK_STEPS:
            self.check()

    def check(self):
        losses = self.backend.to_host(self.window[: self.filled])
        self.filled = 0
        bad = np.flatnonzero(~np.isfinite(losses))
        if bad.size:
            step = self.first_step + int(bad[0]) + 1
            raise TrainingDiverged(f"the training loss became {losses[bad[0]]} at step {step}")


class Trainer:
    def __init__(self, net, optimizer, dataset, config: TrainConfig, log=print, meta=None):
        self.net, self.optimizer, self.dataset, self.config = net, optimizer, dataset, config
        self.log = log
        self.meta = dict(meta or {})
        train_x, train_y = dataset.train_x, dataset.train_y
        self.val_loader = None
        if config.val_split:
            (train_x, train_y), (val_x, val_y) = split_validation(
                dataset, config.val_split, config.seed
            )
            self.val_loader = MinibatchLoader(val_x, val_y, config.batch_size)
        elif config.early_stop or config.plateau:
            raise ValueError(
                "early stopping and the plateau rule watch validation accuracy: "
                "add --val-split (e.g. 0.1)"
            )
        self.train_loader = MinibatchLoader(train_x, train_y, config.batch_size)
        _check_last_batch(net, self.train_loader)
        self.test_loader = MinibatchLoader(dataset.test_x, dataset.test_y, config.batch_size)
        self.selection = Selection(net, optimizer, config.early_stop, config.plateau)
        self.jitter = Jitter(config.jitter, config.flip, config.seed)
        self.jitter.setup(net.backend, config.batch_size, net.input_shape, net.dtype)
        self.totals = _DeviceTotals(net.backend)
        self.nan_watch = _NanWatch(net.backend, net.dtype)
        self.rng = np.random.default_rng(config.seed)
        self.base_lr = optimizer.lr
        self.position = Position()
        self._stop_requested = False
        self.total_steps = config.epochs * len(self.train_loader)

    @property
    def checkpoint_path(self) -> Path | None:
        return Path(self.config.out_dir) / CHECKPOINT_NAME if self.config.out_dir else None

    @property
    def finished(self) -> bool:
        """All epochs done, or stopped early: fit() has nothing left to do."""
        return self.position.epoch > self.config.epochs or self.position.stopped_early

    @property
    def history(self) -> list:
        return self.position.history

    @property
    def step_count(self) -> int:
        return self.position.step

    # ---- one pass ---------------------------------------------------------------------------
    def train_epoch(self) -> tuple[float, float, float, int]:
        """Finish the current epoch from its next batch: (mean loss, accuracy, seconds, images).

        The figures cover the batches run in this call (all of them unless resumed).
        """
        net, totals, pos = self.net, self.totals, self.position
        if pos.order is None:
            pos.order = self.rng.permutation(self.train_loader.num_samples)
        totals.reset()
        bar = tqdm(
            total=len(self.train_loader),
            initial=pos.next_batch,
            desc=f"epoch {pos.epoch}",
            unit="batch",
            leave=False,
            disable=self._bar_disabled(),
        )
        start = time.perf_counter()
        for images, labels in self.train_loader.batches(pos.order, pos.next_batch):
            if self._stop_requested:
                raise _StopBetweenSteps
            n = net.load_batch(images, labels)
            self.jitter.apply(net.input.data[:n], pos.step)  # depends on (seed, step) only
            net.forward(n, train=True)
            net.backward(n)
            self.optimizer.lr = self.selection.lr_scale * scheduled_lr(
                self.config.schedule, self.base_lr, pos.step, self.total_steps
            )
            self.optimizer.step()
            totals.add(net.loss.loss, net.count_correct(n), n)
            self.nan_watch.record(net.loss.loss, pos.step)
            pos.step += 1
            pos.next_batch += 1
            bar.update(1)
        self.nan_watch.check()
        net.backend.synchronize()
        seconds = time.perf_counter() - start
        bar.close()
        loss, accuracy = totals.read()
        if not math.isfinite(loss):
            raise TrainingDiverged(f"the training loss became {loss} in epoch {pos.epoch}")
        return loss, accuracy, seconds, totals.count

    def evaluate(self, loader=None) -> tuple[float, float]:
        """(mean loss, accuracy) over a loader (the test set by default), in inference mode."""
        net, totals = self.net, self.totals
        totals.reset()
        for images, labels in (loader or self.test_loader).epoch():
            n = net.load_batch(images, labels)
            net.forward(n, train=False)
            totals.add(net.loss.loss, net.count_correct(n), n)
        return totals.read()

    # ---- the run ----------------------------------------------------------------------------
    def fit(self) -> dict:
        """Train up to config.epochs (from where a resumed run stands); returns the summary."""
        config, started = self.config, time.perf_counter()
        train_seconds, trained_images = 0.0, 0
        try:
            with self._ctrl_c_stops_at_a_step_boundary():
                while self.position.epoch <= config.epochs and not self.position.stopped_early:
                    train_loss, train_acc, seconds, images = self.train_epoch()
                    train_seconds += seconds
                    trained_images += images
                    self._end_epoch(train_loss, train_acc, seconds, images)
        except _StopBetweenSteps:
            self.nan_watch.check()  # never save diverged parameters over a good checkpoint
            saved = self.save_checkpoint()
            where = f"; saved {saved}, continue with --resume {config.out_dir}" if saved else ""
            raise TrainingInterrupted(
                f"interrupted in epoch {self.position.epoch} after batch "
                f"{self.position.next_batch}{where}"
            ) from None
        except KeyboardInterrupt:  # a second Ctrl-C, mid-step: saving now could save a torn state
            kept = (
                f"; the checkpoint of the last finished epoch ({self.checkpoint_path}) is kept"
                if self.checkpoint_path and self.checkpoint_path.exists()
                else ""
            )
            raise TrainingInterrupted(
                f"stopped at once in epoch {self.position.epoch}{kept}"
            ) from None
        except TrainingDiverged as exc:
            kept = (
                f"; the last good checkpoint ({self.checkpoint_path}) is kept"
                if self.checkpoint_path and self.checkpoint_path.exists()
                else ""
            )
            raise TrainingDiverged(f"{exc}; lower --lr (now {self.base_lr}){kept}") from None
        last = self.history[-1]
        summary = {
            **self.meta,
            "test_accuracy": last["test_accuracy"],
            "test_loss": last["test_loss"],
            "epochs": config.epochs,
            "epochs_run": len(self.history),
            "stopped_early": self.position.stopped_early,
            "images_per_second": trained_images / train_seconds if train_seconds else 0.0,
            "seconds": time.perf_counter() - started,
            "train_seconds": train_seconds,
        }
        if config.out_dir:
            write_json_atomic(Path(config.out_dir) / "summary.json", summary)
        return summary

    @contextmanager
    def _ctrl_c_stops_at_a_step_boundary(self):
        """First Ctrl-C: finish the current step, then stop (and save). A second one: stop now."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def request_stop(signum, frame):
            self._stop_requested = True
            signal.signal(signal.SIGINT, previous)

        previous = signal.signal(signal.SIGINT, request_stop)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _end_epoch(self, train_loss, train_acc, seconds, images):
        pos = self.position
        record = {
            "epoch": pos.epoch,
            "train_loss": train_loss,
            "train_accuracy": train_acc,
            "lr": self.optimizer.lr,
        }
        val_note = ""
        if self.val_loader is not None:
            record["val_loss"], record["val_accuracy"] = self.evaluate(self.val_loader)
            decision = self.selection.after_epoch(record["val_accuracy"])
            val_note = f"val acc {record['val_accuracy']:.4f}  "
            if decision == "stop":
                pos.stopped_early = True
                val_note += f"(no better for {self.config.early_stop} epochs: stopping)  "
        record["test_loss"], record["test_accuracy"] = self.evaluate()
        record.update(seconds=seconds, images_per_second=images / seconds)
        pos.history.append(record)
        pos.epoch, pos.next_batch, pos.order = pos.epoch + 1, 0, None
        self.log(
            f"epoch {record['epoch']}/{self.config.epochs}  train loss {train_loss:.4f}  "
            f"{val_note}test acc {record['test_accuracy']:.4f}  "
            f"{record['images_per_second']:.0f} img/s  {seconds:.1f} s"
        )
        if self.config.out_dir:
            write_jsonl_atomic(Path(self.config.out_dir) / "metrics.jsonl", pos.history)
            self.save_checkpoint()

    # ---- checkpoints ------------------------------------------------------------------------
    def save_checkpoint(self) -> Path | None:
        """Write the run's state to out_dir/checkpoint.npz (atomically); None without out_dir."""
        if self.checkpoint_path is None:
            return None
        pos = self.position
        meta = {
            **self.meta,
            "position": {
                "epoch": pos.epoch,
                "next_batch": pos.next_batch,
                "step": pos.step,
                "stopped_early": pos.stopped_early,
            },
            "selection": self.selection.state(),
            "history": pos.history,
            "rng": self.rng.bit_generator.state,
            "base_lr": self.base_lr,
            "config": {
                "epochs": self.config.epochs,
                "batch_size": self.config.batch_size,
                "seed": self.config.seed,
                "schedule": self.config.schedule,
            },
        }
        extra = {f"best.{key}": array for key, array in (self.selection.best or {}).items()}
        return save_checkpoint(
            self.checkpoint_path, self.net, self.optimizer, meta, pos.order, extra
        )

    def resume(self, path) -> dict:
        """Load a checkpoint written by save_checkpoint and continue from its position."""
        meta, arrays = read_checkpoint(path)
        load_into(meta, arrays, self.net, self.optimizer, path)
        saved = meta["config"]
        if saved["batch_size"] != self.config.batch_size:
            raise ValueError(
                f"the checkpoint was trained with batch size {saved['batch_size']}; "
                f"resume with --batch-size {saved['batch_size']}"
            )
        self.rng.bit_generator.state = meta["rng"]
        self.base_lr = meta["base_lr"]
        position = meta["position"]
        self.position = Position(
            position["epoch"],
            position["next_batch"],
            position["step"],
            arrays.get("order"),
            list(meta["history"]),
            position["stopped_early"],
        )
        self.selection.load_state(meta["selection"], arrays)
        return meta

    def _bar_disabled(self):
        return None if self.config.progress is None else not self.config.progress


def _check_last_batch(net, loader) -> None:
    """A last training batch of one image cannot pass a BatchNorm over flat features (its
    variance is undefined): say so before training instead of failing at the end of an epoch."""
    if loader.num_samples % loader.batch_size != 1:
        return
    for path, layer in walk(net.layers):
        if isinstance(layer, BatchNorm) and len(layer.broadcast_shape) == 1:  # over (n, F)
            raise ValueError(
                f"the last training batch would hold 1 image, which BatchNorm on flat "
                f"features (layer {path}) cannot normalize; change --batch-size or "
                f"--train-subset"
            )


def overfit(net, optimizer, images, labels, max_steps: int = 500) -> tuple[int | None, float]:
    """The seed's sanity check: train on a few samples until every one is classified right.

    Batches of net.batch_size cycle over the samples; after each pass the samples are scored
    in inference mode. Returns (steps taken to reach 100% training accuracy or None, the last
    accuracy).
    """
    batch, count = net.batch_size, len(images)
    starts = range(0, count, batch)
    steps, accuracy = 0, 0.0
    while steps < max_steps:
        for start in starts:
            n = net.load_batch(images[start : start + batch], labels[start : start + batch])
            net.forward(n, train=True)
            net.backward(n)
            optimizer.step()
            steps += 1
        correct = 0
        for start in starts:
            n = net.load_batch(images[start : start + batch], labels[start : start + batch])
            net.forward(n, train=False)
            correct += int(net.count_correct(n))
        accuracy = correct / count
        if accuracy == 1.0:
            return steps, accuracy
    return None, accuracy
