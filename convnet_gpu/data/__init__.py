"""Datasets: the registry of names, one module per dataset, downloads and minibatching.

registry.py   DATASETS / dataset_info: every dataset's name, loader, folder search, shape
dataset.py    the Dataset every loader returns, normalization, checks shared by loaders
mnist.py      Fashion-MNIST and MNIST (four IDX files each); idx.py reads an IDX file
cifar10.py    CIFAR-10 python batches; unpickler.py is the restricted unpickler they need
locate.py     the folder search all datasets share (--data-dir, Debian folders, cache)
download.py   SOURCES and fetch_dataset; transfer.py moves one file, archive.py untars
batching.py   minibatch iteration over host arrays
"""

from .batching import MinibatchLoader, iterate_minibatches
from .cifar10 import CIFAR10_CLASSES, find_cifar10_dir, load_cifar10, read_cifar_batch
from .dataset import (
    Dataset,
    channel_mean_std,
    normalize_channels,
    normalize_images,
    pixel_mean_std,
)

# `download` (the function) is not re-exported: `convnet_gpu.data.download` stays the module.
from .download import SOURCES, DatasetSource, dataset_cache_dir, fetch_dataset
from .errors import DataError
from .idx import load_idx_pair, read_idx
from .locate import DataFolder, find_data_dir
from .mnist import (
    FASHION_MNIST_CLASSES,
    IDX_FILE_NAMES,
    MNIST_CLASSES,
    find_fashion_mnist_dir,
    find_mnist_dir,
    load_fashion_mnist,
    load_idx_dataset,
    load_mnist,
)
from .registry import DATASETS, DatasetInfo, dataset_info

__all__ = [
    "CIFAR10_CLASSES",
    "DATASETS",
    "FASHION_MNIST_CLASSES",
    "IDX_FILE_NAMES",
    "MNIST_CLASSES",
    "SOURCES",
    "DataError",
    "DataFolder",
    "Dataset",
    "DatasetInfo",
    "DatasetSource",
    "MinibatchLoader",
    "channel_mean_std",
    "dataset_cache_dir",
    "dataset_info",
    "fetch_dataset",
    "find_cifar10_dir",
    "find_data_dir",
    "find_fashion_mnist_dir",
    "find_mnist_dir",
    "iterate_minibatches",
    "load_cifar10",
    "load_fashion_mnist",
    "load_idx_dataset",
    "load_idx_pair",
    "load_mnist",
    "normalize_channels",
    "normalize_images",
    "pixel_mean_std",
    "read_cifar_batch",
    "read_idx",
]
