"""What a training loop watches without a host round trip per step: running loss and accuracy
totals, and the first step whose loss was NaN or infinite. Both are device work only, so a
captured CUDA graph carries them; the host reads them once per epoch (totals) or every
NAN_CHECK_STEPS steps (the NaN watch)."""

from __future__ import annotations

import numpy as np

from .errors import TrainingDiverged

NAN_CHECK_STEPS = 50


class DeviceTotals:
    """Running sums of loss*n and correct predictions, kept as 0-d device arrays. add() is device
    work; the host counts the images itself (count_images), since a replayed step runs no Python."""

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

    def count_images(self, n: int) -> None:
        self.count += n

    def read(self, comm=None) -> tuple[float, float]:
        """(mean loss, accuracy): the one host read per pass. With `comm`, each rank's sums are
        added over the ranks (`count` is the global batch's, counted alike on every rank)."""
        sums = np.array([float(self.loss_sum), int(self.correct)], dtype=np.float64)
        if comm is not None:
            comm.all_reduce_sum(sums)  # exact for the count: integers below 2**53
        return float(sums[0]) / self.count, int(sums[1]) / self.count


class NanWatch:
    """Remembers, on the device, the first step whose loss was not finite and that loss;
    check() reads it (a host sync) and raises TrainingDiverged naming the step."""

    def __init__(self, backend, dtype):
        xp = backend.xp
        self.backend, self.xp = backend, xp
        self.first_bad_step = backend.counter(-1)  # -1: every loss so far was finite
        self.bad_loss = backend.zeros((), dtype)
        self.finite = backend.zeros((), "bool")  # then: not finite
        self.unseen = backend.zeros((), "bool")

    def record(self, loss, step) -> None:
        """Device work: if `loss` is not finite and none was before, keep `step` (a 0-d device
        counter, 0-based) and the loss."""
        xp = self.xp
        xp.isfinite(loss, out=self.finite)
        xp.logical_not(self.finite, out=self.finite)
        xp.less(self.first_bad_step, 0, out=self.unseen)
        xp.logical_and(self.unseen, self.finite, out=self.unseen)  # none before, and this one
        xp.copyto(self.first_bad_step, step, where=self.unseen)
        xp.copyto(self.bad_loss, loss, where=self.unseen)

    def check(self, comm=None) -> None:
        """Raise TrainingDiverged at the first bad step; with `comm`, every rank raises at the
        first bad step of any rank (a collective: all ranks call it at the same point)."""
        found = (int(self.first_bad_step), float(self.bad_loss))
        bad = [seen for seen in (comm.all_gather(found) if comm else [found]) if seen[0] >= 0]
        if bad:
            step, loss = min(bad)
            raise TrainingDiverged(f"the training loss became {loss} at step {step + 1}")

    def reset(self) -> None:
        self.first_bad_step.fill(-1)
