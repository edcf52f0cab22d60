"""Tests for convnet_gpu.data.locate: the folder search every dataset shares."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from data_helpers import isolate_download_cache, sample_images, write_idx
from helpers import assert_one_line_mentioning

from convnet_gpu.data import IDX_FILE_NAMES, DataError, DataFolder, find_data_dir
from convnet_gpu.data.cifar10 import CIFAR10_FOLDER
from convnet_gpu.data.mnist import FASHION_MNIST_FOLDER


@pytest.fixture(autouse=True)
def download_cache(tmp_path, monkeypatch) -> Path:
    return isolate_download_cache(tmp_path, monkeypatch)


def fashion_mnist_in(*default_dirs) -> DataFolder:
    """Fashion-MNIST's folder searched in `default_dirs` instead of /usr/share/datasets."""
    return replace(FASHION_MNIST_FOLDER, default_dirs=tuple(str(d) for d in default_dirs))


def test_not_found_reports_every_way_to_get_data(tmp_path):
    with pytest.raises(DataError) as error:
        find_data_dir(fashion_mnist_in(tmp_path / "absent"))
    assert_one_line_mentioning(
        error,
        "Fashion-MNIST not found",
        "apt-get install dataset-fashion-mnist",
        "`data_dir`",
        f"{tmp_path / 'absent'} (absent)",
    )


def test_explicit_dir_missing_file(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", sample_images(2), gz=True)
    with pytest.raises(DataError) as error:
        find_data_dir(FASHION_MNIST_FOLDER, tmp_path)
    assert_one_line_mentioning(error, str(tmp_path), "missing train-labels-idx1-ubyte")


def test_explicit_dir_not_a_directory(tmp_path):
    with pytest.raises(DataError) as error:
        find_data_dir(FASHION_MNIST_FOLDER, tmp_path / "missing")
    assert_one_line_mentioning(error, str(tmp_path / "missing"), "not a directory")


def test_accepts_raw_and_gz_mix(tmp_path):
    for index, name in enumerate(IDX_FILE_NAMES):
        (tmp_path / (name + (".gz" if index % 2 else ""))).write_bytes(b"")
    assert find_data_dir(FASHION_MNIST_FOLDER, str(tmp_path)) == tmp_path
    assert find_data_dir(fashion_mnist_in("/nonexistent", tmp_path)) == tmp_path


def test_gz_only_where_allowed(tmp_path):
    folder = DataFolder("raw", "Raw", ("a",), "a folder holding a")
    (tmp_path / "a.gz").write_bytes(b"")
    with pytest.raises(DataError) as error:
        find_data_dir(folder, tmp_path)
    message = assert_one_line_mentioning(error, "missing a;", "a folder holding a")
    assert "a.gz" not in message
    assert find_data_dir(replace(folder, gz_ok=True), tmp_path) == tmp_path


def test_message_names_the_download_command(tmp_path, download_cache):
    with pytest.raises(DataError) as error:
        find_data_dir(fashion_mnist_in(tmp_path / "absent"))
    assert_one_line_mentioning(
        error,
        "apt-get install dataset-fashion-mnist",
        "`convnet-gpu download fashion-mnist`",
        str(download_cache / "fashion-mnist"),
        "`data_dir`",
    )


def test_dataset_without_download_source_does_not_suggest_download(tmp_path):
    folder = replace(
        FASHION_MNIST_FOLDER, name="kmnist", title="KMNIST", apt_package="dataset-kmnist"
    )
    with pytest.raises(DataError) as error:
        find_data_dir(replace(folder, default_dirs=(str(tmp_path),)))
    message = assert_one_line_mentioning(
        error, "KMNIST not found", "apt-get install dataset-kmnist", "`data_dir`"
    )
    assert "convnet-gpu download" not in message


def test_only_data_dir_left_to_suggest(tmp_path):
    folder = DataFolder("custom", "Custom", ("a",), "a folder holding a")
    with pytest.raises(DataError) as error:
        find_data_dir(folder)
    message = assert_one_line_mentioning(
        error, "Custom not found", "Pass `data_dir` pointing at a folder holding a"
    )
    assert "apt-get" not in message and "convnet-gpu download" not in message


def test_falls_back_to_download_cache(tmp_path, download_cache):
    cached = download_cache / "fashion-mnist"
    cached.mkdir(parents=True)
    for name in IDX_FILE_NAMES:
        (cached / f"{name}.gz").write_bytes(b"")
    assert find_data_dir(fashion_mnist_in(tmp_path / "no")) == cached
    # A complete Debian folder still wins over the cache.
    debian = tmp_path / "debian"
    debian.mkdir()
    for name in IDX_FILE_NAMES:
        (debian / name).write_bytes(b"")
    assert find_data_dir(fashion_mnist_in(debian)) == debian


def test_incomplete_download_cache_is_reported(download_cache):
    cached = download_cache / "fashion-mnist"
    cached.mkdir(parents=True)
    (cached / "train-images-idx3-ubyte.gz").write_bytes(b"")
    with pytest.raises(DataError) as error:
        find_data_dir(fashion_mnist_in())
    assert_one_line_mentioning(error, f"{cached} (missing train-labels-idx1-ubyte)")


def write_files(directory: Path, names) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        (directory / name).write_bytes(b"")
    return directory


def test_nested_folder_or_its_parent(tmp_path, download_cache):
    batches = write_files(tmp_path / "data" / "cifar-10-batches-py", CIFAR10_FOLDER.files)
    assert find_data_dir(CIFAR10_FOLDER, batches) == batches
    assert find_data_dir(CIFAR10_FOLDER, batches.parent) == batches
    cached = write_files(download_cache / "cifar-10" / "cifar-10-batches-py", CIFAR10_FOLDER.files)
    assert find_data_dir(CIFAR10_FOLDER) == cached


def test_nested_folder_missing_file_names_the_nested_folder(tmp_path):
    batches = write_files(tmp_path / "cifar-10-batches-py", CIFAR10_FOLDER.files[1:])
    with pytest.raises(DataError) as error:
        find_data_dir(CIFAR10_FOLDER, tmp_path)
    assert_one_line_mentioning(error, f"{batches}: missing data_batch_1", "(or its parent)")
