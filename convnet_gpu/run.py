"""From a run's settings to what it trains on and with: the data split into loaders, the net
and the optimizer. `train`, `--resume` and `eval` all build through here, so a resumed or
evaluated run is exactly the run its checkpoint's settings describe.
"""

from __future__ import annotations

from dataclasses import dataclass

from .data import MinibatchLoader
from .distributed.shares import batch_share
from .errors import ModelError
from .layers import SoftmaxCrossEntropy
from .models import build_model
from .net import Net
from .optim import build_optimizer
from .selection import split_validation
from .settings import RunSettings, SettingError


@dataclass
class TrainingData:
    """The loaders of a run: training batches, the validation split (or None), the test set."""

    train: MinibatchLoader
    val: MinibatchLoader | None
    test: MinibatchLoader

    @classmethod
    def split(cls, dataset, settings: RunSettings) -> TrainingData:
        """Hold out settings.val_split of the training set (seeded), batch everything."""
        train_x, train_y = dataset.train_x, dataset.train_y
        val = None
        if settings.val_split:
            (train_x, train_y), (val_x, val_y) = split_validation(
                dataset, settings.val_split, settings.seed
            )
            val = MinibatchLoader(val_x, val_y, settings.batch_size)
        train = MinibatchLoader(train_x, train_y, settings.batch_size)
        test = MinibatchLoader(dataset.test_x, dataset.test_y, settings.batch_size)
        return cls(train, val, test)

    def check_last_batch(self, net, ranks: int = 1, per_rank_statistics: bool = False) -> None:
        """A last training batch too small for a layer (BatchNorm over flat features needs two
        rows) is refused before training instead of failing at the end of an epoch; with
        per-rank BatchNorm statistics (`bn` local), so is a rank's block of any batch."""
        batch_size = self.train.batch_size
        last_rows = self.train.num_samples % batch_size
        if 0 < last_rows < net.min_batch_rows():
            raise SettingError(
                "batch_size",
                f"the last training batch would hold {last_rows} image(s), fewer than the "
                f"{net.min_batch_rows()} a BatchNorm over flat features needs; change the batch "
                f"size or the training subset",
            )
        if per_rank_statistics and ranks > 1 and _has_batchnorm(net):
            needed = max(1, net.min_batch_rows())
            smallest = min(batch_share(rows, ranks - 1, ranks).rows  # the last rank's block
                           for rows in (batch_size, last_rows or batch_size))  # fmt: skip
            if smallest < needed:
                raise SettingError(
                    "batch_size",
                    f"with `bn` local each of the {ranks} ranks normalizes its own rows, and a "
                    f"rank would get {smallest} of a batch (BatchNorm needs {needed}); change "
                    f"the batch size or the training subset, or use `bn` sync",
                )


def _has_batchnorm(net) -> bool:
    from .layers.base import walk
    from .layers.norm import BatchNorm

    return any(isinstance(layer, BatchNorm) for _, layer in walk(net.layers))


def build_net(settings: RunSettings, backend, dataset, batch_size: int | None = None) -> Net:
    """The settings' model with its loss, set up for the dataset's images and classes."""
    classes = dataset.num_classes
    layers = build_model(settings.model, classes)
    net = Net(layers, SoftmaxCrossEntropy(settings.label_smoothing), backend, seed=settings.seed)
    net.setup(batch_size or settings.batch_size, dataset.input_shape)
    if net.output_shape != (classes,):
        raise ModelError(
            f"{settings.model}: its last layer gives {net.output_shape[0]} outputs but the "
            f"dataset has {classes} classes; end the model with a Dense of {classes}"
        )
    return net


def build_run_optimizer(settings: RunSettings, net):
    return build_optimizer(
        settings.optimizer,
        settings.lr,
        settings.momentum,
        settings.weight_decay,
        max_grad_norm=settings.max_grad_norm,
    ).setup(net)


def load_dataset(name: str, data_dir=None, train_subset=None):
    """The named dataset (see data/registry.py), normalized, from data_dir or its default places."""
    from .data import dataset_info

    return dataset_info(name).load(data_dir, train_subset=train_subset)
