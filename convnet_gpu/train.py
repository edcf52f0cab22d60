"""Trainer: the epoch loop, evaluation, checkpoints and progress display.

The Trainer composes the parts of a run: the net, the optimizer, the data loaders (run.py), the
position in training (position.py), model selection (selection.py), the run folder (rundir.py),
the device-side totals and NaN watch (watch.py), and the communicator of the ranks it trains
with (distributed/; Local, whose collectives do nothing, when it trains alone). Each rank takes
its contiguous block of every global batch; between backward and the optimizer the flat
gradient is summed over the ranks (each rank's loss is its share of the global batch's mean, so
the sum is the global gradient), and every decision that ends a run (Ctrl-C, early stopping, a
NaN) is taken together, from figures summed over the ranks or a flag all-reduced.
Loss and accuracy are accumulated on the device and read once per epoch; step losses are
checked for NaN/inf every NAN_CHECK_STEPS steps.

A checkpoint is written after every epoch (and on Ctrl-C, mid-epoch). With the epoch's sample
order, the position in it and the RNG state, a resumed run continues exactly where the run
stopped: on the CPU the result is bitwise identical to an uninterrupted run (with the same
number of threads and the same compiled kernels: numba there or not, Winograd's convolution on
or off). The module is the epoch loop and what must sit next to it (evaluation,
Ctrl-C, the progress line); each part with state of its own lives in its own module.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from contextlib import contextmanager

import numpy as np
from tqdm import tqdm

from .augment import Jitter
from .checkpoint import copy_net_state, load_part, save_checkpoint
from .checkpoint_schema import check_run_state, settings_of
from .distributed import Local, batch_share
from .errors import RanksDiffer, TrainingDiverged, TrainingInterrupted, UserError
from .limits import check_fits, free_host_bytes
from .numerics import quiet_float_errors
from .position import Position
from .replay import StepRunner
from .run import TrainingData
from .schedules import scheduled_lr
from .selection import Selection
from .settings import RunSettings
from .watch import NAN_CHECK_STEPS, DeviceTotals, NanWatch

# Each step's lr: a Python float in a list, its float64 copy, the device table's value.
_LR_TABLE_BYTES_PER_STEP = 8 + 24 + 8 + 8


class _StopBetweenSteps(Exception):
    """Raised at a step boundary after a Ctrl-C, where the run's state is consistent."""


