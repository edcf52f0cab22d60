"""Optimizers and gradient clipping.

The optimizers are checked against torch.optim on a tiny float64 net (Flatten -> Dense -> Bias,
softmax cross-entropy): same initial weights, same batches, several steps with a changing lr,
parameters equal within 1e-10. Our Dense weight is (in, out); torch's Linear weight is (out, in).
"""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
from optim_helpers import BATCH, batches, tiny_net

from convnet_gpu import Net, SoftmaxCrossEntropy, get_backend
from convnet_gpu.layers import Bias, Dense, Flatten
from convnet_gpu.optim import (
    OPTIMIZERS,
    SGD,
    Adam,
    AdamW,
    ClipScratch,
    build_optimizer,
    clip_grad_norm,
)

CPU = get_backend("cpu")
LR_FACTORS = (1.0, 2.0, 0.5, 1.5, 1.0, 0.25)  # the lr changes between steps, as a schedule would


def weight_and_bias(net):
    return net.layers[1].params["weight"], net.layers[2].params["bias"]


# ---- against torch.optim --------------------------------------------------------------------
CASES = {
    "sgd": (
        lambda: SGD(0.1, momentum=0.0, weight_decay=0.01),
        lambda torch, groups: torch.optim.SGD(groups, lr=0.1, momentum=0.0),
    ),
    "sgd-momentum": (
        lambda: SGD(0.1, momentum=0.9, weight_decay=0.01),
        lambda torch, groups: torch.optim.SGD(groups, lr=0.1, momentum=0.9),
    ),
    "nesterov": (
        lambda: SGD(0.1, momentum=0.9, weight_decay=0.01, nesterov=True),
        lambda torch, groups: torch.optim.SGD(groups, lr=0.1, momentum=0.9, nesterov=True),
    ),
    "adam": (
        lambda: Adam(0.01, betas=(0.8, 0.99), eps=1e-8, weight_decay=0.01),
        lambda torch, groups: torch.optim.Adam(groups, lr=0.01, betas=(0.8, 0.99), eps=1e-8),
    ),
    "adamw": (
        lambda: AdamW(0.01, weight_decay=0.1),
        lambda torch, groups: torch.optim.AdamW(groups, lr=0.01),
    ),
    "adam-clipped": (
        lambda: Adam(0.01, weight_decay=0.01, max_grad_norm=0.3),
        lambda torch, groups: torch.optim.Adam(groups, lr=0.01),
    ),
    "nesterov-clipped": (
        lambda: SGD(0.1, momentum=0.9, nesterov=True, max_grad_norm=0.3),
        lambda torch, groups: torch.optim.SGD(groups, lr=0.1, momentum=0.9, nesterov=True),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_optimizer_matches_torch_over_several_steps(case):
    torch = pytest.importorskip("torch")
    make_ours, make_torch = CASES[case]
    net = tiny_net()
    ours = make_ours().setup(net)
    weight, bias = weight_and_bias(net)
    weight_start = weight.copy()
    t_weight = torch.tensor(weight.T.copy(), requires_grad=True)  # (out, in)
    t_bias = torch.tensor(bias.copy(), requires_grad=True)
    theirs = make_torch(
        torch,
        [
            {"params": [t_weight], "weight_decay": ours.weight_decay},
            {"params": [t_bias], "weight_decay": 0.0},
        ],
    )
    base_lr = ours.lr
    for factor, (images, labels) in zip(LR_FACTORS, batches(len(LR_FACTORS))):
        n = net.load_batch(images, labels)
        net.forward(n)
        net.backward(n)
        ours.lr = base_lr * factor
        ours.step()

        logits = torch.from_numpy(images.reshape(BATCH, -1)) @ t_weight.T + t_bias
        loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(labels).long())
        theirs.zero_grad()
        loss.backward()
        if ours.max_grad_norm is not None:
            torch_norm = torch.nn.utils.clip_grad_norm_([t_weight, t_bias], ours.max_grad_norm)
            assert float(ours.grad_norm) == pytest.approx(float(torch_norm), rel=1e-12)
        for group in theirs.param_groups:
            group["lr"] = base_lr * factor
        theirs.step()

    assert np.max(np.abs(weight - t_weight.detach().numpy().T)) < 1e-10
    assert np.max(np.abs(bias - t_bias.detach().numpy())) < 1e-10
    assert np.max(np.abs(weight - weight_start)) > 1e-3  # the steps really moved the weights
    assert ours.state_scalars() == {"steps": len(LR_FACTORS), "lr": base_lr * LR_FACTORS[-1]}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_weight_decay_shrinks_weights_and_never_touches_biases(name):
    net = tiny_net()
    optimizer = build_optimizer(name, lr=0.01, momentum=0.9, weight_decay=0.5).setup(net)
    weight, bias = weight_and_bias(net)
    weight_before, bias_before = weight.copy(), bias.copy()
    net.params.grad.fill(0.0)  # only the decay moves anything
    optimizer.step()
    assert np.array_equal(bias, bias_before)
    assert np.all(np.abs(weight) < np.abs(weight_before))
    if name == "sgd":  # one step from v = 0: w - lr * wd * w
        np.testing.assert_allclose(weight, weight_before * (1 - 0.01 * 0.5), rtol=1e-14)
    if name == "nesterov":  # v = g = wd * w, then w - lr * (g + momentum * v)
        np.testing.assert_allclose(weight, weight_before * (1 - 0.01 * 0.5 * 1.9), rtol=1e-14)
    if name == "adamw":  # the decoupled decay, then Adam on a zero gradient (no move)
        np.testing.assert_allclose(weight, weight_before - 0.01 * 0.5 * weight_before, rtol=1e-14)


# ---- clipping -------------------------------------------------------------------------------
def _clip_case(grad_values, max_norm):
    net = tiny_net()
    params = net.params
    params.grad.fill(0.0)
    params.grad[: len(grad_values)] = grad_values
    scratch = ClipScratch.allocate(net.backend, params)
    return params, scratch, clip_grad_norm(params, max_norm, scratch)


def test_clip_grad_norm_scales_a_large_gradient_to_max_norm():
    params, scratch, norm = _clip_case([3.0, -4.0], max_norm=1.0)  # norm 5
    assert norm is scratch.norm and norm.shape == () and scratch.scale.shape == ()
    assert float(norm) == 5.0
    assert float(scratch.scale) == 1.0 / (5.0 + 1e-6)
    np.testing.assert_allclose(params.grad[:2], [0.6, -0.8], rtol=1e-6)
    assert float(np.linalg.norm(params.grad)) == pytest.approx(1.0, rel=1e-6)
    assert not np.any(params.grad[2:])


def test_clip_grad_norm_leaves_a_small_gradient_unchanged():
    params, scratch, norm = _clip_case([0.3, 0.4], max_norm=1.0)  # norm 0.5
    assert float(norm) == pytest.approx(0.5, rel=1e-15)
    assert float(scratch.scale) == 1.0
    assert params.grad[0] == 0.3 and params.grad[1] == 0.4


@pytest.mark.parametrize("max_norm", [0.05, 1.0, 100.0])
def test_clip_grad_norm_matches_torch(max_norm):
    torch = pytest.importorskip("torch")
    net = tiny_net()
    rng = np.random.default_rng(3)
    net.params.grad[...] = rng.standard_normal(net.params.size)
    weight_grad, bias_grad = net.layers[1].grads["weight"], net.layers[2].grads["bias"]
    t_weight = torch.zeros(weight_grad.T.shape, dtype=torch.float64, requires_grad=True)
    t_bias = torch.zeros(bias_grad.shape, dtype=torch.float64, requires_grad=True)
    t_weight.grad, t_bias.grad = torch.tensor(weight_grad.T.copy()), torch.tensor(bias_grad.copy())

    norm = clip_grad_norm(net.params, max_norm, ClipScratch.allocate(net.backend, net.params))
    torch_norm = torch.nn.utils.clip_grad_norm_([t_weight, t_bias], max_norm)
    assert float(norm) == pytest.approx(float(torch_norm), rel=1e-14)
    np.testing.assert_allclose(weight_grad, t_weight.grad.numpy().T, rtol=1e-14, atol=0)
    np.testing.assert_allclose(bias_grad, t_bias.grad.numpy(), rtol=1e-14, atol=0)


# ---- state: reset, checkpoint scalars, factory ----------------------------------------------
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_reset_state_zeroes_the_same_arrays_and_restarts_the_counter(name):
    net = tiny_net()
    optimizer = build_optimizer(name, lr=0.01, weight_decay=0.01).setup(net)
    for images, labels in batches(2):
        n = net.load_batch(images, labels)
        net.forward(n)
        net.backward(n)
        optimizer.step()
    state = optimizer.state_arrays()
    arrays = dict(state)
    assert state and all(np.any(array) for array in state.values())
    optimizer.reset_state()
    assert optimizer.state_arrays().keys() == arrays.keys()
    for key, array in optimizer.state_arrays().items():
        assert array is arrays[key] and not np.any(array)
    assert optimizer.state_scalars()["steps"] == 0
    if name.startswith("adam"):
        # a fresh Adam start: the bias-corrected first step moves every weight by about lr
        weight = weight_and_bias(net)[0]
        before = weight.copy()
        optimizer.step()  # same gradient as the last step
        np.testing.assert_allclose(
            np.abs(weight - before)[np.abs(net.layers[1].grads["weight"]) > 1e-3], 0.01, rtol=0.02
        )


def test_state_arrays_and_scalars_restore_a_run_exactly():
    """A checkpoint's view: copy the state out after 3 steps, into a fresh optimizer, go on."""
    steps = batches(5)

    def train(net, optimizer, some_batches):
        for images, labels in some_batches:
            n = net.load_batch(images, labels)
            net.forward(n)
            net.backward(n)
            optimizer.step()

    straight = tiny_net()
    train(straight, AdamW(0.01, max_grad_norm=1.0).setup(straight), steps)

    resumed = tiny_net()
    first = AdamW(0.01, max_grad_norm=1.0).setup(resumed)
    train(resumed, first, steps[:3])
    arrays = {key: array.copy() for key, array in first.state_arrays().items()}
    scalars = first.state_scalars()
    second = AdamW(0.01, max_grad_norm=1.0).setup(resumed)
    for key, array in second.state_arrays().items():
        array[...] = arrays[key]
    second.load_state_scalars(scalars)
    train(resumed, second, steps[3:])
    assert np.array_equal(resumed.params.data, straight.params.data)


def test_build_optimizer_names_and_defaults():
    assert OPTIMIZERS == ("sgd", "nesterov", "adam", "adamw")
    sgd = build_optimizer("sgd", 0.1, momentum=0.8, weight_decay=1e-4)
    assert type(sgd) is SGD and not sgd.nesterov and (sgd.momentum, sgd.weight_decay) == (0.8, 1e-4)
    assert build_optimizer("nesterov", 0.1).nesterov
    adam = build_optimizer("adam", 1e-3, momentum=0.9)  # momentum is SGD's; Adam keeps its betas
    assert type(adam) is Adam and adam.weight_decay == 0.0 and adam.betas == (0.9, 0.999)
    adamw = build_optimizer("adamw", 1e-3, max_grad_norm=2.0)
    assert type(adamw) is AdamW and adamw.weight_decay == 0.01 and adamw.max_grad_norm == 2.0
    assert build_optimizer("adamw", 1e-3, weight_decay=0.0).weight_decay == 0.0
    with pytest.raises(ValueError, match="`optimizer`: unknown 'lamb'"):
        build_optimizer("lamb", 0.1)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="Nesterov"):
        SGD(0.1, momentum=0.0, nesterov=True)
    with pytest.raises(ValueError):
        Adam(0.1, betas=(1.0, 0.999))
    with pytest.raises(ValueError, match="max_grad_norm"):
        AdamW(0.1, max_grad_norm=0.0)
    with pytest.raises(RuntimeError, match="setup"):
        Adam().step()


