"""Conv2D by lowering: im2col, one GEMM, and the adjoint GEMMs + col2im for backward."""

from __future__ import annotations

from ..backends.geometry import WindowGeometry
from .base import Layer, ParamSpec, check_weight_init, flat_view, init_note


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
        self.geom = geom = self._geometry(input_shape)
        # col: (C*KH*KW, n*OH*OW), reused as d_col in backward.
        self.col_buf = backend.empty(geom.col_rows * geom.col_cols(batch_size), dtype)
        # out_t: GEMM output (F, n*OH*OW), reused for dy transposed to (F, n, OH*OW).
        self.out_t_buf = backend.empty(self.out_channels * geom.col_cols(batch_size), dtype)

    def _views(self, n):
        geom = self.geom
        col = flat_view(self.col_buf, (geom.col_rows, geom.col_cols(n)))
        out_t = flat_view(self.out_t_buf, (self.out_channels, geom.col_cols(n)))
        return col, out_t

    def forward(self, x, y, train):
        be, xp = self.backend, self.backend.xp
        n, spatial = x.shape[0], self.geom.out_h * self.geom.out_w
        col, out_t = self._views(n)
        be.im2col(x, col, self.geom)
        weight_2d = self.params["weight"].reshape(self.out_channels, -1)
        be.matmul(weight_2d, col, out_t)  # (F, CKK) @ (CKK, n*L)
        xp.copyto(
            y.reshape(n, self.out_channels, spatial),  # (F, n, L) -> (n, F, L)
            out_t.reshape(self.out_channels, n, spatial).transpose(1, 0, 2),
        )

    def backward(self, x, y, dy, dx):
        be, xp = self.backend, self.backend.xp
        n, spatial = x.shape[0], self.geom.out_h * self.geom.out_w
        col, dy_t = self._views(n)
        xp.copyto(
            dy_t.reshape(self.out_channels, n, spatial),
            dy.reshape(n, self.out_channels, spatial).transpose(1, 0, 2),
        )
        d_weight_2d = self.grads["weight"].reshape(self.out_channels, -1)
        be.matmul(dy_t, col.T, d_weight_2d)  # (F, n*L) @ (n*L, CKK)
        if dx is not None:
            weight_2d = self.params["weight"].reshape(self.out_channels, -1)
            be.matmul(weight_2d.T, dy_t, col)  # d_col overwrites col
            be.col2im(col, dx, self.geom)

    def describe(self):
        return (
            f"Conv2D({self.out_channels}, {self.kernel_h}x{self.kernel_w}, "
            f"stride={self.stride}, pad={self.pad}{init_note(self.init)})"
        )
