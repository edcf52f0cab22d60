"""What a training loop watches without a host round trip per step: running loss and accuracy
totals, and a window of step losses checked for NaN/inf every NAN_CHECK_STEPS steps."""

from __future__ import annotations

import numpy as np

from .errors import TrainingDiverged

NAN_CHECK_STEPS = 50


class DeviceTotals:
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


class NanWatch:
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
