"""Where a window slides over an image: the shape math shared by convolution and pooling."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WindowGeometry:
    """Where a KHxKW window slides over a CxHxW image (convolution and pooling alike)."""

    channels: int
    height: int
    width: int
    kernel_h: int
    kernel_w: int
    stride: int = 1
    pad: int = 0

    def __post_init__(self):
        if self.out_h < 1 or self.out_w < 1:
            raise ValueError(
                f"a {self.kernel_h}x{self.kernel_w} window with stride {self.stride} and padding "
                f"{self.pad} does not fit a {self.height}x{self.width} input; use a smaller kernel "
                f"or more padding"
            )

    @property
    def out_h(self) -> int:
        return (self.height + 2 * self.pad - self.kernel_h) // self.stride + 1

    @property
    def out_w(self) -> int:
        return (self.width + 2 * self.pad - self.kernel_w) // self.stride + 1

    @property
    def col_rows(self) -> int:
        """Rows of the im2col matrix: one per (channel, kh, kw)."""
        return self.channels * self.kernel_h * self.kernel_w

    def col_cols(self, batch: int) -> int:
        """Columns of the im2col matrix: one per (image, oh, ow)."""
        return batch * self.out_h * self.out_w

    def valid_range(self, offset: int, in_size: int, out_size: int) -> tuple[int, int]:
        """Output positions [lo, hi) whose input `o*stride + offset - pad` is inside the image."""
        lo = max(0, -(-(self.pad - offset) // self.stride))  # ceil((pad - offset) / stride)
        hi = min(out_size, (in_size - 1 + self.pad - offset) // self.stride + 1)
        return lo, max(lo, hi)
