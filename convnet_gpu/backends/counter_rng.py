"""The counter-based random numbers every backend draws: constants, checks, scalar reference.

Backend.uniform() and Backend.jitter() draw from a counter-based hash instead of a stateful
generator: every value is a pure function of (seed, counter, flat element index), so NumPy and
CuPy give the same numbers bit for bit, a step's random numbers depend only on that step's
counter, and a CUDA graph can replay the kernel once the counter lives in device memory.
"""

from __future__ import annotations

import operator

# ---- counter-based random numbers --------------------------------------------------------------
# The mixer is the 32-bit finalizer ("fmix32") of Austin Appleby's MurmurHash3, a bijection on
# uint32; all arithmetic is mod 2**32:
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


def check_uniform_size(size: int) -> None:
    """uniform() hashes flat element indices as uint32: fewer than 2**32 elements."""
    if size >= UINT32_RANGE:
        raise ValueError(f"uniform() indexes elements with 32 bits; {size} elements is too many")


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


def check_jitter_pad(pad: int) -> None:
    if not 0 <= operator.index(pad) < 2**31:  # operator.index: a TypeError for 2.0
        raise ValueError(f"jitter pad must be an integer in [0, 2**31), got {pad!r}")


def check_jitter_batch_size(batch_size: int) -> None:
    """The draws of the last image must have 32-bit indices (3 * batch_size <= 2**32)."""
    if JITTER_DRAWS_PER_IMAGE * batch_size > UINT32_RANGE:
        raise ValueError(
            f"jitter() indexes its draws with 32 bits; a batch of {batch_size} images is too many"
        )
