"""Model selection on a validation split: the split itself, early stopping, and the plateau
rule of the teaching convnet this project grew from (restore the best state, halve the learning
rate, reset momentum)."""

from __future__ import annotations

import numpy as np

from .settings import SettingError


class PlateauRule:
    """The plateau rule for a validation regression, as a plain state machine.

    Call observe(val_accuracy) after each validation pass and act on what it returns:
      "new_best"                 better than every earlier accuracy: keep a copy of the parameters
      "keep_going"               equal to the best: nothing to do
      "restore_best_and_halve"   lower than the best: copy the best parameters back, call
                                 optimizer.reset_state(), and from now on use lr_scale (halved
                                 here) times the scheduled lr
    The first observation is always "new_best".
    """

    NEW_BEST, KEEP_GOING, RESTORE = "new_best", "keep_going", "restore_best_and_halve"

    def __init__(self, factor: float = 0.5):
        if not 0 < factor < 1:
            raise ValueError(f"PlateauRule needs 0 < factor < 1, got {factor}")
        self.factor = float(factor)
        self.best: float | None = None
        self.lr_scale = 1.0
        self.regressions = 0

    def observe(self, val_accuracy: float) -> str:
        accuracy = float(val_accuracy)
        if self.best is None or accuracy > self.best:
            self.best = accuracy
            return self.NEW_BEST
        if accuracy == self.best:
            return self.KEEP_GOING
        self.regressions += 1
        self.lr_scale *= self.factor
        return self.RESTORE


class Selection:
    """Decisions driven by validation accuracy: keeping the best state, early stopping, and the
    plateau rule (on a regression: restore the best parameters and BatchNorm statistics, halve
    the learning rate, reset momentum). The best copies are allocated once, on the device.
    """

    def __init__(self, net, optimizer, early_stop: int | None, plateau: bool):
        self.net, self.optimizer = net, optimizer
        self.early_stop, self.plateau = early_stop, plateau
        self.rule = PlateauRule()
        self.epochs_since_best = 0
        self.best = {key: array.copy() for key, array in self.live().items()} if plateau else None

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
        """The state the plateau rule keeps and restores: parameters and layer buffers."""
        buffers = {f"layer{name}": array for name, array in self.net.named_buffers()}
        return {"params": self.net.params.data, **buffers}

    def _copy(self, source: dict, target: dict) -> None:
        for key, array in target.items():
            self.net.backend.xp.copyto(array, source[key])

    def state(self) -> tuple[dict, dict]:
        scalars = {
            "best": self.rule.best,
            "lr_scale": self.rule.lr_scale,
            "regressions": self.rule.regressions,
            "epochs_since_best": self.epochs_since_best,
        }
        arrays = {f"best.{key}": array for key, array in (self.best or {}).items()}
        return scalars, arrays

    def load_state(self, scalars: dict, arrays: dict) -> None:
        self.rule.best, self.rule.lr_scale = scalars["best"], scalars["lr_scale"]
        self.rule.regressions = scalars["regressions"]
        self.epochs_since_best = scalars["epochs_since_best"]
        for key, array in (self.best or {}).items():
            self.net.backend.copy_from_host(arrays[f"best.{key}"], array)


def split_validation(dataset, share: float, seed: int):
    """(train, validation) parts of the training set: a seeded random `share` held out."""
    if not 0 < share < 1:
        raise SettingError("val_split", f"must be between 0 and 1 (exclusive), got {share}")
    count = len(dataset.train_y)
    held_out = int(round(count * share))
    if not 0 < held_out < count:
        raise SettingError("val_split", f"{share} of {count} training images leaves an empty part")
    order = np.random.default_rng([seed, 1]).permutation(count)
    val, train = np.sort(order[:held_out]), np.sort(order[held_out:])
    return (
        (dataset.train_x[train], dataset.train_y[train]),
        (dataset.train_x[val], dataset.train_y[val]),
    )
