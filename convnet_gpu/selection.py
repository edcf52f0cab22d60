"""Model selection on a validation split: the split itself, early stopping, and the seed's
plateau rule (restore the best state, halve the learning rate, reset momentum)."""

from __future__ import annotations

import numpy as np

from .checkpoint import layer_buffers
from .optim import PlateauRule


class Selection:
    """Decisions driven by validation accuracy: keeping the best state, early stopping, and the
    seed's plateau rule (on a regression: restore the best parameters and BatchNorm statistics,
    halve the learning rate, reset momentum). The best copies are allocated once, on the device.
    """

    def __init__(self, net, optimizer, early_stop: int | None, plateau: bool):
        self.net, self.optimizer = net, optimizer
        self.early_stop, self.plateau = early_stop, plateau
        self.rule = PlateauRule()
        self.epochs_since_best = 0
        self.best = None
        if plateau:
            self.best = {"params": net.params.data.copy()}
            self.best.update({key: array.copy() for key, array in layer_buffers(net)})

    @property
    def lr_scale(self) -> float:
        return self.rule.lr_scale if self.plateau else 1.0

    def after_epoch(self, val_accuracy: float) -> str:
        """Act on one validation result; returns "stop" when early stopping ends the run."""
        decision = self.rule.observe(val_accuracy)
        self.epochs_since_best = (
            0 if decision == PlateauRule.NEW_BEST else self.epochs_since_best + 1
        )
        if self.plateau and decision == PlateauRule.NEW_BEST:
            self._copy(self.live(), self.best)
        elif self.plateau and decision == PlateauRule.RESTORE:
            self._copy(self.best, self.live())
            self.optimizer.reset_state()
        if self.early_stop and self.epochs_since_best >= self.early_stop:
            return "stop"
        return "continue"

    def live(self) -> dict:
        return {"params": self.net.params.data, **dict(layer_buffers(self.net))}

    def _copy(self, source: dict, target: dict) -> None:
        for key, array in target.items():
            self.net.backend.xp.copyto(array, source[key])

    def state(self) -> dict:
        return {
            "best": self.rule.best,
            "lr_scale": self.rule.lr_scale,
            "regressions": self.rule.regressions,
            "epochs_since_best": self.epochs_since_best,
        }

    def load_state(self, state: dict, arrays: dict) -> None:
        self.rule.best, self.rule.lr_scale = state["best"], state["lr_scale"]
        self.rule.regressions, self.epochs_since_best = (
            state["regressions"],
            state["epochs_since_best"],
        )
        if self.best is not None:
            for key, array in self.best.items():
                self.net.backend.copy_from_host(arrays[f"best.{key}"], array)


def split_validation(dataset, share: float, seed: int):
    """(train, validation) parts of the training set: a seeded random `share` held out."""
    if not 0 < share < 1:
        raise ValueError(f"--val-split must be between 0 and 1 (exclusive), got {share}")
    count = len(dataset.train_y)
    held_out = int(round(count * share))
    if not 0 < held_out < count:
        raise ValueError(f"--val-split {share} of {count} training images leaves an empty part")
    order = np.random.default_rng([seed, 1]).permutation(count)
    val, train = np.sort(order[:held_out]), np.sort(order[held_out:])
    return (dataset.train_x[train], dataset.train_y[train]), (
        dataset.train_x[val],
        dataset.train_y[val],
    )
