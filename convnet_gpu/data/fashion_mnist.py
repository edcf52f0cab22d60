"""Fashion-MNIST (and MNIST) loading from IDX files on disk."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .download import SOURCES, dataset_cache_dir
from .errors import DataError
from .idx import load_idx_pair

DEFAULT_DIRS: tuple[str, ...] = ("/usr/share/datasets/fashion-mnist",)
MNIST_DEFAULT_DIRS: tuple[str, ...] = ("/usr/share/datasets/mnist",)

# Order: train images, train labels, test images, test labels.
IDX_FILE_NAMES: tuple[str, str, str, str] = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

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

PIXEL_LEVELS = 256
PIXEL_MAX = 255.0
# Images per chunk when histogramming pixels, to bound temporary memory.
HISTOGRAM_CHUNK = 4096


@dataclass
class Dataset:
    """Normalized image classification data, NCHW float32 images."""

    train_x: np.ndarray  # float32 (N, C, H, W)
    train_y: np.ndarray  # int32 (N,)
    test_x: np.ndarray  # float32 (M, C, H, W)
    test_y: np.ndarray  # int32 (M,)
    classes: tuple[str, ...]
    # Training pixel mean/std after scaling to [0, 1]: a float for grayscale
    # datasets, a tuple with one float per channel for colour ones (CIFAR-10).
    mean: float | tuple[float, ...]
    std: float | tuple[float, ...]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def find_idx_file(directory: str | os.PathLike, name: str) -> Path | None:
    """Return `directory/name` or `directory/name.gz`, whichever exists first."""
    for candidate in (Path(directory) / name, Path(directory) / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _first_missing(directory: Path, names: Sequence[str]) -> str | None:
    for name in names:
        if find_idx_file(directory, name) is None:
            return name
    return None


def _slug(dataset_name: str) -> str:
    return dataset_name.lower().replace(" ", "-")


def _default_apt_package(dataset_name: str) -> str:
    return "dataset-" + _slug(dataset_name)


def find_dataset_dir(
    data_dir: str | os.PathLike | None,
    names: Sequence[str],
    dataset_name: str,
    *,
    default_dirs: Sequence[str] = DEFAULT_DIRS,
    apt_package: str | None = None,
    download_name: str | None = None,
) -> Path:
    """Locate a directory holding every file in `names` (each raw or `.gz`).

    An explicit `data_dir` must hold them all; otherwise `default_dirs` are
    tried in order, then the download cache `dataset_cache_dir(download_name)`
    ($CONVNET_GPU_DATA/<name> or ~/.cache/convnet_gpu/<name>, where
    `convnet-gpu download <name>` puts it; `download_name` defaults to the
    lower-cased `dataset_name`). Raises DataError with a one-line message on failure.
    """
    if data_dir is not None:
        directory = Path(data_dir)
        if not directory.is_dir():
            raise DataError(f"{directory}: --data-dir is not a directory")
        missing = _first_missing(directory, names)
        if missing is not None:
            raise DataError(
                f"{directory}: missing {missing} (or {missing}.gz); --data-dir must point "
                f"at a folder holding the {dataset_name} IDX files {', '.join(names)}"
            )
        return directory

    download_name = download_name or _slug(dataset_name)
    cache_dir = dataset_cache_dir(download_name)
    looked: list[str] = []
    for default in (*default_dirs, cache_dir):
        directory = Path(default)
        missing = _first_missing(directory, names) if directory.is_dir() else None
        if directory.is_dir() and missing is None:
            return directory
        looked.append(f"{directory} (missing {missing})" if missing else f"{directory} (absent)")

    package = apt_package or _default_apt_package(dataset_name)
    install_dir = default_dirs[0] if default_dirs else "/usr/share/datasets"
    fetch = ""
    if download_name in SOURCES:
        fetch = f"download it with `convnet-gpu download {download_name}` (saves to {cache_dir}), "
    raise DataError(
        f"{dataset_name} not found; looked in {', '.join(looked)}. "
        f"Install it with `apt-get install {package}` (Debian/Ubuntu package, installs to "
        f"{install_dir}), {fetch}or pass --data-dir DIR pointing at a folder holding the "
        f"{len(names)} IDX files {', '.join(names)} (raw or .gz)"
    )


def pixel_mean_std(images: np.ndarray) -> tuple[float, float]:
    """Exact mean/std of uint8 pixels scaled to [0, 1].

    Uses a 256-bin histogram so the sums are exact integers and no float64
    copy of the whole image set is needed.
    """
    counts = np.zeros(PIXEL_LEVELS, dtype=np.int64)
    flat = images.reshape(images.shape[0], -1)
    for start in range(0, flat.shape[0], HISTOGRAM_CHUNK):
        chunk = flat[start : start + HISTOGRAM_CHUNK].ravel()
        counts += np.bincount(chunk, minlength=PIXEL_LEVELS)
    levels = np.arange(PIXEL_LEVELS, dtype=np.int64)
    n = int(counts.sum())
    total = int(counts @ levels)
    total_sq = int(counts @ (levels * levels))
    # Var * n^2 = n * sum(x^2) - sum(x)^2, exact in Python ints.
    variance = (n * total_sq - total * total) / (n * n)
    return total / n / PIXEL_MAX, variance**0.5 / PIXEL_MAX


def normalize_images(images: np.ndarray, mean: float, std: float) -> np.ndarray:
    """uint8 (N, H, W) -> float32 (N, 1, H, W) with (x / 255 - mean) / std."""
    out = images.astype(np.float32)
    out *= np.float32(1.0 / PIXEL_MAX)
    out -= np.float32(mean)
    out /= np.float32(std)
    count, height, width = images.shape
    return out.reshape(count, 1, height, width)


def _check_train_subset(train_subset: int | None, available: int) -> int:
    if train_subset is None:
        return available
    valid_int = isinstance(train_subset, (int, np.integer)) and not isinstance(train_subset, bool)
    if not valid_int or not 1 <= train_subset <= available:
        raise DataError(
            f"train_subset={train_subset!r} is out of range; must be an integer in 1..{available}"
        )
    return int(train_subset)


def _check_labels(path: Path, labels: np.ndarray, num_classes: int) -> None:
    if labels.size and int(labels.max()) >= num_classes:
        raise DataError(f"{path}: label {int(labels.max())} out of range for {num_classes} classes")


def _check_image_sizes(
    train_path: Path, train: np.ndarray, test_path: Path, test: np.ndarray
) -> None:
    if train.shape[1:] != test.shape[1:]:
        raise DataError(
            f"image size mismatch: {train_path} has {train.shape[1]}x{train.shape[2]} images "
            f"but {test_path} has {test.shape[1]}x{test.shape[2]}"
        )


def load_idx_dataset(
    name: str,
    data_dir: str | os.PathLike | None,
    default_dirs: Sequence[str],
    classes: Sequence[str],
    train_subset: int | None = None,
    *,
    apt_package: str | None = None,
) -> Dataset:
    """Load an MNIST-layout IDX dataset and normalize it with training stats.

    Mean/std come from ALL training pixels (before `train_subset` is applied),
    so normalization does not depend on the subset size.
    """
    directory = find_dataset_dir(
        data_dir, IDX_FILE_NAMES, name, default_dirs=default_dirs, apt_package=apt_package
    )
    paths = [find_idx_file(directory, file_name) for file_name in IDX_FILE_NAMES]
    train_images, train_labels = load_idx_pair(paths[0], paths[1])
    test_images, test_labels = load_idx_pair(paths[2], paths[3])
    _check_image_sizes(paths[0], train_images, paths[2], test_images)
    _check_labels(paths[1], train_labels, len(classes))
    _check_labels(paths[3], test_labels, len(classes))

    mean, std = pixel_mean_std(train_images)
    if std == 0.0:
        raise DataError(f"{paths[0]}: training pixels have zero variance; cannot normalize")
    keep = _check_train_subset(train_subset, train_images.shape[0])

    return Dataset(
        train_x=normalize_images(train_images[:keep], mean, std),
        train_y=train_labels[:keep].astype(np.int32),
        test_x=normalize_images(test_images, mean, std),
        test_y=test_labels.astype(np.int32),
        classes=tuple(classes),
        mean=mean,
        std=std,
    )


def load_fashion_mnist(
    data_dir: str | os.PathLike | None = None, train_subset: int | None = None
) -> Dataset:
    """Load Fashion-MNIST from `data_dir` or DEFAULT_DIRS."""
    return load_idx_dataset(
        "Fashion-MNIST",
        data_dir,
        DEFAULT_DIRS,
        FASHION_MNIST_CLASSES,
        train_subset,
        apt_package="dataset-fashion-mnist",
    )


def load_mnist(
    data_dir: str | os.PathLike | None = None, train_subset: int | None = None
) -> Dataset:
    """Load MNIST digits from `data_dir` or MNIST_DEFAULT_DIRS."""
    return load_idx_dataset(
        "MNIST",
        data_dir,
        MNIST_DEFAULT_DIRS,
        MNIST_CLASSES,
        train_subset,
        apt_package="dataset-mnist",
    )
