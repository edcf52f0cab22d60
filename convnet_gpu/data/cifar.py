"""CIFAR-10 loading from the python pickle batches (`cifar-10-batches-py/`).

Each batch file is a pickled dict: b"data" is a uint8 (N, 3072) array whose
rows hold the red, then green, then blue 32x32 plane (row-major); b"labels" is
a list of N ints. `batches.meta` holds b"label_names".

Pickles can run arbitrary code, so the files are read with `SafeUnpickler`,
which admits only the globals genuine CIFAR batches contain (numpy's
`_reconstruct`, `ndarray` and `dtype`) and rebuilds arrays itself from the raw
bytes, so no numpy code ever sees untrusted state; anything else is refused.
"""

from __future__ import annotations

import io
import math
import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .download import dataset_cache_dir
from .errors import DataError
from .fashion_mnist import PIXEL_MAX, Dataset, _check_train_subset, pixel_mean_std

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN_FILES: tuple[str, ...] = tuple(f"data_batch_{index}" for index in range(1, 6))
CIFAR10_TEST_FILE = "test_batch"
CIFAR10_META_FILE = "batches.meta"
CIFAR10_FILES: tuple[str, ...] = (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE, CIFAR10_META_FILE)
CIFAR10_DOWNLOAD_NAME = "cifar-10"
# Searched when no data_dir is given, before the download cache. No Debian
# package ships CIFAR-10, so there is no system folder by default.
CIFAR10_DEFAULT_DIRS: tuple[str, ...] = ()
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
CHANNELS, HEIGHT, WIDTH = 3, 32, 32
ROW_BYTES = CHANNELS * HEIGHT * WIDTH

# Simple numeric dtypes an untrusted pickle may name; no objects, records or subarrays.
_SAFE_TYPECODES = frozenset(
    ["b1", "u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8", "f2", "f4", "f8"]
)
_ARRAY_STATE_VERSION = 1


# ---------------------------------------------------------------- safe unpickling


class _NdarrayMarker:
    """Stands in for `numpy.ndarray` as the subtype argument of `_reconstruct`."""

    __slots__ = ()  # no __dict__: a pickle cannot BUILD attributes onto the shared marker


_NDARRAY = _NdarrayMarker()


class _DtypeBuilder:
    """Replaces `numpy.dtype(code, align, copy)` + its __setstate__ for simple dtypes."""

    def __init__(self, code: Any, align: Any = False, copy: Any = False):
        if not isinstance(code, (str, bytes)):
            raise pickle.UnpicklingError(f"dtype code must be a string, got {type(code).__name__}")
        code = code.decode("ascii") if isinstance(code, bytes) else code
        if code not in _SAFE_TYPECODES:
            raise pickle.UnpicklingError(f"dtype {code!r} is not a plain numeric type")
        self.code = code
        self.byteorder = "|"

    def __setstate__(self, state: Any) -> None:
        # (version, byteorder, subarray, names, fields, elsize, alignment, flags)
        if not isinstance(state, tuple) or len(state) < 5:
            raise pickle.UnpicklingError("malformed dtype state")
        byteorder = state[1].decode("ascii") if isinstance(state[1], bytes) else state[1]
        if byteorder not in ("<", ">", "|", "=") or any(item is not None for item in state[2:5]):
            raise pickle.UnpicklingError("only plain numeric dtypes are allowed")
        self.byteorder = byteorder

    def dtype(self) -> np.dtype:
        prefix = "" if self.byteorder in ("|", "=") else self.byteorder
        return np.dtype(prefix + self.code)


class _ArrayBuilder:
    """Replaces `_reconstruct(ndarray, (0,), b'b')` + ndarray.__setstate__."""

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        # (version, shape, dtype, is_fortran, raw bytes); older pickles omit version.
        if isinstance(state, tuple) and len(state) == 5:
            state = state[1:]
        if not isinstance(state, tuple) or len(state) != 4:
            raise pickle.UnpicklingError("malformed ndarray state")
        shape, dtype_builder, fortran, raw = state
        valid_shape = isinstance(shape, tuple) and all(
            isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0 for dim in shape
        )
        if not valid_shape:
            raise pickle.UnpicklingError(f"malformed ndarray shape {shape!r}")
        if not isinstance(dtype_builder, _DtypeBuilder):
            raise pickle.UnpicklingError("ndarray state without a plain numeric dtype")
        if isinstance(raw, str):
            raw = raw.encode("latin-1")
        if not isinstance(raw, (bytes, bytearray)):
            raise pickle.UnpicklingError("ndarray data must be raw bytes")
        dtype = dtype_builder.dtype()
        if len(raw) != math.prod(shape) * dtype.itemsize:
            raise pickle.UnpicklingError(
                f"ndarray data is {len(raw)} bytes, expected {math.prod(shape) * dtype.itemsize} "
                f"for shape {shape} of {dtype}"
            )
        flat = np.frombuffer(raw, dtype=dtype)
        array = flat.reshape(shape, order="F" if fortran else "C")
        self.array = np.array(array, dtype=dtype.newbyteorder("="), order="C")


