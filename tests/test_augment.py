"""Image jitter (Backend.jitter and convnet_gpu.augment.Jitter): random shift + left-right mirror.

Checked against a naive per-pixel Python loop that takes its draws from counter_rng.py's scalar
reference hash (jitter_draws), on every backend; the CUDA kernel's per-pixel code is also built
for the host with g++ and compared with NumPy. NumPy vs CuPy bit equality goes through
helpers.assert_backends_agree (skipped without a GPU).
"""

from __future__ import annotations

import tracemalloc
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_backends_agree, output_buffer, run_host_harness

from convnet_gpu.augment import Jitter
from convnet_gpu.backends import get_backend, kernels
from convnet_gpu.backends.counter_rng import counter_hash, jitter_draws
from convnet_gpu.backends.kernels import KERNEL_SOURCES

CPU = get_backend("cpu")
KERNEL_DIR = Path(kernels.__file__).parent
SHAPE = (6, 2, 5, 7)  # n, C, H, W: not square, so a row/column mix-up shows


def naive_jitter(x: np.ndarray, pad: int, flip: bool, seed: int, counter: int) -> np.ndarray:
    """Backend.jitter's docstring, pixel by pixel, with the scalar reference draws."""
    n, channels, height, width = x.shape
    out = np.zeros_like(x)
    for i in range(n):
        dy, dx, flipped = jitter_draws(seed, counter, i, pad, flip)
        for c in range(channels):
            for h in range(height):
                for w in range(width):
                    src_h, src_w = h + dy, (width - 1 - w if flipped else w) + dx
                    if 0 <= src_h < height and 0 <= src_w < width:
                        out[i, c, h, w] = x[i, c, src_h, src_w]
    return out


