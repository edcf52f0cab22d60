"""Position: where a training run stands, and what it needs to continue exactly from there."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Position:
    """The next batch of `epoch` (1-based) in that epoch's sample order, and the run so far.

    `rng` draws each epoch's sample order; saving its state with the order and the batch index
    lets a resumed run see exactly the batches an uninterrupted one would have.
    """

    rng: np.random.Generator
    epoch: int = 1
    next_batch: int = 0
    step: int = 0  # optimizer steps taken so far (the schedule's clock)
    order: np.ndarray | None = None  # this epoch's sample order; None until drawn
    epoch_metrics: list = field(default_factory=list)  # one record per finished epoch
    stopped_early: bool = False

    @classmethod
    def start(cls, seed: int) -> Position:
        return cls(np.random.default_rng(seed))

    def draw_order(self, num_samples: int) -> np.ndarray:
        """This epoch's sample order, drawn once at its first batch."""
        if self.order is None:
            self.order = self.rng.permutation(num_samples)
        return self.order

    def next_epoch(self, record: dict) -> None:
        """Close the epoch with its metrics record."""
        self.epoch_metrics.append(record)
        self.epoch, self.next_batch, self.order = self.epoch + 1, 0, None

    def state(self) -> tuple[dict, dict]:
        scalars = {
            "epoch": self.epoch,
            "next_batch": self.next_batch,
            "step": self.step,
            "stopped_early": self.stopped_early,
            "rng": self.rng.bit_generator.state,
            "metrics": self.epoch_metrics,
        }
        return scalars, ({} if self.order is None else {"order": np.asarray(self.order)})

    def load_state(self, scalars: dict, arrays: dict) -> None:
        self.rng.bit_generator.state = scalars["rng"]
        self.epoch, self.next_batch = scalars["epoch"], scalars["next_batch"]
        self.step, self.stopped_early = scalars["step"], scalars["stopped_early"]
        self.epoch_metrics = list(scalars["metrics"])
        self.order = arrays.get("order")