# ---- SGD against its formula ----------------------------------------------------------------
def _sgd_net(seed=0):
    layers = [Dense(3), Bias()]
    net = Net(layers, None, CPU, dtype=np.float64, seed=seed).setup(2, (4,))
    layers[1].params["bias"][...] = [0.5, -0.25, 1.0]
    return net, layers


def test_sgd_momentum_weight_decay_matches_pytorch_formula():
    lr, mu, wd = 0.1, 0.9, 0.01
    net, layers = _sgd_net()
    opt = SGD(lr=lr, momentum=mu, weight_decay=wd).setup(net)
    mask = net.params.decay_mask.copy()
    rng = np.random.default_rng(17)
    w = net.params.data.copy()
    v = np.zeros_like(w)
    data_buffer = net.params.data
    for _ in range(2):
        g = rng.standard_normal(w.shape)
        net.params.grad[:] = g
        opt.step()
        v = mu * v + g + wd * mask * w
        w = w - lr * v
        np.testing.assert_allclose(net.params.data, w, rtol=1e-14, atol=1e-15)
        np.testing.assert_allclose(opt.velocity, v, rtol=1e-14, atol=1e-15)
    assert net.params.data is data_buffer  # updated in place
    np.testing.assert_allclose(layers[0].params["weight"].ravel(), w[:12], rtol=1e-14)


