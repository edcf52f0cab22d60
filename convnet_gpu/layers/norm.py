"""Batch normalization over channels of (C, H, W) inputs or features of (F,) inputs."""

from __future__ import annotations

from .base import Layer, ParamSpec, per_channel


class BatchNorm(Layer):
    """y = gamma * x_hat + beta, x_hat = (x - mean) / sqrt(var + eps), per channel (or feature).

    Training: mean and biased variance of the batch (over n, H, W), and the running statistics
    move towards them: running = (1 - momentum) * running + momentum * batch, with the unbiased
    variance, as in PyTorch. Evaluation: the running statistics. `buffers` holds running_mean
    (starts at 0) and running_var (starts at 1); they are state, not learnable parameters.
    """

    def __init__(self, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        if not 0 <= momentum <= 1 or not eps > 0:
            raise ValueError("BatchNorm needs 0 <= momentum <= 1 and eps > 0")
        self.momentum, self.eps = float(momentum), float(eps)
        # True when the last forward normalized with the batch's own statistics (training),
        # which backward must then differentiate too; False: with the running statistics.
        self.used_batch_statistics = True

    def param_specs(self, input_shape):
        self._check_shape(input_shape)
        channels = (input_shape[0],)
        return [
            ParamSpec("gamma", channels, "ones", decay=False),
            ParamSpec("beta", channels, "zeros", decay=False),
        ]

    def _check_shape(self, input_shape):
        if len(input_shape) not in (1, 3):
            raise ValueError(
                f"BatchNorm expects (C, H, W) or (features,) inputs, got {input_shape}"
            )

    def setup(self, backend, input_shape, batch_size, dtype):
        super().setup(backend, input_shape, batch_size, dtype)
        self._check_shape(input_shape)
        channels = input_shape[0]
        self.broadcast_shape, self.sum_axes = per_channel(input_shape)
        # A variance needs two values per channel: two rows unless one row has several pixels.
        values_per_row = 1
        for dim in input_shape[1:]:
            values_per_row *= dim
        self.min_rows = 1 if values_per_row >= 2 else 2
        self.values_per_row = values_per_row
        self.buffers = {
            "running_mean": backend.zeros((channels,), dtype),
            "running_var": backend.empty((channels,), dtype),
        }
        self.buffers["running_var"].fill(1.0)
        batch_shape = (batch_size,) + tuple(input_shape)
        self.x_hat = backend.empty(batch_shape, dtype)  # kept for backward
        self.workspace = backend.channel_workspace(batch_shape, dtype)
        self.mean = backend.empty((channels,), dtype)
        self.var = backend.empty((channels,), dtype)
        self.inv_std = backend.empty((channels,), dtype)  # kept for backward
        self.stat_scratch = backend.empty((channels,), dtype)
        # Summed over every worker's (and rank's) rows, see BatchRows; backward's two sums (of
        # dy and of dy * x_hat) in one array, so one all_reduce takes both:
        self.batch_sums = backend.empty((2, channels), dtype)
        self.reduce_scratch = backend.empty((2, channels), dtype)

    def _count(self, n: int) -> int:
        """Values per channel in the batch the statistics span (all workers' rows, and every
        rank's with synchronized statistics: see BatchRows)."""
        return (self.rows.statistics_rows or n) * self.values_per_row

    def _per_channel(self, array):
        return array.reshape(self.broadcast_shape)

    def forward(self, x, y, train):
        be, xp, n = self.backend, self.backend.xp, x.shape[0]
        self.used_batch_statistics = train
        if train:
            count = self._count(n)  # values per channel in the whole batch: n (* H * W)
            if count < 2:
                raise ValueError(
                    "BatchNorm in training needs more than one value per channel "
                    "(a batch of 1 without spatial dimensions has no variance)"
                )
            be.channel_sums(x, self.mean, self.workspace)
            self.rows.all_reduce((self.mean,), (self.reduce_scratch[0],))
            xp.multiply(self.mean, 1.0 / count, out=self.mean)
            be.channel_centered_squares(x, self.mean, self.var, self.workspace)
            self.rows.all_reduce((self.var,), (self.reduce_scratch[0],))
            # the running statistics are one, shared by the workers: the first updates them
            running = (self.buffers["running_mean"], self.buffers["running_var"])
            be.batchnorm_statistics(self.var, self.eps, self.inv_std, count,
                                    running if self.rows.index == 0 else None, self.mean,
                                    self.momentum)  # fmt: skip
            mean = self.mean
        else:
            mean = self.buffers["running_mean"]
            be.batchnorm_statistics(self.buffers["running_var"], self.eps, self.inv_std)
        gamma, beta = self.params["gamma"], self.params["beta"]
        be.batchnorm_normalize(x, mean, self.inv_std, gamma, beta, self.x_hat[:n], y)

    def backward(self, x, y, dy, dx):
        be, xp, n = self.backend, self.backend.xp, x.shape[0]
        x_hat, d_gamma, d_beta = self.x_hat[:n], self.grads["gamma"], self.grads["beta"]
        be.channel_sums(dy, d_beta, self.workspace, weight=x_hat, weighted_out=d_gamma)
        if dx is None:
            return
        scale = self.stat_scratch
        xp.multiply(self.params["gamma"], self.inv_std, out=scale)  # gamma / std
        if not self.used_batch_statistics:  # the statistics are constants: dx = dy * gamma / std
            xp.multiply(dy, self._per_channel(scale), out=dx)
            return
        sum_dy, sum_dy_x_hat = d_beta, d_gamma
        if self.rows.shares_statistics:  # dx needs the sums over the whole batch; the parameter
            sum_dy, sum_dy_x_hat = self.batch_sums  # gradients stay this copy's share
            xp.copyto(sum_dy, d_beta)
            xp.copyto(sum_dy_x_hat, d_gamma)
            self.rows.all_reduce((self.batch_sums,), (self.reduce_scratch,))
        # The batch statistics depend on x too:
        #   dx = gamma / std * (dy - (d_beta + x_hat * d_gamma) / count)
        be.batchnorm_input_grad(dy, x_hat, scale, sum_dy, sum_dy_x_hat, self._count(n), dx)

    def describe(self):
        return f"BatchNorm(momentum={self.momentum}, eps={self.eps})"