def _reconstruct(subtype: Any, shape: Any, code: Any) -> _ArrayBuilder:
    if subtype is not _NDARRAY:
        raise pickle.UnpicklingError("_reconstruct is only allowed for numpy.ndarray")
    return _ArrayBuilder()


def _latin1_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    """`_codecs.encode(str, 'latin1')`: how Python 3 pickles bytes at protocol 2."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode is only allowed as (str, 'latin1')")
    return text.encode("latin-1")


# Exactly the globals a genuine CIFAR-10 batch names (written by Python 2 with
# numpy 1.x: numpy.core.multiarray._reconstruct, numpy.ndarray, numpy.dtype),
# plus the names the same data gets when re-pickled at protocol 2 by Python 3
# and numpy 2 (numpy._core.multiarray._reconstruct and _codecs.encode).
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _DtypeBuilder,
    ("_codecs", "encode"): _latin1_encode,
}


class SafeUnpickler(pickle.Unpickler):
    """Unpickler that admits plain Python types and simple numpy arrays only."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing global {module}.{name} (only numpy arrays and plain types are allowed)"
            ) from None


def _finish(value: Any, depth: int = 0) -> Any:
    """Swap each _ArrayBuilder in the loaded containers for its array."""
    if isinstance(value, _ArrayBuilder):
        if value.array is None:
            raise pickle.UnpicklingError("ndarray without state")
        return value.array
    if depth > 4:
        return value
    if isinstance(value, dict):
        return {key: _finish(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list):
        return [_finish(item, depth + 1) for item in value]
    if isinstance(value, (_DtypeBuilder, _NdarrayMarker)):
        raise pickle.UnpicklingError("stray numpy dtype or type object")
    return value


def safe_load_pickle(path: str | os.PathLike) -> Any:
    """Load a pickle with `SafeUnpickler` (encoding="bytes"); DataError on any failure."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a CIFAR-10 batch file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read file: {exc.strerror or exc}") from None
    try:
        loaded = SafeUnpickler(io.BytesIO(raw), encoding="bytes").load()
        return _finish(loaded)
    except pickle.UnpicklingError as exc:
        raise DataError(
            f"{path}: not a valid CIFAR-10 pickle: {' '.join(str(exc).split())}"
        ) from None
    except Exception as exc:  # noqa: BLE001 - any parse failure of untrusted input
        problem = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(
            f"{path}: not a valid CIFAR-10 pickle ({type(exc).__name__}: {problem})"
        ) from None


# ---------------------------------------------------------------- batches


def _require_dict(path: Path, loaded: Any, keys: Sequence[bytes]) -> dict:
    if not isinstance(loaded, dict):
        raise DataError(f"{path}: expected a pickled dict, got {type(loaded).__name__}")
    for key in keys:
        if key not in loaded:
            present = ", ".join(repr(k) for k in list(loaded)[:8])
            raise DataError(f"{path}: missing key {key!r} (keys present: {present or 'none'})")
    return loaded


def read_cifar_batch(
    path: str | os.PathLike, num_classes: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Read one batch: (uint8 images (N, 3, 32, 32), int32 labels (N,))."""
    path = Path(path)
    batch = _require_dict(path, safe_load_pickle(path), (b"data", b"labels"))
    data, labels = batch[b"data"], batch[b"labels"]
    if not isinstance(data, np.ndarray):
        raise DataError(f"{path}: b'data' must be a numpy array, got {type(data).__name__}")
    if data.dtype != np.uint8:
        raise DataError(f"{path}: b'data' must be uint8, got {data.dtype}")
    if data.ndim != 2 or data.shape[1] != ROW_BYTES:
        raise DataError(
            f"{path}: b'data' must have shape (N, {ROW_BYTES}) (3x32x32 images), got {data.shape}"
        )
    if not isinstance(labels, (list, tuple, np.ndarray)):
        raise DataError(f"{path}: b'labels' must be a list of ints, got {type(labels).__name__}")
    if isinstance(labels, np.ndarray):
        label_array = labels.reshape(-1) if labels.ndim == 1 else None
        if label_array is None or label_array.dtype.kind not in "iu":
            raise DataError(f"{path}: b'labels' must be a 1-D list of ints")
    else:
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in labels):
            raise DataError(f"{path}: b'labels' must be a list of ints")
        try:
            label_array = np.array(labels, dtype=np.int64) if labels else np.zeros(0, np.int64)
        except OverflowError:
            raise DataError(f"{path}: label out of range for {num_classes} classes") from None
    if len(label_array) != data.shape[0]:
        raise DataError(
            f"image/label count mismatch: {path} has {data.shape[0]} images but "
            f"{len(label_array)} labels"
        )
    if label_array.size and (label_array.min() < 0 or label_array.max() >= num_classes):
        bad = int(label_array.min()) if label_array.min() < 0 else int(label_array.max())
        raise DataError(f"{path}: label {bad} out of range for {num_classes} classes")
    return data.reshape(-1, CHANNELS, HEIGHT, WIDTH), label_array.astype(np.int32)


