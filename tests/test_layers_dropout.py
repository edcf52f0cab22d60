"""Dropout (layers/dropout.py): keep rate, scaling, eval identity, masks by seed and step."""

from __future__ import annotations

import numpy as np
import pytest
from layer_helpers import forward_backward, layer_net

from convnet_gpu import Dropout


# ---- Dropout -------------------------------------------------------------------------------------
def _dropout_net(p=0.3, seed=0, batch=100, features=1000, dtype=np.float64):
    layer = Dropout(p, seed=seed)
    return layer, layer_net([layer], batch, (features,), dtype)


def test_dropout_keeps_one_minus_p_and_scales_by_its_inverse():
    layer, net = _dropout_net(p=0.3)  # 1e5 elements
    x = np.random.default_rng(6).uniform(1.0, 2.0, (100, 1000))
    dy = np.random.default_rng(7).standard_normal((100, 1000))
    y, dx = forward_backward(net, x, dy, train=True)
    kept = y != 0
    assert abs(kept.mean() - 0.7) < 0.01
    np.testing.assert_allclose(y[kept], x[kept] / 0.7, rtol=1e-15)
    np.testing.assert_allclose(dx, np.where(kept, dy / 0.7, 0.0), rtol=1e-15)  # the same mask
    assert layer.step == 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_eval_is_identity(dtype):
    layer, net = _dropout_net(p=0.5, dtype=dtype, batch=4, features=50)
    rng = np.random.default_rng(8)
    x, dy = rng.standard_normal((4, 50)), rng.standard_normal((4, 50))
    y, dx = forward_backward(net, x, dy, train=False)
    np.testing.assert_array_equal(y, x.astype(dtype))
    np.testing.assert_array_equal(dx, dy.astype(dtype))
    assert layer.step == 0  # evaluation draws no mask


def _masks(layer, net, steps, n=None):
    n = n or net.batch_size
    ones = np.ones((n,) + net.input_shape)
    masks = []
    for _ in range(steps):
        net.load_batch(ones)
        masks.append(net.forward(n, train=True).copy())
    return masks


def test_dropout_masks_depend_on_seed_and_step_only():
    first = _masks(*_dropout_net(p=0.5, seed=11, batch=8, features=64), steps=3)
    again = _masks(*_dropout_net(p=0.5, seed=11, batch=8, features=64), steps=3)
    other_seed = _masks(*_dropout_net(p=0.5, seed=12, batch=8, features=64), steps=1)
    for mask, same in zip(first, again):
        np.testing.assert_array_equal(mask, same)  # same seed and step: same mask
    assert not np.array_equal(first[0], first[1])  # next step: another mask
    assert not np.array_equal(first[1], first[2])
    assert not np.array_equal(first[0], other_seed[0])  # another seed: another mask
    assert np.mean(first[0] != first[1]) > 0.3  # and not a near copy


def test_dropout_frozen_step_repeats_its_mask_and_small_batches_use_the_first_rows():
    layer, net = _dropout_net(p=0.5, seed=2, batch=8, features=64)
    layer.frozen = True
    a, b = _masks(layer, net, steps=2)
    np.testing.assert_array_equal(a, b)
    assert layer.step == 0
    (small,) = _masks(layer, net, steps=1, n=3)
    np.testing.assert_array_equal(small, a[:3])  # element index = row * features + feature


def test_dropout_refuses_bad_arguments():
    for p in (-0.1, 1.0):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            Dropout(p)
    with pytest.raises(ValueError, match="seed"):
        Dropout(0.5, seed=-1)