class Trainer:
    """Trains `net` with `optimizer` on `data` as `settings` say; writes into `run_dir` (a
    RunDir, or None for no files). `meta` (JSON-able) goes into summary.json and checkpoints
    beside the settings; `progress` None shows a bar only when stderr is a terminal. `comm`
    (a distributed.Communicator; None: Local, this process alone) is the ranks it trains with:
    each must pass its own, with `run_dir` None on all but the root."""

    def __init__(
        self,
        net,
        optimizer,
        data: TrainingData,
        settings: RunSettings,
        run_dir=None,
        log=print,
        progress: bool | None = None,
        meta: dict | None = None,
        cuda_graph: str = "auto",
        comm=None,
    ):
        self.net, self.optimizer, self.data, self.settings = net, optimizer, data, settings
        self.run_dir, self.log, self.progress = run_dir, log, progress
        self.meta = dict(meta or {})
        self.comm = comm if comm is not None else Local()
        data.check_last_batch(net, self.comm.size, per_rank_statistics=not net.rows.sync_statistics)
        backend = net.backend
        self.selection = Selection(net, optimizer, settings.early_stop, settings.plateau)
        self.jitter = Jitter(settings.jitter, settings.flip, settings.seed)
        self.jitter.setup(backend, settings.batch_size, net.input_shape, net.dtype)
        self.totals = DeviceTotals(backend)
        self.nan_watch = NanWatch(backend, net.dtype)
        self.base_lr = settings.lr
        self.position = Position.start(settings.seed)
        self._stop_requested = False
        self.resumed = False  # restore() ran: the settings are a saved run's
        self.total_steps = settings.epochs * len(data.train)
        # The device side of a step: its counter (jitter and the lr table read it there), and
        # every step's learning rate, so a replayed step needs nothing from the host.
        self.clock = backend.counter(0)
        check_fits(
            f"the learning-rate table of {self.total_steps} steps",
            self.total_steps * _LR_TABLE_BYTES_PER_STEP, free_host_bytes(), "this machine",
            "lower `epochs` or raise `batch_size`", by_settings=True,
        )  # fmt: skip
        self.lr_table = backend.zeros((max(self.total_steps, 1),), net.dtype)
        self._table_scale = None  # the plateau rule's lr scale the table was written with
        optimizer.follow_schedule(self.lr_table, self.clock)
        # A step is keyed by its global batch's rows: a full one is the same work on each rank.
        if not self.comm.capturable:  # its collectives are host work: no CUDA graph
            cuda_graph = "off"
        self.train_step = StepRunner(
            backend, self._train_work, settings.batch_size, cuda_graph, log
        )
        self.eval_step = StepRunner(backend, self._eval_work, settings.batch_size, cuda_graph, log)

    @property
    def finished(self) -> bool:
        """All epochs done, or stopped early: fit() has nothing left to do."""
        return self.position.epoch > self.settings.epochs or self.position.stopped_early

    @property
    def epoch_metrics(self) -> list:
        return self.position.epoch_metrics

    # ---- one step, as device work (replay.py can record it once and replay it) -----------------
    def _share(self, total: int):
        """This rank's block of a global batch of `total` rows (all of it alone)."""
        return batch_share(total, self.comm.rank, self.comm.size)

    def _train_work(self, total: int) -> None:
        net, share = self.net, self._share(total)
        first, n = share.first, share.rows
        self.jitter.apply(net.input.data[:n], self.clock, first)  # (seed, step, global row)
        net.forward(n, train=True, share=share)  # the loss: this rank's share of the mean
        net.backward(n)
        self.comm.all_reduce_sum(net.params.grad)  # the global batch's gradient, on every rank
        self.optimizer.step()  # its lr: lr_table[clock]
        self.totals.add(net.loss.loss, net.count_correct(n), total)
        self.nan_watch.record(net.loss.loss, self.clock)
        net.backend.increment(self.clock)

    def _eval_work(self, total: int) -> None:
        share = self._share(total)
        self.net.forward(share.rows, train=False, share=share)
        self.totals.add(self.net.loss.loss, self.net.count_correct(share.rows), total)

    def _load(self, images, labels) -> None:
        """This rank's rows of a batch into the net (a rank may hold none of a short one)."""
        if len(images):
            self.net.load_batch(images, labels)

    def _write_lr_table(self) -> None:
        """Every step's learning rate into the device table (again when the plateau rule has
        changed its scale)."""
        scale = self.selection.lr_scale
        if scale == self._table_scale:
            return
        schedule, total = self.settings.schedule, max(self.total_steps, 1)
        rates = [scale * scheduled_lr(schedule, self.base_lr, s, total) for s in range(total)]
        self.net.backend.copy_from_host(np.asarray(rates, dtype=self.net.dtype), self.lr_table)
        self._table_scale = scale

    # ---- one pass ---------------------------------------------------------------------------
    def train_epoch(self) -> tuple[float, float, float, int]:
        """Finish the current epoch from its next batch: (mean loss, accuracy, seconds, images).

        The figures cover the batches run in this call (all of them unless resumed).
        """
        net, totals, pos, loader = self.net, self.totals, self.position, self.data.train
        comm = self.comm
        order = pos.draw_order(loader.num_samples)
        totals.reset()
        bar = tqdm(
            total=len(loader),
            initial=pos.next_batch,
            desc=f"epoch {pos.epoch}",
            unit="batch",
            leave=False,
            disable=None if self.progress is None else not self.progress,
        )
        start = time.perf_counter()
        self._write_lr_table()
        self.clock.fill(pos.step)
        for images, labels, share in loader.rank_batches(
            order, pos.next_batch, comm.rank, comm.size
        ):
            if comm.any(self._stop_requested):  # Ctrl-C on any rank stops them all here
                raise _StopBetweenSteps
            self._load(images, labels)
            self.train_step.run(share.total)
            totals.count_images(share.total)
            pos.step += 1
            pos.next_batch += 1
            if pos.step % NAN_CHECK_STEPS == 0:
                self.nan_watch.check(comm)
            bar.update(1)
        self.nan_watch.check(comm)
        net.backend.synchronize()
        seconds = time.perf_counter() - start
        bar.close()
        loss, accuracy = totals.read(comm)
        if not math.isfinite(loss):
            raise TrainingDiverged(f"the training loss became {loss} in epoch {pos.epoch}")
        return loss, accuracy, seconds, totals.count

    def evaluate(self, loader=None) -> tuple[float, float]:
        """(mean loss, accuracy) over a loader (the test set by default), in inference mode: each
        rank scores its block of every batch, and the sums are added over the ranks."""
        totals, loader, comm = self.totals, loader or self.data.test, self.comm
        totals.reset()
        in_order = np.arange(loader.num_samples)
        for images, labels, share in loader.rank_batches(in_order, 0, comm.rank, comm.size):
            self._load(images, labels)
            self.eval_step.run(share.total)
            totals.count_images(share.total)
        return totals.read(comm)

    # ---- the run ----------------------------------------------------------------------------
    def fit(self) -> dict:
        """Train up to settings.epochs (from where a resumed run stands); returns the summary."""
        started = time.perf_counter()
        train_seconds, trained_images = 0.0, 0
        try:
            with self._ctrl_c_stops_at_a_step_boundary(), quiet_float_errors():
                while not self.finished:
                    train_loss, train_acc, seconds, images = self.train_epoch()
                    train_seconds += seconds
                    trained_images += images
                    self._end_epoch(train_loss, train_acc, seconds, images)
        except _StopBetweenSteps:
            self.nan_watch.check(self.comm)  # never save diverged parameters over a good one
            saved = self.save_checkpoint()
            raise TrainingInterrupted(
                f"interrupted in epoch {self.position.epoch} after batch "
                f"{self.position.next_batch}" + (f"; saved {saved}" if saved else ""),
                saved,
                between_steps=True,
            ) from None
        except KeyboardInterrupt:  # a second Ctrl-C, mid-step: saving now could save a torn state
            raise TrainingInterrupted(
                f"stopped at once in epoch {self.position.epoch}"
                + self._kept_checkpoint("the checkpoint of the last finished epoch")
            ) from None
        except RanksDiffer:
            raise  # no lower learning rate helps
        except TrainingDiverged as exc:
            raise TrainingDiverged(
                f"{exc}; {self._divergence_advice()}"
                + self._kept_checkpoint("the last good checkpoint")
            ) from None
        last = self.epoch_metrics[-1]
        summary = {
            **self.settings.to_meta(),
            **self.meta,
            "test_accuracy": last["test_accuracy"],
            "test_loss": last["test_loss"],
            "epochs_run": len(self.epoch_metrics),
            "stopped_early": self.position.stopped_early,
            "images_per_second": trained_images / train_seconds if train_seconds else 0.0,
            "seconds": time.perf_counter() - started,
            "train_seconds": train_seconds,
        }
        if self.run_dir is not None:
            self.run_dir.write_summary(summary)
        return summary

    def _divergence_advice(self) -> str:
        """What to lower: the learning rate, and weight decay too where it is on (a large decay
        diverges at any lr); in a new run where this one was resumed."""
        settings = self.settings
        advice = f"lower `lr` (now {settings.lr})"
        if settings.weight_decay:
            advice += f" or `weight_decay` (now {settings.weight_decay})"
        if self.resumed:
            return f"a resumed run keeps its settings: start a new run (`out`) and there {advice}"
        return advice

    def _kept_checkpoint(self, which: str) -> str:
        if self.run_dir is None or not self.run_dir.checkpoint.exists():
            return ""
        return f"; {which} ({self.run_dir.checkpoint}) is kept"

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
        self._share_running_statistics()
        if self.data.val is not None:
            record["val_loss"], record["val_accuracy"] = self.evaluate(self.data.val)
            decision = self.selection.after_epoch(record["val_accuracy"])
            val_note = f"val acc {record['val_accuracy']:.4f}  "
            # The same summed accuracy gives every rank the same decision; the flag makes sure.
            if self.comm.any(decision == "stop"):
                pos.stopped_early = True
                val_note += f"(no better for {self.settings.early_stop} epochs: stopping)  "
        record["test_loss"], record["test_accuracy"] = self.evaluate()
        _check_finite_evaluation(record, pos.epoch)  # a NaN epoch is never saved as a good one
        self._check_ranks_agree(pos.epoch)
        record.update(seconds=seconds, images_per_second=images / seconds)
        pos.next_epoch(record)
        self.log(
            f"epoch {record['epoch']}/{self.settings.epochs}  train loss {train_loss:.4f}  "
            f"{val_note}test acc {record['test_accuracy']:.4f}  "
            f"{record['images_per_second']:.0f} img/s  {seconds:.1f} s"
        )
        if self.run_dir is not None:  # the checkpoint first: metrics never run ahead of it
            self.save_checkpoint()
            self.run_dir.write_metrics(pos.epoch_metrics)

    def _share_running_statistics(self) -> None:
        """Every rank takes rank 0's layer buffers (BatchNorm's running statistics) before they
        are used or saved: the same bits already with synchronized statistics; with per-rank
        statistics (`bn` local) each rank's own drifted apart during the epoch."""
        for _, array in self.net.named_buffers():
            self.comm.broadcast_array(array)

    def _check_ranks_agree(self, epoch: int) -> None:
        """Every rank must hold the parameters rank 0 is about to save: they take the same steps
        from the same sums, and a difference means the sums were not the same bits everywhere.
        Once an epoch, a digest per rank (nothing at all alone)."""
        net = self.net
        buffers = (array for _, array in net.named_buffers())
        arrays = (net.backend.to_host(array) for array in (net.params.data, *buffers))  # lazy
        if not self.comm.same_on_every_rank(arrays):
            raise RanksDiffer(
                f"the ranks' parameters differ after epoch {epoch}: their all-reduce did not give "
                f"every rank the same sum (an MPI or NCCL without reproducible reductions?)"
            )

    # ---- checkpoints ------------------------------------------------------------------------
    def parts(self) -> dict:
        """The parts of the run whose state a checkpoint keeps beside the net's."""
        return {"optimizer": self.optimizer, "position": self.position, "selection": self.selection}

    def save_checkpoint(self):
        """Write the run's state to its folder's checkpoint (atomically); None without one."""
        if self.run_dir is None:
            return None
        meta = {"settings": self.settings.to_meta(), **self.meta}
        return save_checkpoint(self.run_dir.checkpoint, self.net, meta, self.parts())

    def restore(self, meta: dict, arrays: dict, path="checkpoint") -> None:
        """Continue from a checkpoint written by save_checkpoint (read_checkpoint's output);
        all of it is checked against this run before any of it is copied."""
        saved = settings_of(meta, path)
        if saved != self.settings:
            changed = next(
                name for name in RunSettings.names()
                if getattr(saved, name) != getattr(self.settings, name)
            )  # fmt: skip
            raise UserError(
                f"{path}: the checkpoint was trained with `{changed}` = "
                f"{getattr(saved, changed)!r}, not {getattr(self.settings, changed)!r}; resume "
                f"with the run's own settings"
            )
        check_run_state(meta, arrays, self, path)
        copy_net_state(meta, arrays, self.net)
        for name, part in self.parts().items():
            load_part(meta, arrays, name, part, path)
        self.resumed = True


def _check_finite_evaluation(record: dict, epoch: int) -> None:
    """A finite training loss can still give NaN on the test or validation set (weights just
    past the edge): such an epoch diverged too, and its checkpoint must not be written."""
    for key in ("val_loss", "test_loss"):
        if key in record and not math.isfinite(record[key]):
            what = key.replace("_", " ")
            raise TrainingDiverged(f"the {what} became {record[key]} after epoch {epoch}")


def overfit(net, optimizer, images, labels, max_steps: int = 500) -> tuple[int | None, float]:
    """The sanity check of overfitting a small subset: train on a few samples until every one
    is classified right.

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
