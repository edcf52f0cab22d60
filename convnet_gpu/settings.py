"""RunSettings: the one schema of a training run's settings, with every default in one place.

A setting is something that decides what a run computes: the model, the data, the optimizer and
its schedule, regularization, the seed. `train` builds RunSettings from its flags, writes them
once into every checkpoint and summary.json, and `--resume` and `eval` rebuild the run from
them. How a run executes (device, output folder, progress bar) is not a setting: a run may be
resumed on another device.

Adding a setting is one field here plus its parser line in cli/parser.py; nothing else copies
fields.
This module imports nothing heavy, so `convnet-gpu --help` stays fast.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields

from .errors import UserError

OPTIMIZERS = ("sgd", "nesterov", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "step", "onecycle")
CUDA_GRAPH_MODES = ("auto", "on", "off")  # how steps run on CUDA: not a setting (see replay.py)
PRECISIONS = ("fp32", "tf32")  # float32 matrix products: exact fp32, or TF32 on tensor cores
# The largest hyper-parameter (lr, weight decay, gradient norm) a run takes: float32's largest
# number, since the device holds them in the net's dtype (a larger one overflows to inf there).
FLOAT32_MAX = 3.4028234663852886e38
MAX_JITTER = 2**31 - 1  # the jitter kernels' int32 pad


class SettingError(UserError):
    """A setting's value cannot be used; `setting` names the field (see errors.py on names)."""

    def __init__(self, setting: str, problem: str):
        super().__init__(f"`{setting}`: {problem}")
        self.setting, self.problem = setting, problem


@dataclass(frozen=True)
class RunSettings:
    model: str = "simple-cnn"  # a named model or a .toml model file
    dataset: str = "fashion-mnist"
    epochs: int = 2
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float = 0.02  # the peak learning rate of the schedule
    momentum: float = 0.9  # sgd and nesterov only
    weight_decay: float = 0.0
    max_grad_norm: float | None = None  # clip the gradient's global L2 norm
    schedule: str = "cosine"
    label_smoothing: float = 0.0
    val_split: float = 0.0  # share of the training set held out for validation
    early_stop: int | None = None  # epochs without a better validation accuracy
    plateau: bool = False  # the plateau rule on a validation regression (selection.py)
    jitter: int = 0  # random shift of up to this many pixels
    flip: bool | None = None  # random horizontal flips; None: on exactly when jitter is
    seed: int = 0
    train_subset: int | None = None  # the first N training images only
    precision: str = "fp32"  # float32 matrix products: fp32, or tf32 on CUDA tensor cores

    def __post_init__(self):
        if self.flip is None:  # resolved once, so a stored run always names its real flip
            object.__setattr__(self, "flip", self.jitter > 0)
        if (self.early_stop or self.plateau) and not self.val_split:
            raise SettingError(
                "val_split",
                "early stopping and the plateau rule watch validation accuracy; "
                "hold out a share of the training set (e.g. 0.1)",
            )

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(field.name for field in fields(cls))

    @classmethod
    def from_args(cls, args) -> RunSettings:
        """The settings an argparse namespace gives; absent attributes take the defaults."""
        return cls(**cls.given(args))

    @classmethod
    def given(cls, args) -> dict:
        """The settings present on `args` (the CLI leaves unset flags off the namespace)."""
        return {name: getattr(args, name) for name in cls.names() if hasattr(args, name)}

    def to_meta(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_meta(cls, meta: dict) -> RunSettings:
        """Settings stored by to_meta(); unknown keys are refused, missing ones take defaults
        (a run stored before the field existed ran with its default)."""
        unknown = set(meta) - set(cls.names())
        if unknown:
            raise SettingError(sorted(unknown)[0], "not a run setting of this convnet-gpu version")
        return cls(**meta)

    def replace(self, **changes) -> RunSettings:
        return dataclasses.replace(self, **changes)


DEFAULTS = RunSettings()
