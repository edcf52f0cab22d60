"""Tests for convnet_gpu.data.batching: minibatch iteration over host arrays."""

from __future__ import annotations

import numpy as np
import pytest

from convnet_gpu.data import MinibatchLoader, iterate_minibatches


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
