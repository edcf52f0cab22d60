"""Max and average pooling over KxK windows (the window kernels live in the backends)."""

from __future__ import annotations

from ..backends.geometry import WindowGeometry
from .base import Layer


class _Pool2D(Layer):
    def __init__(self, kernel_size: int = 2, stride: int | None = None, pad: int = 0):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride or kernel_size
        self.pad = pad
        if kernel_size < 1 or self.stride < 1 or not 0 <= pad <= kernel_size // 2:
            raise ValueError(
                "pooling needs kernel_size >= 1, stride >= 1 and 0 <= pad <= kernel_size // 2"
            )
        self.geom = None

    def _geometry(self, input_shape) -> WindowGeometry:
        if len(input_shape) != 3:
            raise ValueError(f"{self.name} expects (C, H, W) inputs, got {input_shape}")
        c, h, w = input_shape
        k = self.kernel_size
        return WindowGeometry(c, h, w, k, k, self.stride, self.pad)

    def output_shape(self, input_shape):
        geom = self._geometry(input_shape)
        return (geom.channels, geom.out_h, geom.out_w)

    def setup(self, backend, input_shape, batch_size, dtype):
        super().setup(backend, input_shape, batch_size, dtype)
        self.geom = self._geometry(input_shape)

    def describe(self):
        return f"{self.name}({self.kernel_size}, stride={self.stride}, pad={self.pad})"


class MaxPool2D(_Pool2D):
    def setup(self, backend, input_shape, batch_size, dtype):
        super().setup(backend, input_shape, batch_size, dtype)
        out_shape = (batch_size,) + self.output_shape(input_shape)
        self.argmax = backend.empty(out_shape, "int32")  # window offset of each maximum
        self.workspace = backend.pool_workspace(out_shape, dtype)

    def forward(self, x, y, train):
        n = x.shape[0]
        self.backend.maxpool_forward(x, y, self.argmax[:n], self.workspace, self.geom)

    def backward(self, x, y, dy, dx):
        n = x.shape[0]
        self.backend.maxpool_backward(dy, self.argmax[:n], dx, self.workspace, self.geom)


class AvgPool2D(_Pool2D):
    def forward(self, x, y, train):
        self.backend.avgpool_forward(x, y, self.geom)

    def backward(self, x, y, dy, dx):
        self.backend.avgpool_backward(dy, dx, self.geom)


class GlobalAvgPool(Layer):
    """(C, H, W) -> (C,): the mean of each channel's plane; backward spreads dy / (H*W) over it."""

    def output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"GlobalAvgPool expects (C, H, W) inputs, got {input_shape}")
        return (input_shape[0],)

    def forward(self, x, y, train):
        xp = self.backend.xp
        n, channels, height, width = x.shape
        xp.sum(x.reshape(n, channels, height * width), axis=2, out=y)
        xp.multiply(y, 1.0 / (height * width), out=y)

    def backward(self, x, y, dy, dx):
        xp = self.backend.xp
        n, channels, height, width = x.shape
        xp.multiply(dy.reshape(n, channels, 1, 1), 1.0 / (height * width), out=dx)
