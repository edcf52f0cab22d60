"""The optimizers' updates of the flat parameter buffer as array operations (the NumPy backend's,
and the reference of kernels/update.cu, which performs the same roundings in one pass).

The learning rate is a 0-d device array and Adam's step counter a 0-d int64 array: a replayed
CUDA graph reads them where they live. Here they are read where they are used.
"""

from __future__ import annotations

import math


def sgd_update(
    xp, w, grad, velocity, decay_mask, lr, momentum, weight_decay, nesterov, scratch, decayed
):  # fmt: skip
    """w -= lr * step, step = v (momentum), g + momentum * v (Nesterov) or g (momentum 0), with
    v = momentum * v + g and g = grad + weight_decay * decay_mask * w. `scratch` and `decayed`
    are buffers like w (decayed is only written with weight decay)."""
    g = grad
    if weight_decay:
        xp.multiply(w, decay_mask, out=decayed)
        xp.multiply(decayed, weight_decay, out=decayed)
        xp.add(decayed, grad, out=decayed)
        g = decayed
    step = g
    if momentum:
        xp.multiply(velocity, momentum, out=velocity)
        xp.add(velocity, g, out=velocity)
        step = velocity
        if nesterov:
            xp.multiply(velocity, momentum, out=scratch)
            xp.add(g, scratch, out=scratch)
            step = scratch
    xp.multiply(step, lr, out=scratch)
    xp.subtract(w, scratch, out=w)


def adam_update(
    xp, w, grad, exp_avg, exp_avg_sq, decay_mask, lr, steps, betas, eps, weight_decay,
    decoupled, scratch, decayed,
):  # fmt: skip
    """Adam (decoupled False: L2 decay in the gradient) or AdamW (decoupled True), with the bias
    corrections of step `steps` (a 0-d counter, already advanced for this step)."""
    keep1, beta2, keep2, root2, eps, bias1, _ = adam_factors(betas, int(steps), eps, weight_decay)
    g = grad
    if weight_decay and decoupled:  # w = w - lr * wd * mask * w
        xp.multiply(w, decay_mask, out=scratch)
        xp.multiply(scratch, lr, out=scratch)
        xp.multiply(scratch, weight_decay, out=scratch)
        xp.subtract(w, scratch, out=w)
    elif weight_decay:  # g = grad + wd * mask * w
        xp.multiply(w, decay_mask, out=decayed)
        xp.multiply(decayed, weight_decay, out=decayed)
        xp.add(decayed, grad, out=decayed)
        g = decayed
    xp.subtract(g, exp_avg, out=scratch)
    xp.multiply(scratch, keep1, out=scratch)
    xp.add(exp_avg, scratch, out=exp_avg)
    xp.multiply(exp_avg_sq, beta2, out=exp_avg_sq)
    xp.multiply(g, g, out=scratch)
    xp.multiply(scratch, keep2, out=scratch)
    xp.add(exp_avg_sq, scratch, out=exp_avg_sq)
    # scratch = m / (sqrt(v) / sqrt(1 - beta2^t) + eps) * lr / (1 - beta1^t)
    xp.sqrt(exp_avg_sq, out=scratch)
    xp.divide(scratch, root2, out=scratch)
    xp.add(scratch, eps, out=scratch)
    xp.divide(exp_avg, scratch, out=scratch)
    xp.multiply(scratch, lr, out=scratch)
    xp.divide(scratch, bias1, out=scratch)
    xp.subtract(w, scratch, out=w)


def adam_factors(betas, t: int, eps, weight_decay) -> tuple[float, ...]:
    """The Python floats adam_update multiplies, divides and adds by at step t: 1 - beta1, beta2,
    1 - beta2, sqrt(1 - beta2**t), eps, 1 - beta1**t and the weight decay."""
    beta1, beta2 = betas
    return (1.0 - beta1, beta2, 1.0 - beta2, math.sqrt(1.0 - beta2**t), eps, 1.0 - beta1**t,
            weight_decay)  # fmt: skip


def adam_scalars(betas, t: int, eps, weight_decay, dtype):
    """adam_factors rounded to dtype, as NumPy rounds a Python float it multiplies a dtype array
    by: the scalars a one-pass kernel takes (cpu_jit.py)."""
    import numpy as np

    return np.array(adam_factors(betas, t, eps, weight_decay), dtype=dtype)
