"""Conv2D: the backend's convolution (lowered to matrix products, see conv_lowering.py)."""

from __future__ import annotations

from ..backends.geometry import WindowGeometry
from .base import Layer, ParamSpec, check_weight_init, init_note


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


class Conv2D(Layer):
    """Cross-correlation of (n, C, H, W) with weight (F, C, KH, KW); no bias (see Bias)."""

    def __init__(
        self, out_channels: int, kernel_size=3, stride: int = 1, pad: int = 0, init: str = "he"
    ):
        super().__init__()
        if out_channels < 1 or stride < 1 or pad < 0:
            raise ValueError("Conv2D needs out_channels >= 1, stride >= 1 and pad >= 0")
        self.out_channels = out_channels
        self.init = check_weight_init(init)
        self.kernel_h, self.kernel_w = _pair(kernel_size)
        self.stride, self.pad = stride, pad
        self.geom = None

    def _geometry(self, input_shape) -> WindowGeometry:
        if len(input_shape) != 3:
            raise ValueError(f"Conv2D expects (C, H, W) inputs, got {input_shape}")
        c, h, w = input_shape
        return WindowGeometry(c, h, w, self.kernel_h, self.kernel_w, self.stride, self.pad)

    def output_shape(self, input_shape):
        geom = self._geometry(input_shape)
        return (self.out_channels, geom.out_h, geom.out_w)

    def param_specs(self, input_shape):
        c = input_shape[0]
        shape = (self.out_channels, c, self.kernel_h, self.kernel_w)
        return [ParamSpec("weight", shape, self.init, fan_in=c * self.kernel_h * self.kernel_w)]

    def setup(self, backend, input_shape, batch_size, dtype):
        super().setup(backend, input_shape, batch_size, dtype)
        self.geom = self._geometry(input_shape)
        self.workspace = backend.conv_workspace(self.geom, self.out_channels, batch_size, dtype)

    def forward(self, x, y, train):
        self.backend.conv_forward(x, self.params["weight"], y, self.workspace, self.geom)

    def backward(self, x, y, dy, dx):
        weight, d_weight = self.params["weight"], self.grads["weight"]
        self.backend.conv_backward(x, weight, dy, d_weight, dx, self.workspace, self.geom)

    def describe(self):
        return (
            f"Conv2D({self.out_channels}, {self.kernel_h}x{self.kernel_w}, "
            f"stride={self.stride}, pad={self.pad}{init_note(self.init)})"
        )
