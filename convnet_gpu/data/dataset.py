"""The `Dataset` every loader returns, its normalization, and the checks all loaders share.

Normalization statistics are exact: pixel sums are taken over a 256-bin histogram of the uint8
images in Python ints, so no float64 copy of the image set is made and the result does not
depend on summation order.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import DataError

PIXEL_MAX = 255.0
_HISTOGRAM_CHUNK = 4096  # images per bincount call: bounds the temporary memory


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

    def identity(self) -> dict:
        """What tells this data from other data cheaply: the split sizes and a checksum of the
        labels. A checkpoint keeps it, so a resumed run can refuse other training images."""
        digest = hashlib.sha256()
        for labels in (self.train_y, self.test_y):
            digest.update(np.ascontiguousarray(labels, dtype="<i8").tobytes())
        return {
            "train_images": int(len(self.train_y)),
            "test_images": int(len(self.test_y)),
            "labels_sha256": digest.hexdigest(),
        }


def pixel_mean_std(images: np.ndarray) -> tuple[float, float]:
    """Exact mean/std of uint8 pixels scaled to [0, 1]."""
    counts = np.zeros(256, dtype=np.int64)
    flat = images.reshape(images.shape[0], -1)
    for start in range(0, flat.shape[0], _HISTOGRAM_CHUNK):
        counts += np.bincount(flat[start : start + _HISTOGRAM_CHUNK].ravel(), minlength=256)
    levels = np.arange(256, dtype=np.int64)
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


def channel_mean_std(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean/std of uint8 (N, C, H, W) pixels scaled to [0, 1]."""
    stats = [pixel_mean_std(images[:, channel]) for channel in range(images.shape[1])]
    return tuple(m for m, _ in stats), tuple(s for _, s in stats)


def normalize_channels(
    images: np.ndarray, mean: Sequence[float], std: Sequence[float]
) -> np.ndarray:
    """uint8 (N, C, H, W) -> float32 (N, C, H, W) with (x / 255 - mean[c]) / std[c]."""
    shape = (1, len(mean), 1, 1)
    out = images.astype(np.float32)
    out *= np.float32(1.0 / PIXEL_MAX)
    out -= np.asarray(mean, dtype=np.float32).reshape(shape)
    out /= np.asarray(std, dtype=np.float32).reshape(shape)
    return out


def check_train_subset(train_subset: int | None, available: int) -> int:
    """How many training images to keep: all for None, else `train_subset` if in 1..available."""
    if train_subset is None:
        return available
    valid_int = isinstance(train_subset, (int, np.integer)) and not isinstance(train_subset, bool)
    if not valid_int or not 1 <= train_subset <= available:
        raise DataError(
            f"train_subset={train_subset!r} is out of range; must be an integer in 1..{available}"
        )
    return int(train_subset)


def check_images(path: str | os.PathLike, images: np.ndarray, split: str) -> None:
    """A split must hold images, and images must hold pixels: an empty training set has no
    statistics to normalize with, an empty test set no accuracy, a 0x0 image no features."""
    if images.shape[0] == 0:
        raise DataError(f"{os.fspath(path)}: holds no {split} images; a dataset needs some")
    if 0 in images.shape[1:]:
        size = "x".join(str(d) for d in images.shape[-2:])
        raise DataError(
            f"{os.fspath(path)}: its {split} images are {size} pixels; need at least 1x1"
        )


def check_labels(path: str | os.PathLike, labels: np.ndarray, num_classes: int) -> None:
    """Every label of the file at `path` must be a class index in 0..num_classes-1."""
    if not labels.size:
        return
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        bad = low if low < 0 else high
        raise DataError(f"{os.fspath(path)}: label {bad} out of range for {num_classes} classes")
