"""Tests for convnet_gpu.data.unpickler: real-format pickles load, anything else is refused."""

from __future__ import annotations

import codecs
import os
import pickle
import pickletools
from pathlib import Path

import numpy as np
import pytest
from data_helpers import globals_in, py2_pickle, sample_rows
from helpers import assert_one_line_mentioning

from convnet_gpu.data import DataError
from convnet_gpu.data.unpickler import safe_load_pickle


def test_py2_pickle_uses_exactly_the_real_globals():
    data = py2_pickle({b"data": sample_rows(2, 0), b"labels": [1, 2]})
    assert globals_in(data) == {
        "numpy.core.multiarray _reconstruct",
        "numpy ndarray",
        "numpy dtype",
    }
    ops = {op.name for op, _, _ in pickletools.genops(data)}
    assert "SHORT_BINSTRING" in ops or "BINSTRING" in ops


@pytest.mark.parametrize("py3", [False, True], ids=["python2-format", "python3-protocol2"])
def test_loads_plain_containers_and_arrays(tmp_path, py3):
    value = {b"rows": sample_rows(2, 3), b"labels": [1, 2], b"name": b"batch", b"n": 2}
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps(value, protocol=2) if py3 else py2_pickle(value))
    loaded = safe_load_pickle(path)
    np.testing.assert_array_equal(loaded[b"rows"], value[b"rows"])
    assert {key: loaded[key] for key in (b"labels", b"name", b"n")} == {
        b"labels": [1, 2],
        b"name": b"batch",
        b"n": 2,
    }


def test_safe_loader_handles_big_endian_and_fortran_arrays(tmp_path):
    wide = np.arange(12, dtype=">i4").reshape(3, 4)
    fortran = np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3))
    path = tmp_path / "arrays.pkl"
    path.write_bytes(py2_pickle({b"wide": wide, b"fortran": fortran}))
    loaded = safe_load_pickle(path)
    np.testing.assert_array_equal(loaded[b"wide"], wide)
    assert loaded[b"wide"].dtype.isnative
    np.testing.assert_array_equal(loaded[b"fortran"], fortran)


def test_unreadable_paths_are_one_line_errors(tmp_path):
    with pytest.raises(DataError) as error:
        safe_load_pickle(tmp_path / "absent")
    assert_one_line_mentioning(error, str(tmp_path / "absent"), "file not found")
    with pytest.raises(DataError) as error:
        safe_load_pickle(tmp_path)
    assert_one_line_mentioning(error, str(tmp_path), "is a directory")


# ---- malicious pickles ----------------------------------------------------------------------
class _RunsCommand:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Evals:
    def __reduce__(self):
        return (eval, ("__import__('os').getcwd()",))


class _Rot13:
    def __reduce__(self):
        return (codecs.encode, ("text", "rot13"))


@pytest.mark.parametrize("protocol", [2, 4])
def test_pickle_calling_os_system_is_refused(tmp_path, protocol):
    marker = tmp_path / "pwned"
    path = tmp_path / "data_batch_1"
    path.write_bytes(
        pickle.dumps({b"data": _RunsCommand(marker), b"labels": [0]}, protocol=protocol)
    )
    with pytest.raises(DataError) as error:
        safe_load_pickle(path)
    assert_one_line_mentioning(error, str(path), "refusing global", "system")
    assert not marker.exists()


def test_pickle_calling_eval_is_refused(tmp_path):
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": _Evals(), b"labels": [0]}, protocol=2))
    with pytest.raises(DataError) as error:
        safe_load_pickle(path)
    assert_one_line_mentioning(error, str(path), "refusing global", ".eval")


def test_object_dtype_array_is_refused(tmp_path):
    path = tmp_path / "data_batch_1"
    objects = np.array([os.getcwd, 1], dtype=object)
    path.write_bytes(py2_pickle({b"data": objects, b"labels": [0, 1]}))
    with pytest.raises(DataError) as error:
        safe_load_pickle(path)
    assert_one_line_mentioning(error, str(path), "not a valid CIFAR-10 pickle")


def test_codecs_encode_is_only_allowed_for_latin1(tmp_path):
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": _Rot13(), b"labels": []}, protocol=2))
    with pytest.raises(DataError) as error:
        safe_load_pickle(path)
    assert_one_line_mentioning(error, "_codecs.encode")


def test_reconstruct_of_other_types_is_refused(tmp_path):
    # Hand-written pickle: numpy.core.multiarray._reconstruct(numpy.dtype, ...) must not run.
    data = (
        b"\x80\x02cnumpy.core.multiarray\n_reconstruct\nq\x00cnumpy\ndtype\nq\x01"
        b"K\x00\x85U\x01b\x87R."
    )
    path = tmp_path / "data_batch_1"
    path.write_bytes(data)
    with pytest.raises(DataError) as error:
        safe_load_pickle(path)
    assert_one_line_mentioning(error, "_reconstruct is only allowed for numpy.ndarray")
