"""The Backend interface every layer is written against.

A backend owns an array module (`xp`: numpy or cupy) and the handful of hot kernels whose best
implementation differs per device. Everything else in a layer is plain `xp` code with `out=`.

Each kernel is a template method: the public method (im2col, maxpool_forward, uniform, ...)
checks every argument here, once, with one wording for every backend, then calls the backend's
implementation of the same name with a leading underscore (_im2col, ...), which may assume valid
arguments. A wrong shape is a ValueError, a wrong dtype a TypeError, both one line that names the
op and the argument:
    im2col: col has shape (27, 96), expected (27, 192)
    maxpool_backward: argmax has dtype float32, expected int32
Three hooks hold what only some devices check or need (the NumPy backend keeps the defaults):
    _check_device(op, name, array)         the array lives on this backend's device
    _check_output_layout(op, name, array)  an output can be written in place (C-contiguous)
    _kernel_input(array)                   an input as the kernel reads it (a strided view copied)

It is longer than most modules (~450 lines) on purpose: it is the whole contract a backend
signs, each operation's docstring, checks and default side by side; split by family, a backend
author would have to read several files to learn what one operation promises.
"""

from __future__ import annotations

import numpy as np

from . import channel_ops, conv_lowering, updates
from .counter_rng import (
    check_jitter_batch_size,
    check_jitter_pad,
    check_seed_and_counter,
    check_uniform_size,
)
from .geometry import WindowGeometry

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))  # what every kernel computes in
ARGMAX_DTYPE = np.dtype(np.int32)  # max pooling's window offsets


# The buffers of the window ops, for a batch of n images:
def image_shape(geom: WindowGeometry, n: int) -> tuple:
    """x and dx: (n, C, H, W)."""
    return (n, geom.channels, geom.height, geom.width)


def pooled_shape(geom: WindowGeometry, n: int) -> tuple:
    """y, dy and argmax of pooling: (n, C, OH, OW)."""
    return (n, geom.channels, geom.out_h, geom.out_w)


class GraphsUnsupported(RuntimeError):
    """This backend, or this step, cannot be captured as a graph (the message says why)."""


def col_shape(geom: WindowGeometry, n: int) -> tuple:
    """The im2col matrix: a row per (c, kh, kw), a column per (image, oh, ow)."""
    return (geom.col_rows, geom.col_cols(n))