def read_cifar_meta(path: str | os.PathLike) -> tuple[str, ...]:
    """Class names from batches.meta's b"label_names"."""
    path = Path(path)
    meta = _require_dict(path, safe_load_pickle(path), (b"label_names",))
    names = meta[b"label_names"]
    if not isinstance(names, (list, tuple)) or not names:
        raise DataError(f"{path}: b'label_names' must be a non-empty list of names")
    decoded = []
    for name in names:
        if isinstance(name, bytes):
            try:
                name = name.decode("utf-8")
            except UnicodeDecodeError:
                raise DataError(f"{path}: label name {name!r} is not UTF-8") from None
        if not isinstance(name, str) or not name:
            raise DataError(f"{path}: b'label_names' must hold non-empty strings, got {name!r}")
        decoded.append(name)
    return tuple(decoded)


# ---------------------------------------------------------------- locating


def _missing_file(directory: Path) -> str | None:
    for name in CIFAR10_FILES:
        if not (directory / name).is_file():
            return name
    return None


def _batches_dir(directory: Path) -> Path:
    """`directory` itself or its cifar-10-batches-py/ subfolder, whichever holds the batches."""
    nested = directory / CIFAR10_FOLDER
    if _missing_file(directory) is not None and nested.is_dir():
        return nested
    return directory


def find_cifar10_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Locate the folder holding the CIFAR-10 python batches (one-line DataError if absent).

    An explicit `data_dir` may be that folder or its parent; otherwise
    CIFAR10_DEFAULT_DIRS and then the download cache are searched.
    """
    if data_dir is not None:
        directory = Path(data_dir)
        if not directory.is_dir():
            raise DataError(f"{directory}: --data-dir is not a directory")
        directory = _batches_dir(directory)
        missing = _missing_file(directory)
        if missing is not None:
            raise DataError(
                f"{directory}: missing {missing}; --data-dir must point at the {CIFAR10_FOLDER} "
                f"folder of the CIFAR-10 python version (or its parent), holding "
                f"{', '.join(CIFAR10_FILES)}"
            )
        return directory

    cache_dir = dataset_cache_dir(CIFAR10_DOWNLOAD_NAME)
    looked = []
    for candidate in (*CIFAR10_DEFAULT_DIRS, cache_dir):
        directory = _batches_dir(Path(candidate))
        missing = _missing_file(directory) if directory.is_dir() else None
        if directory.is_dir() and missing is None:
            return directory
        looked.append(f"{directory} (missing {missing})" if missing else f"{directory} (absent)")
    raise DataError(
        f"CIFAR-10 not found; looked in {', '.join(looked)}. Download it with "
        f"`convnet-gpu download {CIFAR10_DOWNLOAD_NAME}` (saves to {cache_dir}) or pass "
        f"--data-dir DIR pointing at the {CIFAR10_FOLDER} folder of cifar-10-python.tar.gz"
    )


# ---------------------------------------------------------------- dataset


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
    del train
    test_images, test_labels = read_cifar_batch(directory / CIFAR10_TEST_FILE, len(classes))
    if train_images.shape[0] == 0:
        raise DataError(f"{directory}: the training batches hold no images")

    mean, std = channel_mean_std(train_images)
    flat = [c for c, s in zip("RGB", std) if s == 0.0]
    if flat:
        raise DataError(
            f"{directory / CIFAR10_TRAIN_FILES[0]}: training pixels of channel {flat[0]} have zero "
            f"variance; cannot normalize"
        )
    keep = _check_train_subset(train_subset, train_images.shape[0])
    return Dataset(
        train_x=normalize_channels(train_images[:keep], mean, std),
        train_y=train_labels[:keep],
        test_x=normalize_channels(test_images, mean, std),
        test_y=test_labels,
        classes=classes,
        mean=mean,
        std=std,
    )
