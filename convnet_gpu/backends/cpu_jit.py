"""Compiled CPU kernels (numba) for what NumPy does slowly: the common 2x2 max pooling, alone and
fused with the Bias and ReLU before it (fusion.py), the SGD and Adam updates and BatchNorm's
elementwise passes in one pass each, and a convolution's input gradient added back from its
lowered form (conv_lowering.py).

NumPy pools a 2x2 window with a dozen whole-array passes over strided slabs (cpu_windows.py);
one compiled pass reads each pixel once, 4-5x faster on a Zen 3 core. The kernels are serial and
release the GIL (nogil), so the CPU worker threads (workers.py) run them side by side; fastmath
stays off, and each gives the NumPy kernels' values, NaNs in the input included
(tests/test_cpu_kernels.py; the tiled pooling backward: for a finite dy), but for the fused
forward, which says where it met a NaN for the caller to run the NumPy
kernels instead (tests/test_fusion.py). numba compiles them on first use for each dtype (about
a second for those of a simple-cnn step) and caches the machine code (cache=True), so later
processes load it in a fraction of that. Importing this module fails where
numba is missing or does not support the installed NumPy; numpy_backend.load_jit then returns
None and the NumPy kernels (cpu_windows.py, channel_ops.py, updates.py) run.
"""

from __future__ import annotations

import numba
import numpy as np

# error_model="numpy": a float division by zero gives inf/nan as NumPy's does, instead of a check
# for Python's ZeroDivisionError in every division, which also kept loops from vectorizing
# (the compiled Adam update ran 16 ms against NumPy's 11; 2.5 ms without the checks).
_jit = numba.njit(nogil=True, cache=True, fastmath=False, error_model="numpy")


def maxpool2x2_forward(x, y, argmax) -> None:
    """2x2 windows, stride 2, no padding, H and W even: y = the max, argmax = the offset
    kh*2 + kw of the first maximum, as NumPy's slab passes find them, NaNs included."""
    if _maxpool2x2_forward(x, y, argmax):  # a NaN somewhere: redo it NaN by NaN (rare: slow)
        _maxpool2x2_forward_nan(x, y, argmax)


@_jit
def _first_max4(a, b, d, e):
    """(the largest of a 2x2 window's values in row order, the offset of the first such, whether
    one is NaN); without NaNs, branch-free enough to vectorize where it is inlined."""
    best, arg = a, 0
    if b > best:  # strict: the first maximum wins ties
        best, arg = b, 1
    if d > best:
        best, arg = d, 2
    if e > best:
        best, arg = e, 3
    return best, arg, (a != a) | (b != b) | (d != d) | (e != e)


@_jit
def _maxpool2x2_forward(x, y, argmax) -> bool:
    """Without NaNs, branch-free enough to vectorize; returns whether x holds a NaN."""
    n, channels, _, _ = x.shape
    _, _, out_h, out_w = y.shape
    saw_nan = False
    for i in range(n):
        for c in range(channels):
            for oh in range(out_h):
                for ow in range(out_w):
                    best, arg, nan = _first_max4(
                        x[i, c, 2 * oh, 2 * ow], x[i, c, 2 * oh, 2 * ow + 1],
                        x[i, c, 2 * oh + 1, 2 * ow], x[i, c, 2 * oh + 1, 2 * ow + 1],
                    )  # fmt: skip
                    saw_nan |= nan
                    y[i, c, oh, ow] = best
                    argmax[i, c, oh, ow] = arg
    return saw_nan


