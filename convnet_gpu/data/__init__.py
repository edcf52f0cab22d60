"""Dataset loading (IDX / Fashion-MNIST / MNIST / CIFAR-10), downloads and minibatching."""

from .batching import MinibatchLoader, iterate_minibatches
from .cifar import CIFAR10_CLASSES, find_cifar10_dir, load_cifar10, read_cifar_batch

# `download` (the function) is not re-exported: `convnet_gpu.data.download` stays the module.
from .download import SOURCES, DatasetSource, dataset_cache_dir, fetch_dataset
from .errors import DataError
from .fashion_mnist import (
    DEFAULT_DIRS,
    FASHION_MNIST_CLASSES,
    IDX_FILE_NAMES,
    MNIST_CLASSES,
    MNIST_DEFAULT_DIRS,
    Dataset,
    find_dataset_dir,
    find_idx_file,
    load_fashion_mnist,
    load_idx_dataset,
    load_mnist,
    normalize_images,
    pixel_mean_std,
)
from .idx import load_idx_pair, read_idx

__all__ = [
    "CIFAR10_CLASSES",
    "SOURCES",
    "DatasetSource",
    "dataset_cache_dir",
    "fetch_dataset",
    "find_cifar10_dir",
    "load_cifar10",
    "read_cifar_batch",
    "DEFAULT_DIRS",
    "FASHION_MNIST_CLASSES",
    "IDX_FILE_NAMES",
    "MNIST_CLASSES",
    "MNIST_DEFAULT_DIRS",
    "DataError",
    "Dataset",
    "MinibatchLoader",
    "find_dataset_dir",
    "find_idx_file",
    "iterate_minibatches",
    "load_fashion_mnist",
    "load_idx_dataset",
    "load_idx_pair",
    "load_mnist",
    "normalize_images",
    "pixel_mean_std",
    "read_idx",
]
