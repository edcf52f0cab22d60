"""Tests for convnet_gpu.data.mnist: Fashion-MNIST and MNIST loaded from IDX files."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from data_helpers import isolate_download_cache, sample_images, write_idx_dataset
from helpers import assert_one_line_mentioning

from convnet_gpu.data import DataError, Dataset, load_fashion_mnist, load_mnist, mnist, read_idx

REAL_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def download_cache(tmp_path, monkeypatch) -> Path:
    return isolate_download_cache(tmp_path, monkeypatch)


@pytest.fixture
def synthetic_dir(tmp_path) -> Path:
    rng = np.random.default_rng(1)
    train_x = rng.integers(0, 128, (50, 28, 28), dtype=np.uint8)
    # Brighter test images: their normalized mean must stay clearly above 0.
    test_x = rng.integers(128, 256, (20, 28, 28), dtype=np.uint8)
    train_y = (np.arange(50) % 10).astype(np.uint8)
    test_y = (np.arange(20) % 10).astype(np.uint8)
    return write_idx_dataset(tmp_path, train_x, train_y, test_x, test_y)


def test_load_fashion_mnist_without_data_reports_both_ways(tmp_path, monkeypatch):
    folder = replace(mnist.FASHION_MNIST_FOLDER, default_dirs=(str(tmp_path),))
    monkeypatch.setattr(mnist, "FASHION_MNIST_FOLDER", folder)
    with pytest.raises(DataError) as error:
        load_fashion_mnist()
    assert_one_line_mentioning(error, "apt-get install dataset-fashion-mnist", "`data_dir`")


def test_load_mnist_from_download_cache(download_cache, monkeypatch):
    folder = replace(mnist.MNIST_FOLDER, default_dirs=("/nonexistent-mnist",))
    monkeypatch.setattr(mnist, "MNIST_FOLDER", folder)
    labels = (np.arange(12) % 10).astype(np.uint8)
    cached = download_cache / "mnist"
    write_idx_dataset(cached, sample_images(12, size=28), labels, sample_images(12, 3, 28), labels)
    data = load_mnist()
    assert data.train_x.shape == (12, 1, 28, 28)
    assert data.classes[0] == "0"


def test_load_normalizes_with_training_stats(synthetic_dir):
    data = load_fashion_mnist(synthetic_dir)
    raw_train = read_idx(synthetic_dir / "train-images-idx3-ubyte.gz").astype(np.float64) / 255
    raw_test = read_idx(synthetic_dir / "t10k-images-idx3-ubyte.gz").astype(np.float64) / 255
    assert isinstance(data, Dataset)
    assert data.mean == pytest.approx(raw_train.mean(), rel=1e-12)
    assert data.std == pytest.approx(raw_train.std(), rel=1e-12)
    assert float(data.train_x.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(data.train_x.std()) == pytest.approx(1.0, abs=1e-4)
    expected_test = (raw_test - data.mean) / data.std
    np.testing.assert_allclose(data.test_x[:, 0], expected_test, rtol=1e-5, atol=1e-5)
    assert float(data.test_x.mean()) > 1.0


def test_load_dtypes_shapes_and_classes(synthetic_dir):
    data = load_fashion_mnist(str(synthetic_dir))
    assert data.train_x.dtype == np.float32 and data.test_x.dtype == np.float32
    assert data.train_y.dtype == np.int32 and data.test_y.dtype == np.int32
    assert data.train_x.shape == (50, 1, 28, 28) and data.test_x.shape == (20, 1, 28, 28)
    assert data.input_shape == (1, 28, 28)
    assert data.classes[0] == "T-shirt/top" and data.classes[-1] == "Ankle boot"
    assert len(data.classes) == 10
    np.testing.assert_array_equal(data.train_y, np.arange(50) % 10)


def test_mnist_reads_the_same_files_with_digit_classes(synthetic_dir):
    digits, fashion = load_mnist(synthetic_dir), load_fashion_mnist(synthetic_dir)
    np.testing.assert_array_equal(digits.train_x, fashion.train_x)
    assert digits.classes == tuple("0123456789")


def test_train_subset_keeps_first_n_with_full_set_stats(synthetic_dir):
    full = load_fashion_mnist(synthetic_dir)
    subset = load_fashion_mnist(synthetic_dir, train_subset=7)
    assert subset.train_x.shape == (7, 1, 28, 28)
    np.testing.assert_array_equal(subset.train_x, full.train_x[:7])
    np.testing.assert_array_equal(subset.train_y, full.train_y[:7])
    assert (subset.mean, subset.std) == (full.mean, full.std)
    np.testing.assert_array_equal(subset.test_x, full.test_x)


@pytest.mark.parametrize("bad", [0, -1, 51, True, 2.5])
def test_train_subset_out_of_range(synthetic_dir, bad):
    with pytest.raises(DataError) as error:
        load_fashion_mnist(synthetic_dir, train_subset=bad)
    assert_one_line_mentioning(error, "train_subset", "1..50")


def test_labels_beyond_class_count_rejected(tmp_path):
    labels = np.array([0, 1, 10], dtype=np.uint8)
    write_idx_dataset(tmp_path, sample_images(3, size=28), labels, sample_images(3, 2, 28), labels)
    with pytest.raises(DataError) as error:
        load_fashion_mnist(tmp_path)
    assert_one_line_mentioning(error, "train-labels-idx1-ubyte", "label 10")


def test_train_test_image_size_mismatch(tmp_path):
    labels = np.zeros(3, dtype=np.uint8)
    write_idx_dataset(
        tmp_path, sample_images(3, size=28), labels, sample_images(3, size=27), labels
    )
    with pytest.raises(DataError) as error:
        load_fashion_mnist(tmp_path)
    assert_one_line_mentioning(error, "28x28", "27x27")


def test_constant_training_images_cannot_be_normalized(tmp_path):
    labels = np.zeros(3, dtype=np.uint8)
    flat = np.full((3, 28, 28), 7, dtype=np.uint8)
    write_idx_dataset(tmp_path, flat, labels, sample_images(3, size=28), labels)
    with pytest.raises(DataError) as error:
        load_fashion_mnist(tmp_path)
    assert_one_line_mentioning(error, "train-images-idx3-ubyte", "zero variance")


@pytest.mark.skipif(not REAL_DIR.is_dir(), reason=f"{REAL_DIR} not installed")
def test_real_fashion_mnist():
    data = load_fashion_mnist()
    assert data.train_x.shape == (60000, 1, 28, 28)
    assert data.test_x.shape == (10000, 1, 28, 28)
    assert data.input_shape == (1, 28, 28)
    assert set(np.unique(data.train_y)) == set(range(10))
    assert set(np.unique(data.test_y)) == set(range(10))
    assert 0.2 < data.mean < 0.4 and 0.25 < data.std < 0.45
    assert abs(float(data.train_x.mean(dtype=np.float64))) < 1e-4
