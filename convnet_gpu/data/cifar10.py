"""CIFAR-10 from its python batches (the `cifar-10-batches-py/` folder of cifar-10-python.tar.gz).

Each batch file is a pickled dict: b"data" is a uint8 (N, 3072) array whose rows hold the red,
then green, then blue 32x32 plane (row-major); b"labels" is a list of N ints. `batches.meta`
holds b"label_names". The pickles are read with the restricted unpickler of `unpickler.py`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..limits import MAX_CLASSES
from .dataset import (
    Dataset,
    channel_mean_std,
    check_images,
    check_labels,
    check_train_subset,
    normalize_channels,
)
from .errors import DataError
from .locate import DataFolder, find_data_dir
from .unpickler import safe_load_pickle

CIFAR10_SUBFOLDER = "cifar-10-batches-py"  # the archive's top folder, holding the batches
CIFAR10_TRAIN_FILES: tuple[str, ...] = tuple(f"data_batch_{index}" for index in range(1, 6))
CIFAR10_TEST_FILE = "test_batch"
CIFAR10_META_FILE = "batches.meta"
CIFAR10_FILES: tuple[str, ...] = (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE, CIFAR10_META_FILE)
CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
IMAGE_SHAPE = (3, 32, 32)  # (channels, height, width)
_ROW_BYTES = 3 * 32 * 32

# No Debian package ships CIFAR-10, so there is no system folder: only --data-dir and the cache.
CIFAR10_FOLDER = DataFolder(
    name="cifar-10",
    title="CIFAR-10",
    files=CIFAR10_FILES,
    holding=(
        f"the {CIFAR10_SUBFOLDER} folder of cifar-10-python.tar.gz (or its parent), "
        f"holding {', '.join(CIFAR10_FILES)}"
    ),
    nested=CIFAR10_SUBFOLDER,
)


def find_cifar10_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The folder holding the CIFAR-10 python batches (see `locate.find_data_dir`);
    `data_dir` may be that folder or its parent."""
    return find_data_dir(CIFAR10_FOLDER, data_dir)


def load_cifar10(
    data_dir: str | os.PathLike | None = None, train_subset: int | None = None
) -> Dataset:
    """Load CIFAR-10 (python version) normalized per channel with training stats.

    Images are float32 (N, 3, 32, 32); labels int32; `mean`/`std` are 3-tuples
    computed from ALL 50k training images (before `train_subset` is applied).
    """
    directory = find_cifar10_dir(data_dir)
    classes = read_cifar_meta(directory / CIFAR10_META_FILE)
    train = [read_cifar_batch(directory / name, len(classes)) for name in CIFAR10_TRAIN_FILES]
    train_images = np.concatenate([images for images, _ in train])
    train_labels = np.concatenate([labels for _, labels in train])
    del train  # the batches are copied into train_images: free them before the float copies
    test_images, test_labels = read_cifar_batch(directory / CIFAR10_TEST_FILE, len(classes))
    if train_images.shape[0] == 0:
        raise DataError(f"{directory}: the training batches hold no images")
    check_images(directory / CIFAR10_TEST_FILE, test_images, "test")

    mean, std = channel_mean_std(train_images)
    flat = [channel for channel, s in zip("RGB", std) if s == 0.0]
    if flat:
        raise DataError(
            f"{directory / CIFAR10_TRAIN_FILES[0]}: training pixels of channel {flat[0]} have zero "
            f"variance; cannot normalize"
        )
    keep = check_train_subset(train_subset, train_images.shape[0])
    return Dataset(
        train_x=normalize_channels(train_images[:keep], mean, std),
        train_y=train_labels[:keep],
        test_x=normalize_channels(test_images, mean, std),
        test_y=test_labels,
        classes=classes,
        mean=mean,
        std=std,
    )


def read_cifar_batch(
    path: str | os.PathLike, num_classes: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Read one batch: (uint8 images (N, 3, 32, 32), int32 labels (N,))."""
    path = Path(path)
    batch = _require_dict(path, safe_load_pickle(path), (b"data", b"labels"))
    data = _image_rows(path, batch[b"data"])
    labels = _label_array(path, batch[b"labels"], num_classes)
    if len(labels) != data.shape[0]:
        raise DataError(
            f"image/label count mismatch: {path} has {data.shape[0]} images but "
            f"{len(labels)} labels"
        )
    check_labels(path, labels, num_classes)
    return data.reshape(-1, *IMAGE_SHAPE), labels.astype(np.int32)


def read_cifar_meta(path: str | os.PathLike) -> tuple[str, ...]:
    """Class names from batches.meta's b"label_names"."""
    path = Path(path)
    meta = _require_dict(path, safe_load_pickle(path), (b"label_names",))
    names = meta[b"label_names"]
    if not isinstance(names, (list, tuple)) or not names:
        raise DataError(f"{path}: b'label_names' must be a non-empty list of names")
    if len(names) > MAX_CLASSES:  # each class costs a model output and a confusion row
        raise DataError(
            f"{path}: b'label_names' lists {len(names)} classes, more than the {MAX_CLASSES} a "
            f"dataset may have (CIFAR-10 has 10); the file is damaged"
        )
    return tuple(_class_name(path, name) for name in names)


def _class_name(path: Path, name: Any) -> str:
    if isinstance(name, bytes):
        try:
            name = name.decode("utf-8")
        except UnicodeDecodeError:
            raise DataError(f"{path}: label name {name!r} is not UTF-8") from None
    if not isinstance(name, str) or not name:
        raise DataError(f"{path}: b'label_names' must hold non-empty strings, got {name!r}")
    return name


def _require_dict(path: Path, loaded: Any, keys: tuple[bytes, ...]) -> dict:
    if not isinstance(loaded, dict):
        raise DataError(f"{path}: expected a pickled dict, got {type(loaded).__name__}")
    for key in keys:
        if key not in loaded:
            present = ", ".join(repr(k) for k in list(loaded)[:8])
            raise DataError(f"{path}: missing key {key!r} (keys present: {present or 'none'})")
    return loaded


def _image_rows(path: Path, data: Any) -> np.ndarray:
    """b"data", checked to be uint8 (N, 3072) rows."""
    if not isinstance(data, np.ndarray):
        raise DataError(f"{path}: b'data' must be a numpy array, got {type(data).__name__}")
    if data.dtype != np.uint8:
        raise DataError(f"{path}: b'data' must be uint8, got {data.dtype}")
    if data.ndim != 2 or data.shape[1] != _ROW_BYTES:
        raise DataError(
            f"{path}: b'data' must have shape (N, {_ROW_BYTES}) (3x32x32 images), got {data.shape}"
        )
    return data


def _label_array(path: Path, labels: Any, num_classes: int) -> np.ndarray:
    """b"labels" (a list of ints in the real files, an integer array accepted too) as an array."""
    if isinstance(labels, np.ndarray):
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise DataError(f"{path}: b'labels' must be a 1-D list of ints")
        return labels
    if not isinstance(labels, (list, tuple)):
        raise DataError(f"{path}: b'labels' must be a list of ints, got {type(labels).__name__}")
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in labels):
        raise DataError(f"{path}: b'labels' must be a list of ints")
    try:
        return np.array(labels, dtype=np.int64) if labels else np.zeros(0, np.int64)
    except OverflowError:  # an int beyond int64 is out of range for any class count
        raise DataError(f"{path}: label out of range for {num_classes} classes") from None