def test_sgd_without_momentum():
    lr, wd = 0.2, 0.05
    net, _ = _sgd_net(seed=1)
    opt = SGD(lr=lr, momentum=0.0, weight_decay=wd).setup(net)
    mask = net.params.decay_mask.copy()
    w = net.params.data.copy()
    g = np.random.default_rng(18).standard_normal(w.shape)
    net.params.grad[:] = g
    opt.step()
    np.testing.assert_allclose(
        net.params.data, w - lr * (g + wd * mask * w), rtol=1e-14, atol=1e-15
    )
    np.testing.assert_array_equal(opt.velocity, 0.0)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_weight_decay_does_not_touch_biases(momentum):
    net, layers = _sgd_net(seed=2)
    opt = SGD(lr=0.5, momentum=momentum, weight_decay=0.1).setup(net)
    weight_before = layers[0].params["weight"].copy()
    net.params.grad.fill(0.0)
    for _ in range(3):
        opt.step()
    np.testing.assert_array_equal(layers[1].params["bias"], [0.5, -0.25, 1.0])
    assert np.all(np.abs(layers[0].params["weight"]) < np.abs(weight_before))
    assert np.all(np.sign(layers[0].params["weight"]) == np.sign(weight_before))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(lr=0.0),
        dict(lr=-1.0),
        dict(momentum=1.0),
        dict(momentum=-0.1),
        dict(weight_decay=-1e-4),
    ],
)
def test_sgd_rejects_bad_hyperparameters(kwargs):
    with pytest.raises(ValueError):
        SGD(**kwargs)


