"""The one list of datasets: the names the CLI accepts, and how to find and load each one.

`run.py` (`--dataset`), `convnet-gpu download` and `convnet-gpu info` all read `DATASETS`;
`download.SOURCES` uses the same names. `input_shape` and `num_classes` are known without
touching the data, so a benchmark can size a net for a dataset that is not installed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import cifar10, mnist
from .dataset import Dataset
from .errors import DataError


@dataclass(frozen=True)
class DatasetInfo:
    """One dataset: its CLI name, how messages name it, its loader and folder search, its shape."""

    name: str  # the CLI spelling: "fashion-mnist"
    title: str  # how messages name it: "Fashion-MNIST"
    load: Callable[..., Dataset]  # load(data_dir=None, train_subset=None) -> Dataset
    find_dir: Callable[..., Path]  # find_dir(data_dir=None) -> Path; DataError if absent
    input_shape: tuple[int, int, int]  # (channels, height, width) of one image as loaded
    num_classes: int


_ALL = (
    DatasetInfo(
        mnist.FASHION_MNIST_FOLDER.name,
        mnist.FASHION_MNIST_FOLDER.title,
        mnist.load_fashion_mnist,
        mnist.find_fashion_mnist_dir,
        mnist.IMAGE_SHAPE,
        len(mnist.FASHION_MNIST_CLASSES),
    ),
    DatasetInfo(
        mnist.MNIST_FOLDER.name,
        mnist.MNIST_FOLDER.title,
        mnist.load_mnist,
        mnist.find_mnist_dir,
        mnist.IMAGE_SHAPE,
        len(mnist.MNIST_CLASSES),
    ),
    DatasetInfo(
        cifar10.CIFAR10_FOLDER.name,
        cifar10.CIFAR10_FOLDER.title,
        cifar10.load_cifar10,
        cifar10.find_cifar10_dir,
        cifar10.IMAGE_SHAPE,
        len(cifar10.CIFAR10_CLASSES),
    ),
)
# In the order the CLI lists them; the first is the default dataset.
DATASETS: dict[str, DatasetInfo] = {info.name: info for info in _ALL}


def dataset_info(name: str) -> DatasetInfo:
    """The registry entry of `name`; a one-line DataError listing the known names if unknown."""
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}") from None
