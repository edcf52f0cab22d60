"""A restricted unpickler for the CIFAR-10 python batches: plain types and numeric arrays only.

Pickles can run arbitrary code, so `safe_load_pickle` reads them with `SafeUnpickler`, which
admits only the globals genuine CIFAR-10 batches contain (numpy's `_reconstruct`, `ndarray` and
`dtype`) and swaps each for a stand-in here that rebuilds the array itself from the raw bytes,
so no numpy code ever sees untrusted state; any other global is refused.
"""

from __future__ import annotations

import io
import math
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ..fileio import NotARegularFile, regular_file_size
from ..limits import check_host_fits
from .errors import DataError, one_line

# Simple numeric dtypes an untrusted pickle may name; no objects, records or subarrays.
_SAFE_TYPECODES = frozenset(
    ["b1", "u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8", "f2", "f4", "f8"]
)


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
        _check_shape(shape)
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


def _check_shape(shape: Any) -> None:
    valid = isinstance(shape, tuple) and all(
        isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0 for dim in shape
    )
    if not valid:
        raise pickle.UnpicklingError(f"malformed ndarray shape {shape!r}")


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
    """Unpickler that admits plain Python types and simple numpy arrays only.

    What it loads still holds `_ArrayBuilder`s where arrays were; `safe_load_pickle` swaps
    them for their arrays.
    """

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
    if depth > 4:  # bounds the recursion on hostile nesting; CIFAR's arrays sit at depth 1
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
    raw = _read_bytes(path)
    try:
        return _finish(SafeUnpickler(io.BytesIO(raw), encoding="bytes").load())
    except pickle.UnpicklingError as exc:
        raise DataError(f"{path}: not a valid CIFAR-10 pickle: {one_line(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - any parse failure of untrusted input
        problem = one_line(exc) or type(exc).__name__
        raise DataError(
            f"{path}: not a valid CIFAR-10 pickle ({type(exc).__name__}: {problem})"
        ) from None


def _read_bytes(path: Path) -> bytes:
    try:
        # the bytes, the loaded objects and their arrays: bounded before the file is read
        size = regular_file_size(path)  # st_size bounds the read of a regular file only
        check_host_fits(f"{path}: loading it", 3 * size, "it is not a CIFAR batch")
        return path.read_bytes()
    except NotARegularFile as exc:
        raise DataError(f"{path}: {exc}, expected a CIFAR-10 batch file") from None
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a CIFAR-10 batch file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read file: {exc.strerror or exc}") from None
