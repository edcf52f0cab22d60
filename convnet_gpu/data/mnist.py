"""Fashion-MNIST and MNIST: the two datasets stored as four IDX files in the same layout.

Both are 28x28 grayscale images in 10 classes, 60000 for training and 10000 for testing, in
the files IDX_FILE_NAMES (raw or gzip-compressed). Debian packages them as dataset-fashion-mnist
and dataset-mnist under /usr/share/datasets/.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .dataset import (
    Dataset,
    check_images,
    check_labels,
    check_train_subset,
    normalize_images,
    pixel_mean_std,
)
from .errors import DataError
from .idx import load_idx_pair
from .locate import DataFolder, find_data_dir

# Order: train images, train labels, test images, test labels.
IDX_FILE_NAMES: tuple[str, str, str, str] = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
IMAGE_SHAPE = (1, 28, 28)  # as loaded: (channels, height, width)

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
MNIST_CLASSES: tuple[str, ...] = tuple(str(digit) for digit in range(10))


def _idx_folder(name: str, title: str) -> DataFolder:
    return DataFolder(
        name=name,
        title=title,
        files=IDX_FILE_NAMES,
        holding=f"a folder holding the {title} IDX files {', '.join(IDX_FILE_NAMES)} (raw or .gz)",
        default_dirs=(f"/usr/share/datasets/{name}",),
        apt_package=f"dataset-{name}",
        gz_ok=True,
    )


FASHION_MNIST_FOLDER = _idx_folder("fashion-mnist", "Fashion-MNIST")
MNIST_FOLDER = _idx_folder("mnist", "MNIST")


def find_fashion_mnist_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The folder holding the Fashion-MNIST IDX files (see `locate.find_data_dir`)."""
    return find_data_dir(FASHION_MNIST_FOLDER, data_dir)


def find_mnist_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The folder holding the MNIST IDX files (see `locate.find_data_dir`)."""
    return find_data_dir(MNIST_FOLDER, data_dir)


def load_fashion_mnist(
    data_dir: str | os.PathLike | None = None, train_subset: int | None = None
) -> Dataset:
    """Load Fashion-MNIST from `data_dir` or where FASHION_MNIST_FOLDER says to look."""
    return load_idx_dataset(FASHION_MNIST_FOLDER, FASHION_MNIST_CLASSES, data_dir, train_subset)


def load_mnist(
    data_dir: str | os.PathLike | None = None, train_subset: int | None = None
) -> Dataset:
    """Load MNIST digits from `data_dir` or where MNIST_FOLDER says to look."""
    return load_idx_dataset(MNIST_FOLDER, MNIST_CLASSES, data_dir, train_subset)


def load_idx_dataset(
    folder: DataFolder,
    classes: Sequence[str],
    data_dir: str | os.PathLike | None = None,
    train_subset: int | None = None,
) -> Dataset:
    """Load an MNIST-layout IDX dataset and normalize it with training stats.

    Mean/std come from ALL training pixels (before `train_subset` is applied),
    so normalization does not depend on the subset size.
    """
    directory = find_data_dir(folder, data_dir)
    paths = [folder.file(directory, name) for name in IDX_FILE_NAMES]
    train_images, train_labels = load_idx_pair(paths[0], paths[1])
    test_images, test_labels = load_idx_pair(paths[2], paths[3])
    check_images(paths[0], train_images, "training")
    check_images(paths[2], test_images, "test")
    _check_image_sizes(paths[0], train_images, paths[2], test_images)
    check_labels(paths[1], train_labels, len(classes))
    check_labels(paths[3], test_labels, len(classes))

    mean, std = pixel_mean_std(train_images)
    if std == 0.0:
        raise DataError(f"{paths[0]}: training pixels have zero variance; cannot normalize")
    keep = check_train_subset(train_subset, train_images.shape[0])
    return Dataset(
        train_x=normalize_images(train_images[:keep], mean, std),
        train_y=train_labels[:keep].astype(np.int32),
        test_x=normalize_images(test_images, mean, std),
        test_y=test_labels.astype(np.int32),
        classes=tuple(classes),
        mean=mean,
        std=std,
    )


def _check_image_sizes(train_path, train: np.ndarray, test_path, test: np.ndarray) -> None:
    if train.shape[1:] != test.shape[1:]:
        raise DataError(
            f"image size mismatch: {train_path} has {train.shape[1]}x{train.shape[2]} images "
            f"but {test_path} has {test.shape[1]}x{test.shape[2]}"
        )
