"""A training run's settings, and building its data, net and optimizer from them.

The same settings are written into summary.json and every checkpoint, so `--resume` and
`eval --checkpoint` rebuild exactly the run that wrote them.
"""

from __future__ import annotations

from .layers import SoftmaxCrossEntropy
from .models import build_model
from .net import Net
from .optim import build_optimizer

RUN_SETTINGS = (
    "model",
    "dataset",
    "epochs",
    "batch_size",
    "optimizer",
    "lr",
    "momentum",
    "weight_decay",
    "max_grad_norm",
    "schedule",
    "label_smoothing",
    "val_split",
    "early_stop",
    "plateau",
    "jitter",
    "flip",
    "seed",
    "train_subset",
)


def settings_from_args(args) -> dict:
    settings = {name: getattr(args, name) for name in RUN_SETTINGS}
    if settings["flip"] is None:  # not given: flips come with --jitter
        settings["flip"] = settings["jitter"] > 0
    return settings


def settings_from_meta(meta: dict) -> dict:
    return {name: meta[name] for name in RUN_SETTINGS}


DATASETS = ("fashion-mnist", "mnist", "cifar-10")


def load_dataset(name: str, data_dir=None, train_subset=None):
    from .data import load_cifar10, load_fashion_mnist, load_mnist

    loaders = {"fashion-mnist": load_fashion_mnist, "mnist": load_mnist, "cifar-10": load_cifar10}
    return loaders[name](data_dir, train_subset=train_subset)


def build_net(
    model: str,
    backend,
    batch_size: int,
    input_shape,
    seed: int,
    num_classes: int = 10,
    label_smoothing: float = 0.0,
) -> Net:
    net = Net(
        build_model(model, num_classes), SoftmaxCrossEntropy(label_smoothing), backend, seed=seed
    )
    net.setup(batch_size, input_shape)
    if net.output_shape != (num_classes,):
        raise ValueError(
            f"{model}: its last layer gives {net.output_shape[0]} outputs but the "
            f"dataset has {num_classes} classes; end the model with a Dense of "
            f"{num_classes}"
        )
    return net


def build_run_optimizer(settings: dict, net):
    return build_optimizer(
        settings["optimizer"],
        settings["lr"],
        settings["momentum"],
        settings["weight_decay"],
        max_grad_norm=settings["max_grad_norm"],
    ).setup(net)