# ---- no allocation in a step ----------------------------------------------------------------
ALLOCATION_CASES = {
    "nesterov": lambda: SGD(0.01, momentum=0.9, weight_decay=5e-4, nesterov=True),
    "sgd-clipped": lambda: SGD(0.01, momentum=0.9, weight_decay=5e-4, max_grad_norm=1.0),
    "adam-clipped": lambda: Adam(1e-3, weight_decay=1e-4, max_grad_norm=1.0),
    "adamw-clipped": lambda: AdamW(1e-3, weight_decay=0.01, max_grad_norm=1.0),
}


@pytest.mark.parametrize("case", list(ALLOCATION_CASES))
def test_optimizer_step_allocates_no_array(case, cpu_backend):
    net = Net(
        [Flatten(), Dense(1024), Bias()], SoftmaxCrossEntropy(), cpu_backend, dtype=np.float32
    ).setup(2, (1, 32, 32))
    assert net.params.data.nbytes > 4 * 2**20  # several MiB: one stray temporary would show
    optimizer = ALLOCATION_CASES[case]().setup(net)
    grad = np.random.default_rng(0).standard_normal(net.params.size).astype(np.float32)
    assert np.linalg.norm(grad) > 10  # clipping really scales
    before = net.params.data.copy()
    np.copyto(net.params.grad, grad)
    optimizer.step()  # warm-up

    tracemalloc.start()
    try:
        start, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for _ in range(5):
            np.copyto(net.params.grad, grad)
            optimizer.step()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - start < 64 * 1024, f"{case}: peak {peak - start} B over start"
    assert np.all(np.isfinite(net.params.data)) and not np.array_equal(net.params.data, before)
    if optimizer.max_grad_norm is not None:
        assert float(np.linalg.norm(net.params.grad)) == pytest.approx(1.0, rel=1e-4)


