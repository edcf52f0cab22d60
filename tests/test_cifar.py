"""Tests for convnet_gpu.data.cifar on small batches written in the real file format.

The real batches were pickled by Python 2 (protocol 2) with numpy 1.x: byte
strings are SHORT_BINSTRING/BINSTRING opcodes and the array is rebuilt through
numpy.core.multiarray._reconstruct, numpy.ndarray and numpy.dtype.
`py2_pickle` writes exactly that; `pickle.dumps(..., protocol=2)` (the Python 3
spelling) is tested too.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import pickletools
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_one_line_mentioning

from convnet_gpu.data import DataError, Dataset, cifar, load_cifar10, read_cifar_batch
from convnet_gpu.data import download as dl
from convnet_gpu.data.cifar import CIFAR10_CLASSES, CIFAR10_FOLDER, safe_load_pickle

REAL_DIR = Path(os.path.expanduser("~/.cache/convnet_gpu/cifar-10")) / CIFAR10_FOLDER
BATCH_SIZES = (4, 3, 5, 2, 6)  # 20 training images
TEST_SIZE = 7


class _Py2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 `str` opcodes, as the real CIFAR files do."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def py2_pickle(obj) -> bytes:
    buffer = io.BytesIO()
    _Py2Pickler(buffer, protocol=2).dump(obj)
    data = buffer.getvalue()
    # numpy >= 2 names its module numpy._core; the real files say numpy.core.
    return data.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def globals_in(data: bytes) -> set[str]:
    return {arg for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"}


def sample_rows(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 3072), dtype=np.uint8)


def write_batch(path: Path, data, labels, *, py3: bool = False, extra: dict | None = None) -> Path:
    batch = {
        b"batch_label": b"training batch 1 of 5",
        b"data": data,
        b"labels": labels,
        b"filenames": [b"img_%d.png" % i for i in range(len(labels))],
    }
    batch.update(extra or {})
    path.write_bytes(pickle.dumps(batch, protocol=2) if py3 else py2_pickle(batch))
    return path


def write_meta(directory: Path, names=CIFAR10_CLASSES, py3: bool = False) -> None:
    meta = {
        b"num_cases_per_batch": 10000,
        b"label_names": [n.encode() for n in names],
        b"num_vis": 3072,
    }
    (directory / "batches.meta").write_bytes(
        pickle.dumps(meta, protocol=2) if py3 else py2_pickle(meta)
    )


def write_cifar(
    directory: Path, py3: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Write a 20-image CIFAR-10 lookalike: (train rows, train labels, test rows, test labels)."""
    directory.mkdir(parents=True, exist_ok=True)
    rows, labels = [], []
    for index, size in enumerate(BATCH_SIZES, start=1):
        data = sample_rows(size, index)
        data[:, :1024] //= 2  # a darker red plane: the channel means differ
        batch_labels = [(index + i) % 10 for i in range(size)]
        write_batch(directory / f"data_batch_{index}", data, batch_labels, py3=py3)
        rows.append(data)
        labels.extend(batch_labels)
    test = sample_rows(TEST_SIZE, 99)
    test_labels = [i % 10 for i in range(TEST_SIZE)]
    write_batch(directory / "test_batch", test, test_labels, py3=py3)
    write_meta(directory, py3=py3)
    return np.concatenate(rows), np.array(labels), test, np.array(test_labels)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(dl.CACHE_ENV_VAR, str(tmp_path / "cache-root"))


@pytest.fixture
def cifar_dir(tmp_path) -> Path:
    directory = tmp_path / "data" / CIFAR10_FOLDER
    write_cifar(directory)
    return directory


# ---------------------------------------------------------------- file format


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
def test_read_batch_returns_planes_in_rgb_order(tmp_path, py3):
    rows = sample_rows(3, 1)
    path = write_batch(tmp_path / "data_batch_1", rows, [0, 9, 4], py3=py3)
    images, labels = read_cifar_batch(path)
    assert images.dtype == np.uint8 and images.shape == (3, 3, 32, 32)
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(labels, [0, 9, 4])
    # Row layout: 1024 red, then 1024 green, then 1024 blue bytes, each plane row-major.
    np.testing.assert_array_equal(images[1, 0], rows[1, :1024].reshape(32, 32))
    np.testing.assert_array_equal(images[1, 2, 5], rows[1, 2048 + 5 * 32 : 2048 + 6 * 32])


