"""Per-channel sums, BatchNorm's statistics and its two elementwise passes as array operations:
the NumPy backend's, and the reference of kernels/channel.cu (which rounds the elementwise
passes and the statistics the same way; its sums add in another order).

Arrays are (n, C, ...) with the channel on axis 1; per-channel arrays are (C,). `scratch` is a
buffer like the batch (the NumPy backend's channel workspace).
"""

from __future__ import annotations


def _sum_axes(x) -> tuple:
    return (0,) + tuple(range(2, x.ndim))


def _per_channel(values, x):
    """(C,) values broadcast against (n, C, ...) x."""
    return values.reshape((values.shape[0],) + (1,) * (x.ndim - 2))


def channel_sums(xp, x, out, scratch, weight=None, weighted_out=None) -> None:
    """out[c] = sum of x[:, c]; with weight, weighted_out[c] = sum of (x * weight)[:, c]."""
    axes = _sum_axes(x)
    xp.sum(x, axis=axes, out=out)
    if weight is not None:
        products = scratch[: x.shape[0]]
        xp.multiply(x, weight, out=products)
        xp.sum(products, axis=axes, out=weighted_out)


def channel_centered_squares(xp, x, center, out, scratch) -> None:
    """out[c] = sum of (x[:, c] - center[c])^2."""
    centered = scratch[: x.shape[0]]
    xp.subtract(x, _per_channel(center, x), out=centered)
    xp.multiply(centered, centered, out=centered)
    xp.sum(centered, axis=_sum_axes(x), out=out)


def batchnorm_statistics(
    xp, var, eps, inv_std, count=None, running=None, mean=None, momentum=0.0
) -> None:
    """inv_std = 1 / sqrt(var + eps). In training (count given) var first holds the batch's
    centered sum of squares and becomes its biased variance, var /= count; given `running`,
    the running (mean, variance) move towards the batch's: running += momentum * (batch -
    running), as (1 - momentum) * running + momentum * batch, with the unbiased variance."""
    if count is not None:
        xp.multiply(var, 1.0 / count, out=var)
    if running is not None:
        running_mean, running_var = running
        step = inv_std  # scratch until the last pass
        for value, batch_value, correction in (
            (running_mean, mean, 1.0),
            (running_var, var, count / (count - 1.0)),
        ):
            xp.multiply(batch_value, correction * momentum, out=step)
            xp.multiply(value, 1.0 - momentum, out=value)
            xp.add(value, step, out=value)
    xp.add(var, eps, out=inv_std)
    xp.sqrt(inv_std, out=inv_std)
    xp.divide(1.0, inv_std, out=inv_std)


def batchnorm_normalize(xp, x, mean, inv_std, gamma, beta, x_hat, y) -> None:
    """x_hat = (x - mean) * inv_std, y = x_hat * gamma + beta (per channel)."""
    xp.subtract(x, _per_channel(mean, x), out=x_hat)
    xp.multiply(x_hat, _per_channel(inv_std, x), out=x_hat)
    xp.multiply(x_hat, _per_channel(gamma, x), out=y)
    xp.add(y, _per_channel(beta, x), out=y)


def batchnorm_input_grad(xp, dy, x_hat, scale, d_beta, d_gamma, count: int, dx) -> None:
    """dx = scale * (dy - (x_hat * d_gamma + d_beta) / count) (per channel): BatchNorm's input
    gradient in training, scale = gamma / std."""
    xp.multiply(x_hat, _per_channel(d_gamma, dy), out=dx)
    xp.add(dx, _per_channel(d_beta, dy), out=dx)
    xp.multiply(dx, 1.0 / count, out=dx)
    xp.subtract(dy, dx, out=dx)
    xp.multiply(dx, _per_channel(scale, dy), out=dx)