class Backend:
    """What a layer may ask of a device. Subclasses: NumpyBackend, CupyBackend."""

    name: str = "abstract"
    device: str = "abstract"
    xp = np
    precision = "fp32"  # float32 matrix products: "fp32", or "tf32" on tensor cores (CUDA)
    supports_graphs = False  # capture() works: a step can be recorded once and replayed
    threads = 1  # CPU threads a Net's step runs on (NumpyBackend: see workers.py)

    # ---- memory -------------------------------------------------------------------------
    def empty(self, shape, dtype):
        return self.xp.empty(shape, dtype=dtype)

    def zeros(self, shape, dtype):
        return self.xp.zeros(shape, dtype=dtype)

    def asarray(self, host_array, dtype=None):
        """Host -> device, the one boundary where host data enters."""
        return self.xp.asarray(host_array, dtype=dtype)

    def to_host(self, array) -> np.ndarray:
        return np.asarray(array)

    def copy_from_host(self, host_array, out):
        """Write a host array into device memory this backend already owns."""
        raise NotImplementedError

    def synchronize(self) -> None:
        """Wait for queued device work (a no-op on the CPU)."""

    def memory_in_use(self) -> int:
        """Bytes of device memory the backend's allocator holds for live arrays."""
        raise NotImplementedError

    def describe(self) -> str:
        return self.name

    # ---- counters and replay ------------------------------------------------------------
    def counter(self, value: int = 0):
        """A 0-d int64 device array: a step counter that kernels read where it lives, so a
        replayed step sees the count of its own step (see capture)."""
        counter = self.zeros((), "int64")
        counter.fill(int(value))
        return counter

    def increment(self, counter) -> None:
        self.xp.add(counter, 1, out=counter)

    def select(self, table, index, out) -> None:
        """out (0-d) = table[index] for a 1-D table and a 0-d device counter, clamped into the
        table: a step's value from a per-step table, read where the counter lives."""
        position = min(max(int(index), 0), table.shape[0] - 1)  # a host read (CUDA: a kernel)
        self.xp.copyto(out, table[position])

    def capture(self, step):
        """Record step() (device work only: no allocation, no host read) once, for replay();
        backends without graphs refuse. Returns an object with replay()."""
        raise GraphsUnsupported(f"{self.name} cannot capture a step; run it eagerly")

    # ---- dense math ---------------------------------------------------------------------
    def matmul(self, a, b, out):
        return self.xp.matmul(a, b, out=out)

    # ---- the optimizers' updates of the flat parameter buffer (see updates.py) ---------------
    def sgd_update(self, w, grad, velocity, decay_mask, lr, momentum, weight_decay, nesterov,
                   scratch, decayed) -> None:  # fmt: skip
        """w -= lr * step (SGD, momentum, Nesterov; L2 decay where decay_mask is 1). `lr` is a
        0-d device array; scratch and decayed are buffers like w."""
        updates.sgd_update(self.xp, w, grad, velocity, decay_mask, lr, momentum, weight_decay,
                           nesterov, scratch, decayed)  # fmt: skip

    def adam_update(self, w, grad, exp_avg, exp_avg_sq, decay_mask, lr, steps, betas, eps,
                    weight_decay, decoupled, scratch, decayed) -> None:  # fmt: skip
        """Adam / AdamW with the bias corrections of step `steps` (a 0-d counter)."""
        updates.adam_update(self.xp, w, grad, exp_avg, exp_avg_sq, decay_mask, lr, steps, betas,
                            eps, weight_decay, decoupled, scratch, decayed)  # fmt: skip

    # ---- per-channel sums and BatchNorm's passes: (n, C, ...) arrays, channel axis 1 ------------
    def channel_workspace(self, shape, dtype, weighted: bool = True):
        """Scratch for the channel ops on batches of up to `shape` (n, C, ...); weighted=False
        when only plain channel_sums are taken (Bias), which need less on some backends."""
        return self._channel_workspace(tuple(shape), np.dtype(dtype), weighted)

    def channel_sums(self, x, out, workspace, weight=None, weighted_out=None) -> None:
        """out[c] = sum of x[:, c]; with a weight like x, weighted_out[c] = sum (x*weight)[:, c]."""
        dtype = self._channel_input("channel_sums", x, out)
        if weight is not None:
            self._check_buffer("channel_sums", "weight", weight, tuple(x.shape), dtype)
            self._output("channel_sums", "weighted_out", weighted_out, tuple(out.shape), dtype)
        self._channel_sums(x, out, workspace, weight, weighted_out)

    def channel_centered_squares(self, x, center, out, workspace) -> None:
        """out[c] = sum of (x[:, c] - center[c])^2: the variance's sum, taken around the mean."""
        dtype = self._channel_input("channel_centered_squares", x, out)
        self._check_buffer("channel_centered_squares", "center", center, tuple(out.shape), dtype)
        self._channel_centered_squares(x, center, out, workspace)

    def batchnorm_statistics(self, var, eps: float, inv_std, count=None, running=None, mean=None,
                             momentum: float = 0.0) -> None:  # fmt: skip
        """inv_std = 1 / sqrt(var + eps), per channel; in training (count given) var is first
        turned from the batch's centered sum of squares into its biased variance and, given
        running = (running_mean, running_var), they move towards the batch's mean and unbiased
        variance by `momentum` (channel_ops.batchnorm_statistics)."""
        op = "batchnorm_statistics"
        dtype = self._float_dtype(op, "var", var)
        shape = tuple(var.shape)
        if count is None:  # var is only read
            var = self._input(op, "var", var, shape, dtype)
        else:  # var becomes the batch's variance, in place
            self._output(op, "var", var, shape, dtype)
        self._output(op, "inv_std", inv_std, shape, dtype)
        if count is not None and count < 2:
            raise ValueError(f"{op}: count is {count}; a variance needs 2 values")
        if running is not None:
            if count is None or mean is None:
                raise ValueError(f"{op}: updating running needs count and mean")
            mean = self._input(op, "mean", mean, shape, dtype)
            for name, array in zip(("running_mean", "running_var"), running):
                self._output(op, name, array, shape, dtype)
        self._batchnorm_statistics(var, eps, inv_std, count, running, mean, momentum)

    def batchnorm_normalize(self, x, mean, inv_std, gamma, beta, x_hat, y) -> None:
        """x_hat = (x - mean) * inv_std and y = x_hat * gamma + beta, per channel."""
        self._batchnorm_normalize(x, mean, inv_std, gamma, beta, x_hat, y)

    def batchnorm_input_grad(self, dy, x_hat, scale, d_beta, d_gamma, count: int, dx) -> None:
        """dx = scale * (dy - (x_hat * d_gamma + d_beta) / count), per channel."""
        self._batchnorm_input_grad(dy, x_hat, scale, d_beta, d_gamma, count, dx)

    # ---- convolution (conv_lowering.py): the whole batch lowered at once by default ------------
    def conv_workspace(self, geom: WindowGeometry, out_channels: int, batch_size: int, dtype):
        """Scratch for conv_forward and conv_backward on batches of up to batch_size."""
        return self._conv_workspace(geom, out_channels, batch_size, np.dtype(dtype))

    def conv_forward(self, x, weight, y, workspace, geom: WindowGeometry) -> None:
        """y (n, F, OH, OW) = the cross-correlation of x (n, C, H, W) with weight (F, C, KH, KW)."""
        self._check_conv("conv_forward", x, weight, y, geom)
        self._conv_forward(x, weight, y, workspace, geom)

    def conv_backward(self, x, weight, dy, d_weight, dx, workspace, geom: WindowGeometry) -> None:
        """d_weight (overwritten) and, unless dx is None, dx of conv_forward's y, given its dy.
        Call it after the conv_forward of the same x (the default keeps its lowered x)."""
        dtype, n = self._check_conv("conv_backward", x, weight, dy, geom, y_name="dy")
        self._check_buffer("conv_backward", "d_weight", d_weight, tuple(weight.shape), dtype)
        if dx is not None:
            self._output("conv_backward", "dx", dx, image_shape(geom, n), dtype)
        self._conv_backward(x, weight, dy, d_weight, dx, workspace, geom)

    def _check_conv(self, op: str, x, weight, y, geom: WindowGeometry, y_name: str = "y"):
        dtype, n = self._float_batch(op, "x", x)
        self._check_buffer(op, "x", x, image_shape(geom, n), dtype)
        out_channels = weight.shape[0]
        shape = (out_channels, geom.channels, geom.kernel_h, geom.kernel_w)
        self._check_buffer(op, "weight", weight, shape, dtype)
        self._check_buffer(op, y_name, y, (n, out_channels, geom.out_h, geom.out_w), dtype)
        return dtype, n

    # ---- windows: convolution lowering ------------------------------------------------------
    def im2col(self, x, col, geom: WindowGeometry) -> None:
        """x (n, C, H, W) -> col (C*KH*KW, n*OH*OW); padding reads as zero."""
        dtype, n = self._float_batch("im2col", "x", x)
        x = self._input("im2col", "x", x, image_shape(geom, n), dtype)
        self._output("im2col", "col", col, col_shape(geom, n), dtype)
        self._im2col(x, col, geom)

    def col2im(self, col, dx, geom: WindowGeometry) -> None:
        """The adjoint of im2col: dx (n, C, H, W) = sum of the col entries that read each pixel."""
        dtype, n = self._float_batch("col2im", "dx", dx)
        col = self._input("col2im", "col", col, col_shape(geom, n), dtype)
        self._output("col2im", "dx", dx, image_shape(geom, n), dtype)
        self._col2im(col, dx, geom)

    # ---- windows: pooling ---------------------------------------------------------------------
    def pool_workspace(self, out_shape, dtype):
        """Scratch that max pooling needs on this backend (None where the kernel needs none)."""
        return self._pool_workspace(tuple(out_shape), np.dtype(dtype))

    def maxpool_forward(self, x, y, argmax, workspace, geom: WindowGeometry) -> None:
        """y = max over each window; argmax (int32) = offset kh*KW+kw of the first maximum."""
        dtype, n = self._float_batch("maxpool_forward", "x", x)
        x = self._input("maxpool_forward", "x", x, image_shape(geom, n), dtype)
        self._output("maxpool_forward", "y", y, pooled_shape(geom, n), dtype)
        self._output("maxpool_forward", "argmax", argmax, pooled_shape(geom, n), ARGMAX_DTYPE)
        self._maxpool_forward(x, y, argmax, workspace, geom)

    def maxpool_backward(self, dy, argmax, dx, workspace, geom: WindowGeometry) -> None:
        """dx = dy routed to the argmax of each window (summed where windows overlap)."""
        op = "maxpool_backward"
        dtype, n = self._float_batch(op, "dy", dy)
        dy = self._input(op, "dy", dy, pooled_shape(geom, n), dtype)
        argmax = self._input(op, "argmax", argmax, pooled_shape(geom, n), ARGMAX_DTYPE)
        self._output(op, "dx", dx, image_shape(geom, n), dtype)
        self._maxpool_backward(dy, argmax, dx, workspace, geom)

    def avgpool_forward(self, x, y, geom: WindowGeometry) -> None:
        """Mean over each window, padding counted as zeros (divide by KH*KW)."""
        dtype, n = self._float_batch("avgpool_forward", "x", x)
        x = self._input("avgpool_forward", "x", x, image_shape(geom, n), dtype)
        self._output("avgpool_forward", "y", y, pooled_shape(geom, n), dtype)
        self._avgpool_forward(x, y, geom)

    def avgpool_backward(self, dy, dx, geom: WindowGeometry) -> None:
        """dx = each window's dy / (KH*KW) spread over the window (summed where they overlap)."""
        dtype, n = self._float_batch("avgpool_backward", "dy", dy)
        dy = self._input("avgpool_backward", "dy", dy, pooled_shape(geom, n), dtype)
        self._output("avgpool_backward", "dx", dx, image_shape(geom, n), dtype)
        self._avgpool_backward(dy, dx, geom)

    # ---- fused: Bias, ReLU and max pooling in one pass (where a backend has the kernel) --------
    def fuses_bias_relu_maxpool(self, geom: WindowGeometry) -> bool:
        """Whether bias_relu_maxpool_forward/backward run here for these windows (a chain asks
        once, in setup; where not, it runs the three layers)."""
        return False

    def bias_relu_maxpool_forward(self, x, bias, y, argmax, geom: WindowGeometry) -> bool:
        """y and argmax as maxpool_forward makes them from relu(x + bias), without writing
        x + bias or its ReLU. False where x + bias holds a NaN: then nothing written is to be
        trusted, and the caller runs the three unfused kernels, whose NaN rules this one skips."""
        op = "bias_relu_maxpool_forward"
        dtype, n = self._float_batch(op, "x", x)
        x = self._input(op, "x", x, image_shape(geom, n), dtype)
        bias = self._input(op, "bias", bias, (geom.channels,), dtype)
        self._output(op, "y", y, pooled_shape(geom, n), dtype)
        self._output(op, "argmax", argmax, pooled_shape(geom, n), ARGMAX_DTYPE)
        return self._bias_relu_maxpool_forward(x, bias, y, argmax, geom)

    def bias_relu_maxpool_backward(self, dy, y, argmax, dx, geom: WindowGeometry) -> None:
        """dx = the gradient at x + bias (and so at x) from the pooled dy, as max pooling's and
        ReLU's backward make it in turn; the bias gradient is then dx's channel_sums."""
        op = "bias_relu_maxpool_backward"
        dtype, n = self._float_batch(op, "dy", dy)
        dy = self._input(op, "dy", dy, pooled_shape(geom, n), dtype)
        y = self._input(op, "y", y, pooled_shape(geom, n), dtype)
        argmax = self._input(op, "argmax", argmax, pooled_shape(geom, n), ARGMAX_DTYPE)
        self._output(op, "dx", dx, image_shape(geom, n), dtype)
        self._bias_relu_maxpool_backward(dy, y, argmax, dx, geom)

    # ---- random numbers ---------------------------------------------------------------------
    def uniform_workspace(self, shape):
        """Scratch that uniform() needs for arrays of up to prod(shape) elements (None: none)."""
        size = int(np.prod(shape))
        check_uniform_size(size)
        return self._uniform_workspace(size)

    def uniform(self, out, seed: int, counter: int, workspace=None, first: int = 0) -> None:
        """Fill the float array `out` with uniforms in [0, 1) from the counter-based hash.

        Element i (C-order flat index) gets (counter_hash(seed, counter, first + i) >> 8) * 2**-24
        (see counter_rng.py), the same value on every backend and in float32 and float64: `first`
        lets a slice of a batch draw the numbers the whole batch would. Without the workspace
        from uniform_workspace(out.shape) the NumPy backend allocates one (setup-time use only).
        """
        self._float_dtype("uniform", "out", out)
        self._check_output_layout("uniform", "out", out)
        self._check_counter("uniform", seed, counter)
        check_uniform_size(first + out.size)
        self._uniform(out, seed, counter, workspace, int(first))

    # ---- data augmentation ------------------------------------------------------------------
    def jitter_workspace(self, batch_size: int):
        """Scratch that jitter() needs for batches of up to batch_size images (None: none)."""
        check_jitter_batch_size(batch_size)
        return self._jitter_workspace(batch_size)

    def jitter(self, x, out, pad: int, flip: bool, seed: int, counter: int, workspace=None,
               first: int = 0) -> None:  # fmt: skip
        """Shift each image by a random (dy, dx) in [-pad, pad]^2; mirror it with probability 1/2.

        x and out are (n, C, H, W) float arrays of one shape and dtype; out must not overlap x
        (every output pixel reads another pixel of x, so an in-place write would read values
        already jittered: use a scratch batch). With (dy, dx, flipped) of image i drawn by the
        layout in counter_rng.py (jitter_draws() is the scalar reference):
            out[i, c, h, w] = x[i, c, h + dy, s + dx],  s = W-1-w if flipped else w,
        and 0 where (h + dy, s + dx) falls outside the image. That is: shift first (take the HxW
        window at offset (pad+dy, pad+dx) of the image zero-padded by `pad` on every side), then
        mirror the window left-right. pad=0 and flip=False copies x. The same on every backend,
        bit for bit (values are moved, never computed). Image i draws as image first + i of the
        stream would (a slice of a batch jitters as the whole batch does). Without the workspace
        from jitter_workspace(n) the NumPy backend allocates one (setup-time use only).
        """
        self._check_counter("jitter", seed, counter)
        check_jitter_pad(pad)
        dtype, n = self._float_batch("jitter", "x", x)
        if x.ndim != 4:
            raise ValueError(
                f"jitter: x has shape {tuple(x.shape)}, expected an (n, C, H, W) batch"
            )
        self._output("jitter", "out", out, tuple(x.shape), dtype)
        if self.xp.may_share_memory(x, out):
            raise ValueError(
                "jitter: out must not overlap x (pixels move): write into a "
                "scratch batch and copy back"
            )
        check_jitter_batch_size(first + n)
        self._jitter(self._kernel_input(x), out, pad, flip, seed, counter, workspace, int(first))

    # ---- the argument checks every backend shares ---------------------------------------------
    def _channel_input(self, op: str, x, out) -> np.dtype:
        """The dtype of an (n, C, ...) x; out must be its (C,) per-channel result."""
        dtype = self._float_dtype(op, "x", x)
        if x.ndim < 2:
            raise ValueError(f"{op}: x has shape {tuple(x.shape)}, expected (n, C, ...)")
        self._output(op, "out", out, (x.shape[1],), dtype)
        return dtype

    def _check_counter(self, op: str, seed: int, counter) -> None:
        """A counter is an int, or a 0-d int64 device array (see counter()) that the kernel
        reads where it lives, modulo 2**32."""
        if hasattr(counter, "shape"):
            self._check_buffer(op, "counter", counter, (), np.dtype(np.int64))
            counter = 0
        check_seed_and_counter(seed, counter)

    def _float_dtype(self, op: str, name: str, array) -> np.dtype:
        """The dtype of `array`, the one the op computes in (float32 or float64)."""
        self._check_device(op, name, array)
        if array.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{op}: {name} has dtype {array.dtype}, expected float32 or float64")
        return array.dtype

    def _float_batch(self, op: str, name: str, array) -> tuple[np.dtype, int]:
        """(dtype, n) that the leading array of an op sets for the others: n is its first axis."""
        return self._float_dtype(op, name, array), (array.shape[0] if array.ndim else 0)

    def _check_buffer(self, op: str, name: str, array, shape: tuple, dtype) -> None:
        self._check_device(op, name, array)
        if tuple(array.shape) != tuple(shape):
            raise ValueError(f"{op}: {name} has shape {tuple(array.shape)}, expected {shape}")
        if array.dtype != dtype:
            raise TypeError(f"{op}: {name} has dtype {array.dtype}, expected {np.dtype(dtype)}")

    def _input(self, op: str, name: str, array, shape: tuple, dtype):
        """Check an input; return it as the kernel reads it."""
        self._check_buffer(op, name, array, shape, dtype)
        return self._kernel_input(array)

    def _output(self, op: str, name: str, array, shape: tuple, dtype) -> None:
        """Check an output, which the kernel writes in place."""
        self._check_buffer(op, name, array, shape, dtype)
        self._check_output_layout(op, name, array)

    # ---- hooks: what only some devices check or need --------------------------------------
    def _check_device(self, op: str, name: str, array) -> None:
        """Refuse an array that does not live on this backend's device (the CPU: no check)."""

    def _check_output_layout(self, op: str, name: str, array) -> None:
        """Refuse an output the kernels cannot write in place (NumPy writes any view)."""

    def _kernel_input(self, array):
        """An input as the kernel reads it (NumPy reads any view as it is)."""
        return array

    # ---- implementations: each backend's kernels, called with checked arguments ----------------
    def _channel_workspace(self, shape: tuple, dtype: np.dtype, weighted: bool):
        return self.empty(shape, dtype) if weighted else None  # scratch like the batch

    def _channel_sums(self, x, out, workspace, weight, weighted_out) -> None:
        channel_ops.channel_sums(self.xp, x, out, workspace, weight, weighted_out)

    def _channel_centered_squares(self, x, center, out, workspace) -> None:
        channel_ops.channel_centered_squares(self.xp, x, center, out, workspace)

    def _batchnorm_statistics(self, var, eps, inv_std, count, running, mean, momentum) -> None:
        channel_ops.batchnorm_statistics(self.xp, var, eps, inv_std, count, running, mean, momentum)

    def _batchnorm_normalize(self, x, mean, inv_std, gamma, beta, x_hat, y) -> None:
        channel_ops.batchnorm_normalize(self.xp, x, mean, inv_std, gamma, beta, x_hat, y)

    def _batchnorm_input_grad(self, dy, x_hat, scale, d_beta, d_gamma, count, dx) -> None:
        channel_ops.batchnorm_input_grad(self.xp, dy, x_hat, scale, d_beta, d_gamma, count, dx)

    # The lowered matrices' bytes per chunk of images; None: the whole batch at once.
    conv_chunk_bytes: int | None = None

    def _conv_workspace(self, geom, out_channels: int, batch_size: int, dtype: np.dtype):
        return conv_lowering.lowered_workspace(
            self, geom, out_channels, batch_size, dtype, self.conv_chunk_bytes
        )

    def _conv_forward(self, x, weight, y, workspace, geom: WindowGeometry) -> None:
        conv_lowering.lowered_forward(self, x, weight, y, workspace, geom)

    def _conv_backward(self, x, weight, dy, d_weight, dx, workspace, geom) -> None:
        conv_lowering.lowered_backward(self, x, weight, dy, d_weight, dx, workspace, geom)

    def _im2col(self, x, col, geom: WindowGeometry) -> None:
        raise NotImplementedError

    def _col2im(self, col, dx, geom: WindowGeometry) -> None:
        raise NotImplementedError

    def _pool_workspace(self, out_shape: tuple, dtype: np.dtype):
        return None

    def _maxpool_forward(self, x, y, argmax, workspace, geom: WindowGeometry) -> None:
        raise NotImplementedError

    def _maxpool_backward(self, dy, argmax, dx, workspace, geom: WindowGeometry) -> None:
        raise NotImplementedError

    def _avgpool_forward(self, x, y, geom: WindowGeometry) -> None:
        raise NotImplementedError

    def _avgpool_backward(self, dy, dx, geom: WindowGeometry) -> None:
        raise NotImplementedError

    def _bias_relu_maxpool_forward(self, x, bias, y, argmax, geom: WindowGeometry) -> bool:
        raise NotImplementedError

    def _bias_relu_maxpool_backward(self, dy, y, argmax, dx, geom: WindowGeometry) -> None:
        raise NotImplementedError

    def _uniform_workspace(self, size: int):
        return None

    def _uniform(self, out, seed: int, counter: int, workspace, first: int) -> None:
        raise NotImplementedError

    def _jitter_workspace(self, batch_size: int):
        return None

    def _jitter(self, x, out, pad, flip, seed, counter, workspace, first: int) -> None:
        raise NotImplementedError
