"""Tests for convnet_gpu.data.cifar10 on small batches written in the real file format."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from data_helpers import (
    CIFAR_TEST_SIZE,
    isolate_download_cache,
    py2_pickle,
    sample_rows,
    write_batch,
    write_cifar,
    write_meta,
)
from helpers import assert_one_line_mentioning

from convnet_gpu.data import DataError, Dataset, load_cifar10, read_cifar_batch
from convnet_gpu.data.cifar10 import CIFAR10_CLASSES, CIFAR10_SUBFOLDER

REAL_DIR = Path(os.path.expanduser("~/.cache/convnet_gpu/cifar-10")) / CIFAR10_SUBFOLDER


@pytest.fixture(autouse=True)
def download_cache(tmp_path, monkeypatch) -> Path:
    return isolate_download_cache(tmp_path, monkeypatch)


@pytest.fixture
def cifar_dir(tmp_path) -> Path:
    directory = tmp_path / "data" / CIFAR10_SUBFOLDER
    write_cifar(directory)
    return directory


# ---- reading a batch ------------------------------------------------------------------------
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


def test_read_batch_accepts_an_integer_label_array(tmp_path):
    path = write_batch(tmp_path / "data_batch_1", sample_rows(2, 0), np.array([3, 4], np.int16))
    np.testing.assert_array_equal(read_cifar_batch(path)[1], [3, 4])


# ---- load_cifar10 ---------------------------------------------------------------------------
def test_load_cifar10_normalizes_per_channel(cifar_dir):
    train_rows, train_labels, test_rows, test_labels = write_cifar(cifar_dir)
    data = load_cifar10(cifar_dir)
    assert isinstance(data, Dataset)
    assert data.train_x.shape == (20, 3, 32, 32)
    assert data.test_x.shape == (CIFAR_TEST_SIZE, 3, 32, 32)
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
    directory = tmp_path / CIFAR10_SUBFOLDER
    write_cifar(directory, py3=True)
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


def test_load_cifar10_from_download_cache(download_cache):
    write_cifar(download_cache / "cifar-10" / CIFAR10_SUBFOLDER)
    assert load_cifar10().train_x.shape == (20, 3, 32, 32)


# ---- validation -----------------------------------------------------------------------------
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


def test_constant_channel_cannot_be_normalized(cifar_dir):
    for index in range(1, 6):
        rows = sample_rows(2, index)
        rows[:, 1024:2048] = 9  # a flat green plane in every training batch
        write_batch(cifar_dir / f"data_batch_{index}", rows, [0, 1])
    with pytest.raises(DataError) as error:
        load_cifar10(cifar_dir)
    assert_one_line_mentioning(error, "data_batch_1", "channel G", "zero variance")


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


def test_missing_file_names_it_and_the_fixes(cifar_dir, tmp_path, download_cache):
    (cifar_dir / "data_batch_3").unlink()
    with pytest.raises(DataError) as error:
        load_cifar10(cifar_dir.parent)
    assert_one_line_mentioning(error, str(cifar_dir), "missing data_batch_3", "`data_dir`")
    with pytest.raises(DataError) as error:
        load_cifar10(tmp_path / "nowhere")
    assert_one_line_mentioning(error, str(tmp_path / "nowhere"), "not a directory")
    with pytest.raises(DataError) as error:
        load_cifar10()
    assert_one_line_mentioning(
        error,
        "CIFAR-10 not found",
        str(download_cache / "cifar-10"),
        "convnet-gpu download cifar-10",
        "`data_dir`",
    )


@pytest.mark.skipif(not REAL_DIR.is_dir(), reason=f"{REAL_DIR} not downloaded")
def test_real_cifar10():
    data = load_cifar10(REAL_DIR)
    assert data.train_x.shape == (50000, 3, 32, 32) and data.test_x.shape == (10000, 3, 32, 32)
    assert data.classes == CIFAR10_CLASSES
    assert np.bincount(data.test_y).tolist() == [1000] * 10
    assert 0.4 < data.mean[0] < 0.55 and 0.2 < data.std[2] < 0.3
