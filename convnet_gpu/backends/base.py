"""The Backend interface every layer is written against.

A backend owns an array module (`xp`: numpy or cupy) and the handful of hot kernels whose best
implementation differs per device. Everything else in a layer is plain `xp` code with `out=`.
The two implementations live side by side in numpy_backend.py and cupy_backend.py under the
same method names.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import numpy as np

# ---- counter-based random numbers --------------------------------------------------------------
# Backend.uniform() draws from a counter-based hash instead of a stateful generator: every value is
# a pure function of (seed, counter, flat element index), so NumPy and CuPy give the same numbers
# bit for bit, a step's random numbers depend only on that step's counter, and a CUDA graph can
# replay the kernel once the counter lives in device memory. The mixer is the 32-bit finalizer
# ("fmix32") of Austin Appleby's MurmurHash3, a bijection on uint32; all arithmetic is mod 2**32:
#     key  = fmix32(fmix32(seed ^ 0x9E3779B9) ^ counter)       one key per (seed, counter) stream
#     bits = fmix32(fmix32(index ^ key) + key)                  two keyed rounds per element
#     u    = (bits >> 8) * 2**-24                         24 bits: exact in float32 and float64
# The same formula is written three times: counter_hash() below (the scalar reference the tests
# use), the NumPy backend (uint32 ufuncs) and kernels/counter_hash.cuh (CUDA, used by random.cu
# and jitter.cu).
UINT32_RANGE = 2**32
RANDOM_KEY_OFFSET = (
    0x9E3779B9  # 2**32 / golden ratio: keeps seed 0 away from fmix32's fixed point 0
)
UNIFORM_SCALE = 2.0**-24  # uniforms are (24-bit integer) * 2**-24, in [0, 1)


def fmix32(h: int) -> int:
    """MurmurHash3's 32-bit finalizer on a Python int in [0, 2**32)."""
    h ^= h >> 16
    h = (h * 0x85EBCA6B) % UINT32_RANGE
    h ^= h >> 13
    h = (h * 0xC2B2AE35) % UINT32_RANGE
    return h ^ (h >> 16)


def check_seed_and_counter(seed: int, counter: int) -> None:
    for label, value in (("seed", seed), ("counter", counter)):
        if not 0 <= int(value) < UINT32_RANGE or int(value) != value:
            raise ValueError(
                f"the random-number {label} must be an integer in [0, 2**32), got {value!r}"
            )


def random_stream_key(seed: int, counter: int) -> int:
    """The 32-bit key of the (seed, counter) stream."""
    check_seed_and_counter(seed, counter)
    return fmix32(fmix32(int(seed) ^ RANDOM_KEY_OFFSET) ^ int(counter))


def counter_hash(seed: int, counter: int, index: int) -> int:
    """The 32 random bits of element `index` of stream (seed, counter): the scalar reference."""
    key = random_stream_key(seed, counter)
    return fmix32((fmix32(index ^ key) + key) % UINT32_RANGE)


# ---- image jitter draws ---------------------------------------------------------------------
# Backend.jitter() gives image i of a batch three draws of the (seed, counter) stream, at indices
# 3i, 3i+1, 3i+2, each used through its top 24 bits u = counter_hash(...) >> 8:
#     dy      = floor(u(3i)   * (2*pad + 1) / 2**24) - pad      uniform on [-pad, pad]
#     dx      = floor(u(3i+1) * (2*pad + 1) / 2**24) - pad      (integer math: (u * k) >> 24)
#     flipped = flip and u(3i+2) >= 2**23                       the top bit: probability 1/2
# The layout does not depend on pad or flip (the same stream gives the same dy, dx, flip bit for
# every setting), and image i's draws do not depend on the batch size, so a smaller last batch
# uses the first rows' draws.
JITTER_DRAWS_PER_IMAGE = 3


def jitter_draws(
    seed: int, counter: int, image: int, pad: int, flip: bool
) -> tuple[int, int, bool]:
    """(dy, dx, flipped) of image `image` in stream (seed, counter): the scalar reference."""
    first = JITTER_DRAWS_PER_IMAGE * image
    choices = 2 * pad + 1
    u_y, u_x, u_flip = (counter_hash(seed, counter, first + k) >> 8 for k in range(3))
    dy = ((u_y * choices) >> 24) - pad
    dx = ((u_x * choices) >> 24) - pad
    return dy, dx, bool(flip) and u_flip >= 2**23


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