@_jit
def _maxpool2x2_forward_nan(x, y, argmax) -> None:
    """NumPy's order with NaNs: once a window's running maximum is NaN (np.maximum keeps one),
    nothing compares greater, so the argmax stays where it was."""
    n, channels, _, _ = x.shape
    _, _, out_h, out_w = y.shape
    for i in range(n):
        for c in range(channels):
            for oh in range(out_h):
                for ow in range(out_w):
                    best, arg = x[i, c, 2 * oh, 2 * ow], 0
                    for k in range(1, 4):
                        v = x[i, c, 2 * oh + k // 2, 2 * ow + k % 2]
                        if v > best:
                            best, arg = v, k
                        elif v != v:
                            best = v
                    y[i, c, oh, ow] = best
                    argmax[i, c, oh, ow] = arg


@_jit
def conv_add_back(d_col, dx_t, pad: int, stride: int) -> None:
    """col2im, channels-last: dx_t (b, H, W, C) = each window's gradient d_col (b, OH, OW, KH,
    KW, C) added onto the pixels the window read (padding dropped), in runs of C values, window
    offset by window offset as conv_lowering._add_back adds them (so the same bits), in one pass
    per image that stays in cache instead of KH*KW strided passes over a padded copy."""
    b, out_h, out_w, kernel_h, kernel_w, channels = d_col.shape
    height, width = dx_t.shape[1], dx_t.shape[2]
    dx_t[:] = 0
    for i in range(b):
        for kh in range(kernel_h):
            for kw in range(kernel_w):
                for oh in range(out_h):
                    ih = oh * stride + kh - pad
                    if ih < 0 or ih >= height:
                        continue
                    for ow in range(out_w):
                        iw = ow * stride + kw - pad
                        if iw < 0 or iw >= width:
                            continue
                        for c in range(channels):
                            dx_t[i, ih, iw, c] += d_col[i, oh, ow, kh, kw, c]


@_jit
def maxpool_tiled_backward(dy, argmax, dx, k) -> None:
    """KxK windows, stride K, no padding, tiling the image: every pixel in at most one window,
    so dx is zero but for each window's argmax, which gets its dy (NumPy computes dy * 0 for the
    others: the same values for a finite dy)."""
    n, channels, out_h, out_w = dy.shape
    _, _, height, width = dx.shape
    for i in range(n):
        for c in range(channels):
            for h in range(height):
                for w in range(width):
                    dx[i, c, h, w] = 0
            for oh in range(out_h):
                for ow in range(out_w):
                    arg = argmax[i, c, oh, ow]
                    dx[i, c, oh * k + arg // k, ow * k + arg % k] = dy[i, c, oh, ow]


@_jit
def bias_relu_maxpool2x2_forward(x, bias, y, argmax) -> bool:
    """y = 2x2 max pooling (stride 2, H and W even) of relu(x + bias), argmax = what
    maxpool2x2_forward finds in relu(x + bias), in one pass that writes neither x + bias nor its
    ReLU. Returns whether x + bias holds a NaN, where nothing written is to be trusted (the
    caller runs the three unfused kernels instead, whose NaN rules this pass skips).

    relu keeps the order of positive values and maps the others to zeros, so the first maximum
    of relu(v) is the first maximum of v when that is positive, and window offset 0 (all zeros)
    otherwise."""
    n, channels, _, _ = x.shape
    _, _, out_h, out_w = y.shape
    saw_nan = False
    for i in range(n):
        for c in range(channels):
            shift = bias[c]
            for oh in range(out_h):
                for ow in range(out_w):
                    best, arg, nan = _first_max4(
                        x[i, c, 2 * oh, 2 * ow] + shift, x[i, c, 2 * oh, 2 * ow + 1] + shift,
                        x[i, c, 2 * oh + 1, 2 * ow] + shift,
                        x[i, c, 2 * oh + 1, 2 * ow + 1] + shift,
                    )  # fmt: skip
                    saw_nan |= nan
                    if best > 0:
                        y[i, c, oh, ow] = best
                        argmax[i, c, oh, ow] = arg
                    else:
                        y[i, c, oh, ow] = 0
                        argmax[i, c, oh, ow] = 0
    return saw_nan


@_jit
def bias_relu_maxpool2x2_backward(dy, y, argmax, dx) -> None:
    """dx = the gradient at x + bias: each window's dy at its argmax where y > 0 (dy * 0 where
    not: ReLU's backward multiplies by 0, so NaN and infinite dy stay NaN), zero at the other
    pixels, as max pooling's and then ReLU's backward make it. Each plane is zeroed whole and
    then written window by window: 3x faster than writing the four pixels of each window."""
    n, channels, out_h, out_w = dy.shape
    for i in range(n):
        for c in range(channels):
            dx[i, c] = 0
            for oh in range(out_h):
                for ow in range(out_w):
                    g = dy[i, c, oh, ow]
                    if not y[i, c, oh, ow] > 0:
                        g = g * 0
                    arg = argmax[i, c, oh, ow]
                    dx[i, c, 2 * oh + (arg >> 1), 2 * ow + (arg & 1)] = g


@_jit
def sgd_update(w, grad, velocity, decay_mask, lr, momentum, weight_decay, nesterov,
               with_momentum, with_decay) -> None:  # fmt: skip
    """updates.sgd_update in one pass over the flat buffers (1-D), with its roundings in its
    order: the NumPy form makes ten passes over three buffers. `lr` is the 0-d lr array;
    momentum and weight_decay are scalars of w's dtype (NumPy rounds Python floats to it), and
    with_momentum / with_decay say whether the Python floats were non-zero (as updates.py asks:
    a momentum of 1e-46 is 0 in float32 but still writes the velocity there)."""
    rate = lr[()]
    for i in range(w.size):
        g = grad[i]
        if with_decay:
            g = w[i] * decay_mask[i] * weight_decay + g
        step = g
        if with_momentum:
            v = velocity[i] * momentum + g
            velocity[i] = v
            step = v * momentum + g if nesterov else v
        w[i] = w[i] - step * rate


@_jit
def batchnorm_normalize(x, mean, inv_std, gamma, beta, x_hat, y) -> None:
    """channel_ops.batchnorm_normalize in one pass, its roundings in its order (NumPy makes four
    passes over the batch): x_hat = (x - mean) * inv_std, y = x_hat * gamma + beta, on (n, C, S)
    arrays and (C,) statistics."""
    n, channels, size = x.shape
    for i in range(n):
        for c in range(channels):
            center, scale, weight, shift = mean[c], inv_std[c], gamma[c], beta[c]
            for k in range(size):
                normalized = (x[i, c, k] - center) * scale
                x_hat[i, c, k] = normalized
                y[i, c, k] = normalized * weight + shift


@_jit
def batchnorm_input_grad(dy, x_hat, scale, d_beta, d_gamma, inv_count, dx) -> None:
    """channel_ops.batchnorm_input_grad in one pass, its roundings in its order (five passes in
    NumPy): dx = scale * (dy - (x_hat * d_gamma + d_beta) * inv_count), on (n, C, S) arrays;
    inv_count is 1 / count rounded to the arrays' dtype, as NumPy rounds the Python float."""
    n, channels, size = dy.shape
    for i in range(n):
        for c in range(channels):
            slope, offset, factor = d_gamma[c], d_beta[c], scale[c]
            for k in range(size):
                mean_part = (x_hat[i, c, k] * slope + offset) * inv_count
                dx[i, c, k] = (dy[i, c, k] - mean_part) * factor


@_jit
def adam_update(w, grad, exp_avg, exp_avg_sq, decay_mask, lr, scalars, with_decay,
                decoupled) -> None:  # fmt: skip
    """updates.adam_update in one pass over the flat buffers (1-D), with its roundings in its
    order (about twenty passes in NumPy). `scalars` holds, in w's dtype as NumPy rounds the
    Python floats: 1 - beta1, beta2, 1 - beta2, sqrt(1 - beta2**t), eps, 1 - beta1**t and the
    weight decay; with_decay says whether the Python weight decay was non-zero."""
    rate = lr[()]
    keep1, beta2, keep2, root2, eps, bias1, decay = (
        scalars[0], scalars[1], scalars[2], scalars[3], scalars[4], scalars[5], scalars[6]
    )  # fmt: skip
    for i in range(w.size):
        g = grad[i]
        if with_decay and decoupled:  # w = w - lr * wd * mask * w
            w[i] = w[i] - w[i] * decay_mask[i] * rate * decay
        elif with_decay:  # g = grad + wd * mask * w
            g = w[i] * decay_mask[i] * decay + g
        m = exp_avg[i] + (g - exp_avg[i]) * keep1
        exp_avg[i] = m
        v = exp_avg_sq[i] * beta2 + g * g * keep2
        exp_avg_sq[i] = v
        w[i] = w[i] - m / (np.sqrt(v) / root2 + eps) * rate / bias1