def test_safe_loader_handles_big_endian_and_fortran_arrays(tmp_path):
    wide = np.arange(12, dtype=">i4").reshape(3, 4)
    fortran = np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3))
    path = tmp_path / "arrays.pkl"
    path.write_bytes(py2_pickle({b"wide": wide, b"fortran": fortran}))
    loaded = safe_load_pickle(path)
    np.testing.assert_array_equal(loaded[b"wide"], wide)
    assert loaded[b"wide"].dtype.isnative
    np.testing.assert_array_equal(loaded[b"fortran"], fortran)


# ---------------------------------------------------------------- load_cifar10


def test_load_cifar10_normalizes_per_channel(cifar_dir):
    train_rows, train_labels, test_rows, test_labels = write_cifar(cifar_dir)
    data = load_cifar10(cifar_dir)
    assert isinstance(data, Dataset)
    assert data.train_x.shape == (20, 3, 32, 32) and data.test_x.shape == (TEST_SIZE, 3, 32, 32)
    assert data.train_x.dtype == np.float32 and data.test_x.dtype == np.float32
    assert data.train_y.dtype == np.int32 and data.test_y.dtype == np.int32
    assert data.input_shape == (3, 32, 32) and data.num_classes == 10
    assert data.classes == CIFAR10_CLASSES
    np.testing.assert_array_equal(data.train_y, train_labels)
    np.testing.assert_array_equal(data.test_y, test_labels)

    planes = train_rows.reshape(-1, 3, 32, 32).astype(np.float64) / 255
    expected_mean = planes.mean(axis=(0, 2, 3))
    expected_std = planes.std(axis=(0, 2, 3))
    assert isinstance(data.mean, tuple) and len(data.mean) == 3 and len(data.std) == 3
    np.testing.assert_allclose(data.mean, expected_mean, rtol=1e-12)
    np.testing.assert_allclose(data.std, expected_std, rtol=1e-12)
    assert data.mean[0] < 0.3 < data.mean[1]  # the darker red plane has its own stats
    np.testing.assert_allclose(data.train_x.mean(axis=(0, 2, 3)), 0.0, atol=1e-5)
    np.testing.assert_allclose(data.train_x.std(axis=(0, 2, 3)), 1.0, atol=1e-4)

    test_planes = test_rows.reshape(-1, 3, 32, 32).astype(np.float64) / 255
    expected_test = (test_planes - expected_mean[:, None, None]) / expected_std[:, None, None]
    np.testing.assert_allclose(data.test_x, expected_test, rtol=1e-5, atol=1e-5)


def test_load_cifar10_python3_written_batches(tmp_path):
    directory = tmp_path / CIFAR10_FOLDER
    train_rows, *_ = write_cifar(directory, py3=True)
    data = load_cifar10(directory)
    assert data.train_x.shape == (20, 3, 32, 32)
    assert data.classes == CIFAR10_CLASSES


def test_load_cifar10_accepts_parent_folder_and_custom_names(cifar_dir):
    write_meta(cifar_dir, names=[f"class{i}" for i in range(10)])
    data = load_cifar10(cifar_dir.parent)
    assert data.classes[3] == "class3"


def test_train_subset_keeps_first_n_with_full_set_stats(cifar_dir):
    full = load_cifar10(cifar_dir)
    subset = load_cifar10(cifar_dir, train_subset=6)
    assert subset.train_x.shape == (6, 3, 32, 32)
    np.testing.assert_array_equal(subset.train_x, full.train_x[:6])
    np.testing.assert_array_equal(subset.train_y, full.train_y[:6])
    assert (subset.mean, subset.std) == (full.mean, full.std)
    with pytest.raises(DataError) as error:
        load_cifar10(cifar_dir, train_subset=21)
    assert_one_line_mentioning(error, "train_subset", "1..20")


def test_load_cifar10_from_download_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(dl.CACHE_ENV_VAR, str(tmp_path / "root"))
    write_cifar(tmp_path / "root" / "cifar-10" / CIFAR10_FOLDER)
    assert load_cifar10().train_x.shape == (20, 3, 32, 32)


