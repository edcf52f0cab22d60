"""Tests for convnet_gpu.data: IDX reading, dataset loading, minibatching."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_one_line_mentioning

from convnet_gpu.data import (
    DataError,
    Dataset,
    MinibatchLoader,
    find_dataset_dir,
    iterate_minibatches,
    load_fashion_mnist,
    load_idx_pair,
    load_mnist,
    read_idx,
)
from convnet_gpu.data import download as dl
from convnet_gpu.data import fashion_mnist as fm

REAL_DIR = Path("/usr/share/datasets/fashion-mnist")
TYPE_BYTES = {np.dtype("u1"): 0x08, np.dtype(">i2"): 0x0B, np.dtype(">f4"): 0x0D}


def idx_bytes(array: np.ndarray, big_endian_dtype: str = "u1") -> bytes:
    dtype = np.dtype(big_endian_dtype)
    header = bytes([0, 0, TYPE_BYTES[dtype], array.ndim])
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(dtype).tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool = False, dtype: str = "u1") -> Path:
    data = idx_bytes(array, dtype)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def sample_images(count: int, seed: int = 0, size: int = 4) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, size, size), dtype=np.uint8)


def write_dataset(directory: Path, train_x, train_y, test_x, test_y, gz: bool = True) -> Path:
    suffix = ".gz" if gz else ""
    names = fm.IDX_FILE_NAMES
    for name, array in zip(names, (train_x, train_y, test_x, test_y)):
        write_idx(directory / f"{name}{suffix}", array, gz=gz)
    return directory


@pytest.fixture(autouse=True)
def isolated_download_cache(tmp_path, monkeypatch) -> Path:
    """Point the download cache at an empty folder so a real ~/.cache cannot leak in."""
    root = tmp_path / "download-cache"
    monkeypatch.setenv(dl.CACHE_ENV_VAR, str(root))
    return root


# ---------------------------------------------------------------- read_idx


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_roundtrips_uint8_images(tmp_path, gz):
    images = sample_images(5)
    # A misleading name proves gzip is detected from content, not the suffix.
    path = write_idx(tmp_path / "images.bin", images, gz=gz)
    result = read_idx(path)
    assert result.dtype == np.uint8
    assert result.shape == (5, 4, 4)
    np.testing.assert_array_equal(result, images)
    result[0, 0, 0] = 1  # must be writable, not a view of the file bytes


@pytest.mark.parametrize("dtype", [">i2", ">f4"])
def test_read_idx_returns_native_endian_for_wider_types(tmp_path, dtype):
    values = np.array([[-3, 7, 1000], [2, 0, -1]]).astype(dtype)
    result = read_idx(write_idx(tmp_path / "wide.idx", values, dtype=dtype))
    assert result.dtype.isnative
    assert result.shape == (2, 3)
    np.testing.assert_array_equal(result, values)


def test_read_idx_1d_labels(tmp_path):
    labels = np.array([0, 9, 3, 255], dtype=np.uint8)
    result = read_idx(write_idx(tmp_path / "labels.gz", labels, gz=True))
    np.testing.assert_array_equal(result, labels)


def test_bad_magic_names_file_and_magic(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(b"PK\x03\x04" + bytes(20))
    with pytest.raises(DataError) as error:
        read_idx(path)
    assert_one_line_mentioning(error, str(path), "bad IDX magic 0x504b0304", "is this an IDX file?")


def test_unsupported_type_byte(tmp_path):
    path = tmp_path / "weird.idx"
    path.write_bytes(bytes([0, 0, 0x07, 1]) + struct.pack(">I", 2) + b"ab")
    with pytest.raises(DataError) as error:
        read_idx(path)
    assert_one_line_mentioning(error, str(path), "unsupported IDX element type 0x07")


def test_zero_dimensions_rejected(tmp_path):
    path = tmp_path / "scalar.idx"
    path.write_bytes(bytes([0, 0, 0x08, 0]) + b"x")
    with pytest.raises(DataError) as error:
        read_idx(path)
    assert_one_line_mentioning(error, str(path), "0 dimensions")


def test_truncated_header(tmp_path):
    path = tmp_path / "short.idx"
    path.write_bytes(bytes([0, 0, 0x08, 3]) + struct.pack(">I", 60000))
    with pytest.raises(DataError) as error:
        read_idx(path)
    assert_one_line_mentioning(error, str(path), "truncated IDX header")


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_payload(tmp_path, gz):
    data = idx_bytes(sample_images(3))[:-5]
    path = tmp_path / "cut.idx"
    path.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(DataError) as error:
        read_idx(path)
    assert_one_line_mentioning(error, str(path), "truncated payload", "43 bytes", "expected 48")


def test_trailing_bytes(tmp_path):
    path = tmp_path / "long.idx"
    path.write_bytes(idx_bytes(sample_images(3)) + b"\x00\x01\x02")
    with pytest.raises(DataError) as error:
        read_idx(path)
    assert_one_line_mentioning(error, str(path), "trailing bytes", "3 extra")


def test_corrupt_gzip(tmp_path):
    compressed = bytearray(gzip.compress(idx_bytes(sample_images(20))))
    compressed[15:40] = bytes(25)  # clobber the deflate stream, keep the 1f 8b magic
    path = tmp_path / "corrupt.gz"
    path.write_bytes(bytes(compressed))
    with pytest.raises(DataError) as error:
        read_idx(path)
    assert_one_line_mentioning(error, str(path), "corrupt gzip")


def test_cut_gzip_stream(tmp_path):
    compressed = gzip.compress(idx_bytes(sample_images(20)))
    path = tmp_path / "cut.gz"
    path.write_bytes(compressed[: len(compressed) // 2])
    with pytest.raises(DataError) as error:
        read_idx(path)
    assert_one_line_mentioning(error, str(path), "corrupt gzip")


def test_missing_file_is_data_error(tmp_path):
    path = tmp_path / "nope-idx3-ubyte.gz"
    with pytest.raises(DataError) as error:
        read_idx(path)
    assert not isinstance(error.value, FileNotFoundError)
    assert_one_line_mentioning(error, str(path), "file not found")


def test_data_error_is_value_error():
    assert issubclass(DataError, ValueError)


# ---------------------------------------------------------------- load_idx_pair


def test_load_idx_pair_roundtrip(tmp_path):
    images, labels = sample_images(6), np.arange(6, dtype=np.uint8)
    got_x, got_y = load_idx_pair(
        write_idx(tmp_path / "x.gz", images, gz=True), write_idx(tmp_path / "y", labels)
    )
    assert got_x.dtype == np.uint8 and got_y.dtype == np.uint8
    np.testing.assert_array_equal(got_x, images)
    np.testing.assert_array_equal(got_y, labels)


def test_load_idx_pair_count_mismatch_names_both(tmp_path):
    x_path = write_idx(tmp_path / "imgs", sample_images(6))
    y_path = write_idx(tmp_path / "lbls", np.zeros(5, dtype=np.uint8))
    with pytest.raises(DataError) as error:
        load_idx_pair(x_path, y_path)
    assert_one_line_mentioning(error, str(x_path), str(y_path), "6 images", "5 labels")


def test_load_idx_pair_rejects_wrong_dims(tmp_path):
    flat = write_idx(tmp_path / "flat", np.zeros((4, 16), dtype=np.uint8))
    labels = write_idx(tmp_path / "lbls", np.zeros(4, dtype=np.uint8))
    with pytest.raises(DataError) as error:
        load_idx_pair(flat, labels)
    assert_one_line_mentioning(error, str(flat), "3-D")
    with pytest.raises(DataError) as error:
        load_idx_pair(write_idx(tmp_path / "imgs", sample_images(4)), flat)
    assert_one_line_mentioning(error, str(flat), "1-D")


# ---------------------------------------------------------------- find_dataset_dir


def test_find_dataset_dir_reports_both_ways_to_get_data(tmp_path):
    with pytest.raises(DataError) as error:
        find_dataset_dir(
            None, fm.IDX_FILE_NAMES, "Fashion-MNIST", default_dirs=(str(tmp_path / "absent"),)
        )
    assert_one_line_mentioning(
        error, "apt-get install dataset-fashion-mnist", "--data-dir", str(tmp_path / "absent")
    )


def test_load_fashion_mnist_without_data_reports_both_ways(tmp_path, monkeypatch):
    monkeypatch.setattr(fm, "DEFAULT_DIRS", (str(tmp_path),))
    with pytest.raises(DataError) as error:
        load_fashion_mnist()
    assert_one_line_mentioning(error, "apt-get install dataset-fashion-mnist", "--data-dir")


def test_find_dataset_dir_explicit_dir_missing_file(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", sample_images(2), gz=True)
    with pytest.raises(DataError) as error:
        find_dataset_dir(tmp_path, fm.IDX_FILE_NAMES, "Fashion-MNIST")
    assert_one_line_mentioning(error, str(tmp_path), "missing train-labels-idx1-ubyte")


def test_find_dataset_dir_explicit_dir_not_a_directory(tmp_path):
    with pytest.raises(DataError) as error:
        find_dataset_dir(tmp_path / "missing", fm.IDX_FILE_NAMES, "Fashion-MNIST")
    assert_one_line_mentioning(error, str(tmp_path / "missing"), "not a directory")


def test_find_dataset_dir_accepts_raw_and_gz_mix(tmp_path):
    for index, name in enumerate(fm.IDX_FILE_NAMES):
        (tmp_path / (name + (".gz" if index % 2 else ""))).write_bytes(b"")
    assert find_dataset_dir(str(tmp_path), fm.IDX_FILE_NAMES, "Fashion-MNIST") == tmp_path
    found = find_dataset_dir(None, fm.IDX_FILE_NAMES, "X", default_dirs=("/nonexistent", tmp_path))
    assert found == tmp_path


def test_find_dataset_dir_message_names_the_download_command(tmp_path, isolated_download_cache):
    with pytest.raises(DataError) as error:
        find_dataset_dir(
            None, fm.IDX_FILE_NAMES, "Fashion-MNIST", default_dirs=(str(tmp_path / "absent"),)
        )
    assert_one_line_mentioning(
        error,
        "apt-get install dataset-fashion-mnist",
        "`convnet-gpu download fashion-mnist`",
        str(isolated_download_cache / "fashion-mnist"),
        "--data-dir",
    )


def test_find_dataset_dir_unknown_dataset_does_not_suggest_download(tmp_path):
    with pytest.raises(DataError) as error:
        find_dataset_dir(None, fm.IDX_FILE_NAMES, "KMNIST", default_dirs=(str(tmp_path),))
    message = assert_one_line_mentioning(error, "apt-get install dataset-kmnist", "--data-dir")
    assert "convnet-gpu download" not in message


def test_find_dataset_dir_falls_back_to_download_cache(tmp_path, isolated_download_cache):
    cached = isolated_download_cache / "fashion-mnist"
    cached.mkdir(parents=True)
    for name in fm.IDX_FILE_NAMES:
        (cached / f"{name}.gz").write_bytes(b"")
    found = find_dataset_dir(
        None, fm.IDX_FILE_NAMES, "Fashion-MNIST", default_dirs=(str(tmp_path / "no"),)
    )
    assert found == cached
    # A complete Debian folder still wins over the cache.
    debian = tmp_path / "debian"
    debian.mkdir()
    for name in fm.IDX_FILE_NAMES:
        (debian / name).write_bytes(b"")
    assert (
        find_dataset_dir(None, fm.IDX_FILE_NAMES, "Fashion-MNIST", default_dirs=(debian,)) == debian
    )


def test_incomplete_download_cache_is_reported(tmp_path, isolated_download_cache):
    cached = isolated_download_cache / "fashion-mnist"
    cached.mkdir(parents=True)
    (cached / "train-images-idx3-ubyte.gz").write_bytes(b"")
    with pytest.raises(DataError) as error:
        find_dataset_dir(None, fm.IDX_FILE_NAMES, "Fashion-MNIST", default_dirs=())
    assert_one_line_mentioning(error, f"{cached} (missing train-labels-idx1-ubyte)")


def test_load_mnist_from_download_cache(isolated_download_cache, monkeypatch):
    monkeypatch.setattr(fm, "MNIST_DEFAULT_DIRS", ("/nonexistent-mnist",))
    labels = (np.arange(12) % 10).astype(np.uint8)
    cached = isolated_download_cache / "mnist"
    cached.mkdir(parents=True)
    write_dataset(cached, sample_images(12, size=28), labels, sample_images(12, 3, 28), labels)
    data = load_mnist()
    assert data.train_x.shape == (12, 1, 28, 28)
    assert data.classes[0] == "0"


# ---------------------------------------------------------------- load_idx_dataset


@pytest.fixture
def synthetic_dir(tmp_path) -> Path:
    rng = np.random.default_rng(1)
    train_x = rng.integers(0, 128, (50, 28, 28), dtype=np.uint8)
    # Brighter test images: their normalized mean must stay clearly above 0.
    test_x = rng.integers(128, 256, (20, 28, 28), dtype=np.uint8)
    train_y = (np.arange(50) % 10).astype(np.uint8)
    test_y = (np.arange(20) % 10).astype(np.uint8)
    return write_dataset(tmp_path, train_x, train_y, test_x, test_y)


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
    write_dataset(tmp_path, sample_images(3, size=28), labels, sample_images(3, 2, 28), labels)
    with pytest.raises(DataError) as error:
        load_fashion_mnist(tmp_path)
    assert_one_line_mentioning(error, "train-labels-idx1-ubyte", "label 10")


def test_train_test_image_size_mismatch(tmp_path):
    labels = np.zeros(3, dtype=np.uint8)
    write_dataset(tmp_path, sample_images(3, size=28), labels, sample_images(3, size=27), labels)
    with pytest.raises(DataError) as error:
        load_fashion_mnist(tmp_path)
    assert_one_line_mentioning(error, "28x28", "27x27")


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


# ---------------------------------------------------------------- batching


def numbered_samples(count: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.arange(count * 3, dtype=np.float32).reshape(count, 1, 3)
    return x, np.arange(count, dtype=np.int32)


def collect_epoch(loader: MinibatchLoader, rng=None) -> tuple[list[int], np.ndarray]:
    sizes, order = [], []
    for xb, yb in loader.epoch(rng):
        assert xb.shape[0] == yb.shape[0]
        np.testing.assert_array_equal(xb[:, 0, 0], yb * 3)  # x rows stay paired with labels
        sizes.append(len(yb))
        order.extend(yb.tolist())
    return sizes, np.array(order)


def test_loader_shuffled_epoch_covers_every_sample_once():
    loader = MinibatchLoader(*numbered_samples(23), batch_size=5)
    sizes, order = collect_epoch(loader, np.random.default_rng(0))
    assert len(loader) == 5
    assert sizes == [5, 5, 5, 5, 3]
    np.testing.assert_array_equal(np.sort(order), np.arange(23))
    assert not np.array_equal(order, np.arange(23))


def test_loader_without_rng_is_sequential():
    sizes, order = collect_epoch(MinibatchLoader(*numbered_samples(10), batch_size=4))
    assert sizes == [4, 4, 2]
    np.testing.assert_array_equal(order, np.arange(10))


def test_loader_same_seed_same_order_and_new_order_each_epoch():
    first = MinibatchLoader(*numbered_samples(40), batch_size=8)
    second = MinibatchLoader(*numbered_samples(40), batch_size=8)
    rng_a, rng_b = np.random.default_rng(42), np.random.default_rng(42)
    epoch_a1, epoch_b1 = collect_epoch(first, rng_a)[1], collect_epoch(second, rng_b)[1]
    np.testing.assert_array_equal(epoch_a1, epoch_b1)
    epoch_a2 = collect_epoch(first, rng_a)[1]
    np.testing.assert_array_equal(epoch_a2, collect_epoch(second, rng_b)[1])
    assert not np.array_equal(epoch_a1, epoch_a2)


def test_loader_reuses_its_buffers():
    loader = MinibatchLoader(*numbered_samples(6), batch_size=2)
    batches = list(loader.epoch())
    first_x, last_x = batches[0][0], batches[-1][0]
    assert np.shares_memory(first_x, last_x)
    np.testing.assert_array_equal(first_x, last_x)  # earlier view was overwritten


def test_loader_batch_larger_than_dataset():
    loader = MinibatchLoader(*numbered_samples(3), batch_size=100)
    sizes, order = collect_epoch(loader, np.random.default_rng(3))
    assert len(loader) == 1 and sizes == [3]
    np.testing.assert_array_equal(np.sort(order), np.arange(3))


def test_loader_rejects_bad_arguments():
    x, y = numbered_samples(4)
    with pytest.raises(ValueError, match="batch_size"):
        MinibatchLoader(x, y, 0)
    with pytest.raises(ValueError, match="samples"):
        MinibatchLoader(x, y[:3], 2)


def test_iterate_minibatches_covers_all_and_keeps_last_batch():
    x, y = numbered_samples(11)
    batches = list(iterate_minibatches(x, y, 4, shuffle=True, rng=np.random.default_rng(5)))
    assert [len(yb) for _, yb in batches] == [4, 4, 3]
    order = np.concatenate([yb for _, yb in batches])
    np.testing.assert_array_equal(np.sort(order), np.arange(11))
    for xb, yb in batches:
        np.testing.assert_array_equal(xb[:, 0, 0], yb * 3)
    plain = np.concatenate([yb for _, yb in iterate_minibatches(x, y, 4, shuffle=False)])
    np.testing.assert_array_equal(plain, np.arange(11))