# ---- NumPy and CuPy agree (runs where CUDA is usable) ----------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_cuda_optimizer_agrees_with_numpy_and_keeps_the_pool_flat(name, cuda_backend, cpu_backend):
    import cupy

    nets = [tiny_net(be, dtype=np.float32) for be in (cpu_backend, cuda_backend)]
    optimizers = [
        build_optimizer(name, 0.01, weight_decay=0.01, max_grad_norm=0.5).setup(net) for net in nets
    ]
    pool = cupy.get_default_memory_pool()
    used = []
    for images, labels in batches(6):
        for net, optimizer in zip(nets, optimizers):
            n = net.load_batch(images.astype(np.float32), labels)
            net.forward(n)
            net.backward(n)
            optimizer.step()
        cuda_backend.synchronize()
        used.append(pool.used_bytes())
    assert used[1:] == [used[1]] * (len(used) - 1)
    np.testing.assert_allclose(
        cuda_backend.to_host(nets[1].params.data), nets[0].params.data, rtol=1e-4, atol=1e-5
    )
    assert float(optimizers[1].grad_norm) == pytest.approx(float(optimizers[0].grad_norm), rel=1e-4)
    assert math.isfinite(float(optimizers[1].grad_norm))


# ---- the fused CUDA update kernels round as NumPy does (kernels/update.cu: --fmad=false) -----
UPDATE_CASES = {
    "sgd": lambda: SGD(0.05, momentum=0.0),
    "momentum-decay": lambda: SGD(0.05, momentum=0.9, weight_decay=0.01),
    "nesterov-decay": lambda: SGD(0.05, momentum=0.9, weight_decay=0.01, nesterov=True),
    "adam-decay": lambda: Adam(1e-2, weight_decay=0.01),
    "adamw": lambda: AdamW(1e-2, weight_decay=0.05),
}


@pytest.mark.gpu
@pytest.mark.parametrize("name", list(UPDATE_CASES))
def test_cuda_update_kernel_matches_the_numpy_update(name, cuda_backend, cpu_backend):
    """Same parameters, gradients and lr on both backends: SGD's kernel equals NumPy's update
    bit for bit; Adam's may differ in the last bit of its bias corrections (CUDA's pow)."""
    rng = np.random.default_rng(5)
    results = []
    for backend in (cpu_backend, cuda_backend):
        net = tiny_net(backend, dtype=np.float32)
        optimizer = UPDATE_CASES[name]().setup(net)
        for step in range(4):
            grad = rng.standard_normal(net.params.grad.shape).astype(np.float32)
            backend.copy_from_host(grad, net.params.grad)
            optimizer.lr = 0.05 / (step + 1)
            optimizer.step()
        results.append(backend.to_host(net.params.data))
        rng = np.random.default_rng(5)  # the same gradients on the second backend
    if name.startswith("adam"):
        np.testing.assert_allclose(results[1], results[0], rtol=1e-6, atol=1e-7)
    else:
        np.testing.assert_array_equal(results[1], results[0])