def _random_batch(shape=SHAPE, dtype=np.float64, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _jitter(be, host_x, pad, flip, seed, counter) -> np.ndarray:
    x = be.asarray(host_x)
    out = be.asarray(np.full(host_x.shape, 7.0, host_x.dtype))  # garbage jitter must overwrite
    be.jitter(x, out, pad, flip, seed, counter, be.jitter_workspace(host_x.shape[0]))
    be.synchronize()
    return be.to_host(out)


# ---- the op against the naive reference ----------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("pad", [0, 1, 2, 3, 8])  # 8 > H and W: some images shift out entirely
@pytest.mark.parametrize("flip", [True, False])
def test_jitter_matches_naive_reference(backend, pad, flip, dtype):
    x = _random_batch(dtype=dtype)
    for seed, counter in ((0, 0), (3, 17), (2**32 - 1, 2**32 - 1)):
        expected = naive_jitter(x, pad, flip, seed, counter)
        np.testing.assert_array_equal(_jitter(backend, x, pad, flip, seed, counter), expected)


def test_reference_draws_follow_the_documented_layout():
    for image in (0, 1, 5, 1000):
        u = [counter_hash(9, 4, 3 * image + k) >> 8 for k in range(3)]
        assert jitter_draws(9, 4, image, 2, True) == (
            u[0] * 5 // 2**24 - 2,
            u[1] * 5 // 2**24 - 2,
            u[2] >= 2**23,
        )
        assert jitter_draws(9, 4, image, 0, False) == (0, 0, False)


def test_float32_and_float64_move_the_same_pixels():
    x64 = _random_batch()
    x32 = x64.astype(np.float32)
    np.testing.assert_array_equal(
        _jitter(CPU, x32, 2, True, 1, 2), _jitter(CPU, x64, 2, True, 1, 2).astype(np.float32)
    )


def test_strided_input_views_are_jittered_like_copies(backend):
    wide = _random_batch((6, 2, 5, 14))
    x = backend.asarray(wide)[..., ::2]  # (6, 2, 5, 7), non-contiguous
    expected = naive_jitter(wide[..., ::2], 2, True, 5, 6)
    out = backend.zeros(x.shape, wide.dtype)
    backend.jitter(x, out, 2, True, 5, 6, backend.jitter_workspace(6))
    np.testing.assert_array_equal(backend.to_host(out), expected)


# ---- degenerate settings -------------------------------------------------------------------------
def test_pad0_without_flip_is_the_identity(backend):
    x = _random_batch()
    np.testing.assert_array_equal(_jitter(backend, x, 0, False, 4, 9), x)
    jitter = Jitter(pad=0, flip=False, seed=4).setup(backend, SHAPE[0], SHAPE[1:], np.float64)
    assert jitter.is_identity and jitter.scratch is None
    batch = backend.asarray(x.copy())  # the CPU backend's asarray does not copy
    jitter.apply(batch, step=3)
    np.testing.assert_array_equal(backend.to_host(batch), x)


def test_pad0_with_flip_only_mirrors(backend):
    x = _random_batch((64, 1, 3, 4))
    out = _jitter(backend, x, 0, True, 0, 1)
    mirrored = [np.array_equal(o, xi[..., ::-1]) for o, xi in zip(out, x)]
    kept = [np.array_equal(o, xi) for o, xi in zip(out, x)]
    assert all(m != k for m, k in zip(mirrored, kept))  # each image exactly one of the two
    assert 0 < sum(mirrored) < len(x)


def _probe_draws(out: np.ndarray, pad: int):
    """(dy, dx, flipped) per image, read back from jittered probe images (see below)."""
    side = 4 * pad + 1
    centre = 2 * pad  # reads inside the image for every |dy|, |dx| <= pad
    source = out[:, 0, centre, centre].astype(np.int64) - 1
    dy, dx = source // side - centre, source % side - centre  # the centre column is its own mirror
    flipped = out[:, 0, centre, centre + 1] < out[:, 0, centre, centre]  # columns run backwards
    return dy, dx, flipped


def _probe_batch(n: int, pad: int) -> np.ndarray:
    """n copies of a (1, 4P+1, 4P+1) image whose pixels hold 1 + their flat index (all distinct)."""
    side = 4 * pad + 1
    return np.broadcast_to(
        np.arange(1.0, side * side + 1).reshape(1, 1, side, side), (n, 1, side, side)
    ).copy()


def test_shift_without_flip_never_mirrors(backend):
    pad = 2
    out = _jitter(backend, _probe_batch(500, pad), pad, False, 0, 0)
    dy, dx, flipped = _probe_draws(out, pad)
    assert not flipped.any()
    assert set(dy.tolist()) == set(dx.tolist()) == set(range(-pad, pad + 1))


# ---- statistics -----------------------------------------------------------------------------
@pytest.mark.parametrize("pad", [1, 2, 3])
def test_flip_is_a_fair_coin_and_shifts_are_uniform(backend, pad):
    n = 4000
    out = _jitter(backend, _probe_batch(n, pad), pad, True, 11, 5)
    dy, dx, flipped = _probe_draws(out, pad)
    assert abs(flipped.mean() - 0.5) < 0.05
    expected = n / (2 * pad + 1)
    for shifts in (dy, dx):
        counts = Counter(shifts.tolist())
        assert set(counts) == set(range(-pad, pad + 1)), counts  # every value, nothing else
        assert all(abs(c - expected) < 0.25 * expected for c in counts.values()), counts
    assert abs(np.corrcoef(dy, dx)[0, 1]) < 0.1  # drawn independently


# ---- reproducibility -----------------------------------------------------------------------------
def test_same_seed_and_step_repeat_and_others_differ(backend):
    x = _random_batch((32, 1, 8, 8))
    first = _jitter(backend, x, 2, True, 7, 100)
    np.testing.assert_array_equal(_jitter(backend, x, 2, True, 7, 100), first)
    assert not np.array_equal(_jitter(backend, x, 2, True, 7, 101), first)  # next step
    assert not np.array_equal(_jitter(backend, x, 2, True, 8, 100), first)  # other seed


def test_smaller_batch_uses_the_first_rows_draws(backend):
    x = _random_batch((9, 2, 6, 6))
    jitter = Jitter(pad=2, flip=True, seed=3).setup(backend, 9, (2, 6, 6), np.float64)
    full, part = backend.asarray(x.copy()), backend.asarray(x[:4].copy())  # apply writes
    jitter.apply(full, step=12)
    jitter.apply(part, step=12)
    np.testing.assert_array_equal(backend.to_host(part), backend.to_host(full)[:4])
    np.testing.assert_array_equal(
        backend.to_host(full), naive_jitter(x, 2, True, jitter.stream_seed, 12)
    )


def test_apply_jitters_a_view_of_the_input_blob_in_place(backend):
    host = _random_batch((8, 1, 6, 6))
    blob = backend.asarray(host.copy())  # the CPU backend's asarray does not copy
    jitter = Jitter(pad=1, flip=True, seed=0).setup(backend, 8, (1, 6, 6), np.float64)
    jitter.apply(blob[:5], step=2)
    after = backend.to_host(blob)
    np.testing.assert_array_equal(after[:5], naive_jitter(host[:5], 1, True, jitter.stream_seed, 2))
    np.testing.assert_array_equal(after[5:], host[5:])  # rows past n untouched


def test_jitter_seed_is_salted_away_from_dropout_streams():
    assert Jitter(seed=0).stream_seed != 0
    assert Jitter(seed=5).stream_seed == Jitter(seed=5).stream_seed != Jitter(seed=6).stream_seed


# ---- no allocation -------------------------------------------------------------------------------
def test_apply_allocates_nothing():
    batch_size, shape = 16, (3, 32, 32)  # one float64 image is 24 KiB, the batch 384 KiB
    jitter = Jitter(pad=4, flip=True, seed=1).setup(CPU, batch_size, shape, np.float64)
    batch = _random_batch((batch_size,) + shape)
    jitter.apply(batch, step=0)  # warm-up
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for step in range(1, 11):
            jitter.apply(batch[:9] if step % 3 == 0 else batch, step)
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after - before < 1024, f"apply kept {after - before} bytes"
    assert peak - before < 8 * 1024, f"apply peaked at {peak - before} bytes (an image is 24 KiB)"


# ---- argument checks -----------------------------------------------------------------------------
def test_jitter_refuses_bad_arguments():
    x, out = _random_batch(), np.empty(SHAPE)
    with pytest.raises(ValueError, match="overlap"):
        CPU.jitter(x, x, 1, True, 0, 0)
    with pytest.raises(ValueError, match="overlap"):
        CPU.jitter(x[:, :, :, 1:], x[:, :, :, :-1], 1, True, 0, 0)
    with pytest.raises(ValueError, match="shape"):
        CPU.jitter(x, out[:3], 1, True, 0, 0)
    with pytest.raises(ValueError, match=r"\(n, C, H, W\)"):
        CPU.jitter(x[0], out[0], 1, True, 0, 0)
    with pytest.raises(TypeError, match="dtype"):
        CPU.jitter(x, out.astype(np.float32), 1, True, 0, 0)
    with pytest.raises(ValueError, match="pad"):
        CPU.jitter(x, out, -1, True, 0, 0)
    with pytest.raises(TypeError):
        CPU.jitter(x, out, 1.5, True, 0, 0)
    with pytest.raises(ValueError, match="must be an integer in"):
        CPU.jitter(x, out, 1, True, 0, 2**32)
    with pytest.raises(ValueError, match="workspace"):
        CPU.jitter(x, out, 1, True, 0, 0, CPU.jitter_workspace(SHAPE[0] - 1))
    with pytest.raises(ValueError, match="32 bits"):
        CPU.jitter_workspace(2**32 // 3 + 1)


def test_jitter_class_refuses_misuse():
    with pytest.raises(ValueError, match="pad"):
        Jitter(pad=-1)
    with pytest.raises(ValueError, match="must be an integer in"):
        Jitter(seed=-1)
    jitter = Jitter()
    with pytest.raises(RuntimeError, match="setup"):
        jitter.apply(np.zeros(SHAPE), 0)
    with pytest.raises(ValueError, match="C, H, W"):
        jitter.setup(CPU, 4, (5, 7), np.float64)
    jitter.setup(CPU, 4, SHAPE[1:], np.float64)
    with pytest.raises(ValueError, match="up to 4"):
        jitter.apply(_random_batch(), 0)


# ---- the CUDA kernel: compiled for the host here, on the GPU where there is one ------------------
def test_kernel_is_listed_for_compilation():
    # tests/test_backends_kernels.py compiles every KERNEL_SOURCES entry with NVRTC.
    assert KERNEL_SOURCES["jitter.cu"] == ["jitter_kernel<float>", "jitter_kernel<double>"]


HOST_CASES = [
    (0, 0, 2, True),
    (7, 3, 1, False),
    (2**32 - 1, 99, 3, True),
    (5, 5, 0, True),
    (1, 2, 6, True),
]
HOST_SHAPE = (7, 2, 4, 5)

HOST_HARNESS = r"""
#include <cstdio>
#define __host__
#define __device__
#define __forceinline__ inline
#include "jitter.cu"
int main() {
    const long long n = %(n)d, channels = %(c)d, height = %(h)d, width = %(w)d;
    const struct { unsigned int seed, counter; long long pad; bool flip; } cases[] = {%(cases)s};
    static double x64[n * channels * height * width];
    static float x32[n * channels * height * width];
    for (long long i = 0; i < n * channels * height * width; ++i) x64[i] = x32[i] = i + 1;
    for (const auto& c : cases) {
        const unsigned int key = random_stream_key(c.seed, c.counter);
        // The kernel's loop body, run over every output element in order.
        for (long long i = 0; i < n * channels * height * width; ++i) {
            const long long plane = i / (height * width), h = (i / width) %% height, w = i %% width;
            const JitterDraw draw = jitter_draw(key, plane / channels, c.pad, c.flip);
            std::printf("%%.17g %%.17g\n",
                        jittered_pixel(x64 + plane * height * width, h, w, height, width, draw),
                        (double)jittered_pixel(x32 + plane * height * width, h, w, height, width,
                                               draw));
        }
    }
}
"""


def test_cuda_jitter_code_compiled_for_the_host_matches_numpy(tmp_path):
    """jitter.cu's draw and pixel functions, built with g++, move NumPy's pixels bit for bit."""
    n, c, h, w = HOST_SHAPE
    cases = ", ".join(
        f"{{{seed}u, {counter}u, {pad}, {'true' if flip else 'false'}}}"
        for seed, counter, pad, flip in HOST_CASES
    )
    source = HOST_HARNESS % {"n": n, "c": c, "h": h, "w": w, "cases": cases}
    values = run_host_harness(source, tmp_path, KERNEL_DIR)
    x = np.arange(1.0, np.prod(HOST_SHAPE) + 1).reshape(HOST_SHAPE)
    expected = np.concatenate(
        [
            _jitter(CPU, x, pad, flip, seed, counter).ravel()
            for seed, counter, pad, flip in HOST_CASES
        ]
    )
    np.testing.assert_array_equal(values[:, 0], expected)  # double
    np.testing.assert_array_equal(values[:, 1], expected)  # float


JITTER_SETTINGS = [(0, False), (0, True), (2, True), (4, False), (9, True)]  # (pad, flip)
STREAMS = [(0, 0), (5, 1), (2**32 - 1, 2**32 - 1)]  # (seed, counter)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (3, 3, 32, 32), (3000, 1, 28, 28)])
def test_jitter_is_bit_identical_on_numpy_and_cupy(shape, dtype):
    def jitter_every_way(backend, x):
        jittered = {}
        for pad, flip in JITTER_SETTINGS:
            for seed, counter in STREAMS:
                out = output_buffer(backend, shape, dtype)
                backend.jitter(x, out, pad, flip, seed, counter, backend.jitter_workspace(len(x)))
                jittered[f"pad {pad} flip {flip} seed {seed} counter {counter}"] = out
        return jittered

    assert_backends_agree(jitter_every_way, _random_batch(shape, dtype), tolerance="exact")


@pytest.mark.gpu
def test_jitter_apply_on_cupy_matches_numpy_and_allocates_nothing():
    def apply_five_steps(backend, x):
        batch = x.copy()  # apply() jitters in place; the input stays as it was
        jitter = Jitter(pad=4, seed=2).setup(backend, 16, (3, 32, 32), np.float32)
        jitter.apply(batch, 0)  # warm-up: compiles the kernel
        used = backend.memory_in_use()
        for step in range(1, 6):
            jitter.apply(batch[:9] if step == 3 else batch, step)
        backend.synchronize()
        assert backend.memory_in_use() == used  # CuPy's pool; NumPy is checked by tracemalloc
        return batch

    x = _random_batch((16, 3, 32, 32), np.float32)
    assert_backends_agree(apply_five_steps, x, tolerance="exact")


@pytest.mark.parametrize("first", [1, 5])
def test_jitter_from_a_first_image_is_that_slice_of_the_whole_batch(backend, first):
    rng = np.random.default_rng(3)
    images = rng.standard_normal((first + 4, 2, 6, 7)).astype(np.float32)
    x = backend.asarray(images)
    whole = backend.zeros(images.shape, np.float32)
    backend.jitter(x, whole, 2, True, 11, 3)
    part = backend.zeros((4, 2, 6, 7), np.float32)
    backend.jitter(x[first:], part, 2, True, 11, 3, first=first)
    np.testing.assert_array_equal(backend.to_host(part), backend.to_host(whole)[first:])