def test_fetch_dataset_extracts_a_real_layout_tarball_that_loads(tmp_path, monkeypatch):
    staging = tmp_path / "staging"
    write_cifar(staging / CIFAR10_FOLDER)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(staging / CIFAR10_FOLDER, arcname=CIFAR10_FOLDER)
    tarball = buffer.getvalue()
    members = tuple(
        (name, hashlib.md5((staging / CIFAR10_FOLDER / name).read_bytes()).hexdigest())
        for name in cifar.CIFAR10_FILES
    )
    # The tarball is already in the cache with the right md5, so nothing is downloaded;
    # the unroutable URL proves it (any fetch would fail).
    source = dl.DatasetSource(
        "http://127.0.0.1:9/cifar-10-python.tar.gz",
        md5=hashlib.md5(tarball).hexdigest(),
        extract=CIFAR10_FOLDER,
        members=members,
    )
    monkeypatch.setattr(dl, "SOURCES", {"cifar-10": [source]})
    cache = tmp_path / "root" / "cifar-10"
    cache.mkdir(parents=True)
    (cache / "cifar-10-python.tar.gz").write_bytes(tarball)
    monkeypatch.setenv(dl.CACHE_ENV_VAR, str(tmp_path / "root"))
    assert dl.fetch_dataset("cifar-10") == cache
    assert not (cache / "cifar-10-python.tar.gz").exists()
    assert load_cifar10().train_x.shape == (20, 3, 32, 32)
    assert dl.fetch_dataset("cifar-10") == cache  # intact: skipped without any request


# ---------------------------------------------------------------- validation


def test_label_out_of_range(cifar_dir):
    write_batch(cifar_dir / "data_batch_2", sample_rows(3, 0), [0, 10, 1])
    with pytest.raises(DataError) as error:
        load_cifar10(cifar_dir)
    assert_one_line_mentioning(error, str(cifar_dir / "data_batch_2"), "label 10", "10 classes")
    write_batch(cifar_dir / "data_batch_2", sample_rows(3, 0), [0, -1, 1])
    with pytest.raises(DataError) as error:
        load_cifar10(cifar_dir)
    assert_one_line_mentioning(error, "data_batch_2", "label -1")


def test_image_label_count_mismatch(cifar_dir):
    write_batch(cifar_dir / "test_batch", sample_rows(5, 0), [1, 2, 3, 4])
    with pytest.raises(DataError) as error:
        load_cifar10(cifar_dir)
    assert_one_line_mentioning(error, str(cifar_dir / "test_batch"), "5 images", "4 labels")


@pytest.mark.parametrize(
    "data, fragment",
    [
        (np.zeros((2, 3072), dtype=np.int32), "uint8"),
        (np.zeros((2, 3000), dtype=np.uint8), "(N, 3072)"),
        (np.zeros((2, 3, 32, 32), dtype=np.uint8), "(N, 3072)"),
        ([[0] * 3072] * 2, "numpy array"),
    ],
    ids=["int32", "short-rows", "4-d", "list"],
)
def test_bad_data_array(tmp_path, data, fragment):
    path = write_batch(tmp_path / "data_batch_1", data, [0, 1])
    with pytest.raises(DataError) as error:
        read_cifar_batch(path)
    assert_one_line_mentioning(error, str(path), "b'data'", fragment)


@pytest.mark.parametrize("labels", [[0, 1.5], [0, "1"], [0, True], b"\x00\x01", [0, 2**70]])
def test_bad_labels(tmp_path, labels):
    path = write_batch(tmp_path / "data_batch_1", sample_rows(2, 0), labels)
    with pytest.raises(DataError) as error:
        read_cifar_batch(path)
    assert_one_line_mentioning(error, str(path), "label")


def test_missing_key(tmp_path):
    path = tmp_path / "data_batch_1"
    path.write_bytes(py2_pickle({b"data": sample_rows(1, 0), b"fine_labels": [3]}))
    with pytest.raises(DataError) as error:
        read_cifar_batch(path)
    assert_one_line_mentioning(error, str(path), "missing key b'labels'", "b'fine_labels'")