class Backend:
    """What a layer may ask of a device. Subclasses: NumpyBackend, CupyBackend."""

    name: str = "abstract"
    xp = np

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

    # ---- dense math ---------------------------------------------------------------------
    def matmul(self, a, b, out):
        return self.xp.matmul(a, b, out=out)

    # ---- windows: convolution lowering and pooling ---------------------------------------
    def im2col(self, x, col, geom: WindowGeometry) -> None:
        """x (n, C, H, W) -> col (C*KH*KW, n*OH*OW); padding reads as zero."""
        raise NotImplementedError

    def col2im(self, col, dx, geom: WindowGeometry) -> None:
        """The adjoint of im2col: dx (n, C, H, W) = sum of the col entries that read each pixel."""
        raise NotImplementedError

    def pool_workspace(self, out_shape, dtype):
        """Scratch that max pooling needs on this backend (None where the kernel needs none)."""
        return None

    def maxpool_forward(self, x, y, argmax, workspace, geom: WindowGeometry) -> None:
        """y = max over each window; argmax (int32) = offset kh*KW+kw of the first maximum."""
        raise NotImplementedError

    def maxpool_backward(self, dy, argmax, dx, workspace, geom: WindowGeometry) -> None:
        raise NotImplementedError

    def avgpool_forward(self, x, y, geom: WindowGeometry) -> None:
        """Mean over each window, padding counted as zeros (divide by KH*KW)."""
        raise NotImplementedError

    def avgpool_backward(self, dy, dx, geom: WindowGeometry) -> None:
        raise NotImplementedError

    # ---- random numbers ---------------------------------------------------------------------
    def uniform_workspace(self, shape):
        """Scratch that uniform() needs for arrays of up to prod(shape) elements (None: none)."""
        return None

    def uniform(self, out, seed: int, counter: int, workspace=None) -> None:
        """Fill the float array `out` with uniforms in [0, 1) from the counter-based hash above.

        Element i (C-order flat index) gets (counter_hash(seed, counter, i) >> 8) * 2**-24, the
        same value on every backend and in float32 and float64. Without the workspace from
        uniform_workspace(out.shape) the NumPy backend allocates one (setup-time use only).
        """
        raise NotImplementedError

    # ---- data augmentation ------------------------------------------------------------------
    def jitter_workspace(self, batch_size: int):
        """Scratch that jitter() needs for batches of up to batch_size images (None: none)."""
        return None

    def jitter(self, x, out, pad: int, flip: bool, seed: int, counter: int, workspace=None) -> None:
        """Shift each image by a random (dy, dx) in [-pad, pad]^2; mirror it with probability 1/2.

        x and out are (n, C, H, W) float arrays of one shape and dtype; out must not overlap x
        (every output pixel reads another pixel of x, so an in-place write would read values
        already jittered: use a scratch batch). With (dy, dx, flipped) of image i drawn by the
        layout above (jitter_draws() is the scalar reference):
            out[i, c, h, w] = x[i, c, h + dy, s + dx],  s = W-1-w if flipped else w,
        and 0 where (h + dy, s + dx) falls outside the image. That is: shift first (take the HxW
        window at offset (pad+dy, pad+dx) of the image zero-padded by `pad` on every side), then
        mirror the window left-right. pad=0 and flip=False copies x. The same on every backend,
        bit for bit (values are moved, never computed). Without the workspace from
        jitter_workspace(n) the NumPy backend allocates one (setup-time use only).
        """
        raise NotImplementedError

    def _check_jitter_args(self, x, out, pad: int, seed: int, counter: int) -> None:
        check_seed_and_counter(seed, counter)
        if not 0 <= operator.index(pad) < 2**31:  # operator.index: a TypeError for 2.0
            raise ValueError(f"jitter pad must be an integer in [0, 2**31), got {pad!r}")
        if x.ndim != 4:
            raise ValueError(f"jitter() takes an (n, C, H, W) batch, got shape {tuple(x.shape)}")
        if tuple(out.shape) != tuple(x.shape):
            raise ValueError(f"jitter out has shape {tuple(out.shape)}, x has {tuple(x.shape)}")
        if x.dtype.kind != "f" or out.dtype != x.dtype:
            raise TypeError(
                f"jitter() moves floats between arrays of one dtype, got x "
                f"{x.dtype} and out {out.dtype}"
            )
        if self.xp.may_share_memory(x, out):
            raise ValueError(
                "jitter out must not overlap x (pixels move): write into a "
                "scratch batch and copy back"
            )
        check_jitter_batch_size(x.shape[0])

    def describe(self) -> str:
        return self.name


def check_jitter_batch_size(batch_size: int) -> None:
    """The draws of the last image must have 32-bit indices (3 * batch_size <= 2**32)."""
    if JITTER_DRAWS_PER_IMAGE * batch_size > UINT32_RANGE:
        raise ValueError(
            f"jitter() indexes its draws with 32 bits; a batch of {batch_size} images is too many"
        )
