"""Tests for convnet_gpu.data.dataset: exact statistics, normalization and the shared checks."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_one_line_mentioning

from convnet_gpu.data import (
    DataError,
    Dataset,
    channel_mean_std,
    normalize_channels,
    normalize_images,
    pixel_mean_std,
)
from convnet_gpu.data.dataset import check_labels, check_train_subset


def test_pixel_mean_std_is_exact_over_chunks():
    images = np.random.default_rng(0).integers(0, 256, (5000, 3, 3), dtype=np.uint8)
    mean, std = pixel_mean_std(images)  # 5000 images: more than one histogram chunk
    scaled = images.astype(np.float64) / 255
    assert mean == pytest.approx(scaled.mean(), rel=1e-13)
    assert std == pytest.approx(scaled.std(), rel=1e-12)


def test_normalize_images_adds_the_channel_axis():
    images = np.array([[[0, 255]]], dtype=np.uint8)
    out = normalize_images(images, 0.5, 0.5)
    assert out.dtype == np.float32 and out.shape == (1, 1, 1, 2)
    np.testing.assert_allclose(out.ravel(), [-1.0, 1.0], atol=1e-6)


def test_channel_stats_and_normalization_per_channel():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (6, 3, 4, 4), dtype=np.uint8)
    images[:, 0] //= 4
    mean, std = channel_mean_std(images)
    assert len(mean) == len(std) == 3 and mean[0] < mean[1]
    out = normalize_channels(images, mean, std)
    assert out.dtype == np.float32 and out.shape == images.shape
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(0, 2, 3)), 1.0, atol=1e-4)


def test_dataset_shape_and_class_count():
    x, y = np.zeros((2, 1, 5, 6), np.float32), np.zeros(2, np.int32)
    data = Dataset(x, y, x, y, ("a", "b", "c"), 0.5, 0.25)
    assert data.input_shape == (1, 5, 6) and data.num_classes == 3


def test_check_train_subset():
    assert check_train_subset(None, 9) == 9
    assert check_train_subset(np.int64(4), 9) == 4
    with pytest.raises(DataError) as error:
        check_train_subset(10, 9)
    assert_one_line_mentioning(error, "train_subset=10", "1..9")


def test_check_labels_names_the_file_and_the_bad_label():
    check_labels("f", np.array([0, 9]), 10)
    check_labels("f", np.zeros(0, np.int64), 10)
    for labels, bad in (([3, 10, 2], "label 10"), ([3, -2, 12], "label -2")):
        with pytest.raises(DataError) as error:
            check_labels("some/file", np.array(labels), 10)
        assert_one_line_mentioning(error, "some/file", bad, "out of range for 10 classes")