def test_not_a_dict_and_not_a_pickle(tmp_path):
    path = tmp_path / "data_batch_1"
    path.write_bytes(py2_pickle([1, 2, 3]))
    with pytest.raises(DataError) as error:
        read_cifar_batch(path)
    assert_one_line_mentioning(error, str(path), "expected a pickled dict", "list")
    for junk in (b"", b"GIF89a not a pickle", py2_pickle({b"data": sample_rows(1, 0)})[:-40]):
        path.write_bytes(junk)
        with pytest.raises(DataError) as error:
            read_cifar_batch(path)
        assert_one_line_mentioning(error, str(path), "not a valid CIFAR-10 pickle")


def test_meta_validation(cifar_dir):
    (cifar_dir / "batches.meta").write_bytes(py2_pickle({b"label_names": []}))
    with pytest.raises(DataError) as error:
        load_cifar10(cifar_dir)
    assert_one_line_mentioning(error, "batches.meta", "label_names")
    write_meta(cifar_dir, names=["a", "b"])  # labels up to 9 no longer fit
    with pytest.raises(DataError) as error:
        load_cifar10(cifar_dir)
    assert_one_line_mentioning(error, "data_batch_1", "out of range for 2 classes")


def test_missing_file_names_it_and_the_fixes(cifar_dir, tmp_path):
    (cifar_dir / "data_batch_3").unlink()
    with pytest.raises(DataError) as error:
        load_cifar10(cifar_dir.parent)
    assert_one_line_mentioning(error, str(cifar_dir), "missing data_batch_3", "--data-dir")
    with pytest.raises(DataError) as error:
        load_cifar10(tmp_path / "nowhere")
    assert_one_line_mentioning(error, str(tmp_path / "nowhere"), "not a directory")
    with pytest.raises(DataError) as error:
        load_cifar10()
    assert_one_line_mentioning(
        error,
        "CIFAR-10 not found",
        str(tmp_path / "cache-root" / "cifar-10"),
        "convnet-gpu download cifar-10",
        "--data-dir",
    )


# ---------------------------------------------------------------- malicious pickles


class _RunsCommand:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Evals:
    def __reduce__(self):
        return (eval, ("__import__('os').getcwd()",))


@pytest.mark.parametrize("protocol", [2, 4])
def test_pickle_calling_os_system_is_refused(tmp_path, protocol):
    marker = tmp_path / "pwned"
    path = tmp_path / "data_batch_1"
    path.write_bytes(
        pickle.dumps({b"data": _RunsCommand(marker), b"labels": [0]}, protocol=protocol)
    )
    with pytest.raises(DataError) as error:
        read_cifar_batch(path)
    assert_one_line_mentioning(error, str(path), "refusing global", "system")
    assert not marker.exists()


def test_pickle_calling_eval_is_refused(tmp_path):
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": _Evals(), b"labels": [0]}, protocol=2))
    with pytest.raises(DataError) as error:
        read_cifar_batch(path)
    assert_one_line_mentioning(error, str(path), "refusing global", ".eval")


def test_object_dtype_array_is_refused(tmp_path):
    path = tmp_path / "data_batch_1"
    objects = np.array([os.getcwd, 1], dtype=object)
    path.write_bytes(py2_pickle({b"data": objects, b"labels": [0, 1]}))
    with pytest.raises(DataError) as error:
        read_cifar_batch(path)
    assert_one_line_mentioning(error, str(path), "not a valid CIFAR-10 pickle")


def test_codecs_encode_is_only_allowed_for_latin1(tmp_path):
    import codecs

    class _Rot13:
        def __reduce__(self):
            return (codecs.encode, ("text", "rot13"))

    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": _Rot13(), b"labels": []}, protocol=2))
    with pytest.raises(DataError) as error:
        read_cifar_batch(path)
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
        read_cifar_batch(path)
    assert_one_line_mentioning(error, "_reconstruct is only allowed for numpy.ndarray")


@pytest.mark.skipif(not REAL_DIR.is_dir(), reason=f"{REAL_DIR} not downloaded")
def test_real_cifar10():
    data = load_cifar10(REAL_DIR)
    assert data.train_x.shape == (50000, 3, 32, 32) and data.test_x.shape == (10000, 3, 32, 32)
    assert data.classes == CIFAR10_CLASSES
    assert np.bincount(data.test_y).tolist() == [1000] * 10
    assert 0.4 < data.mean[0] < 0.55 and 0.2 < data.std[2] < 0.3
