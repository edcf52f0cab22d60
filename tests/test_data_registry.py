"""Tests for convnet_gpu.data.registry: every dataset name finds and loads its files, and the
names everything else uses (download SOURCES, the CLI) are the registry's."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from data_helpers import (
    CIFAR_BATCH_SIZES,
    CIFAR_TEST_SIZE,
    isolate_download_cache,
    sample_images,
    write_cifar,
    write_idx_dataset,
)
from helpers import assert_one_line_mentioning

from convnet_gpu.data import DATASETS, SOURCES, DataError, Dataset, DatasetInfo, dataset_info, mnist
from convnet_gpu.data.cifar10 import CIFAR10_SUBFOLDER

TRAIN_IMAGES, TEST_IMAGES = 30, 12


@pytest.fixture(autouse=True)
def download_cache(tmp_path, monkeypatch) -> Path:
    return isolate_download_cache(tmp_path, monkeypatch)


@pytest.fixture
def no_system_folders(monkeypatch):
    """Fashion-MNIST and MNIST searched in no Debian folder, so an installed copy cannot win."""
    for attribute in ("FASHION_MNIST_FOLDER", "MNIST_FOLDER"):
        folder = replace(getattr(mnist, attribute), default_dirs=("/nonexistent-datasets",))
        monkeypatch.setattr(mnist, attribute, folder)


def write_fake(name: str, directory: Path) -> tuple[Path, int]:
    """Small files of dataset `name` in its exact format; (folder to load, train image count)."""
    if name == "cifar-10":
        write_cifar(directory / CIFAR10_SUBFOLDER)
        return directory / CIFAR10_SUBFOLDER, sum(CIFAR_BATCH_SIZES)
    train_labels = (np.arange(TRAIN_IMAGES) % 10).astype(np.uint8)
    test_labels = (np.arange(TEST_IMAGES) % 10).astype(np.uint8)
    train, test = sample_images(TRAIN_IMAGES, 1, 28), sample_images(TEST_IMAGES, 2, 28)
    write_idx_dataset(directory, train, train_labels, test, test_labels)
    return directory, TRAIN_IMAGES


def test_the_names_are_the_cli_spellings_default_first():
    assert list(DATASETS) == ["fashion-mnist", "mnist", "cifar-10"]
    for name, info in DATASETS.items():
        assert isinstance(info, DatasetInfo) and info.name == name
    assert [info.title for info in DATASETS.values()] == ["Fashion-MNIST", "MNIST", "CIFAR-10"]


@pytest.mark.parametrize("name", list(DATASETS))
def test_every_dataset_loads_through_the_registry(tmp_path, name):
    info = dataset_info(name)
    folder, train_count = write_fake(name, tmp_path / "data")
    assert info.find_dir(tmp_path / "data") == folder
    data = info.load(tmp_path / "data")
    assert isinstance(data, Dataset)
    assert data.input_shape == info.input_shape
    assert data.num_classes == info.num_classes
    assert data.train_x.shape == (train_count, *info.input_shape)
    assert data.train_x.dtype == np.float32 and data.train_y.dtype == np.int32
    subset = info.load(tmp_path / "data", train_subset=3)
    np.testing.assert_array_equal(subset.train_x, data.train_x[:3])
    test_count = CIFAR_TEST_SIZE if name == "cifar-10" else TEST_IMAGES
    assert data.test_x.shape == (test_count, *info.input_shape)


@pytest.mark.parametrize("name", list(DATASETS))
def test_every_dataset_is_found_in_the_download_cache(download_cache, no_system_folders, name):
    info = dataset_info(name)
    with pytest.raises(DataError) as error:
        info.find_dir()
    assert_one_line_mentioning(
        error, f"{info.title} not found", f"convnet-gpu download {name}", "`data_dir`"
    )
    folder, train_count = write_fake(name, download_cache / name)
    assert info.find_dir() == folder
    assert len(info.load().train_y) == train_count


def test_unknown_name_is_a_one_line_error_listing_the_known_ones():
    with pytest.raises(DataError) as error:
        dataset_info("imagenet")
    assert_one_line_mentioning(error, "'imagenet'", "fashion-mnist, mnist, cifar-10")


def test_download_sources_use_registry_names():
    assert set(SOURCES) <= set(DATASETS)


def test_shapes_match_the_loader_constants():
    assert dataset_info("fashion-mnist").input_shape == (1, 28, 28)
    assert dataset_info("mnist").input_shape == (1, 28, 28)
    assert dataset_info("cifar-10").input_shape == (3, 32, 32)
    assert {info.num_classes for info in DATASETS.values()} == {10}
