"""The CPU's blocked, channels-last convolution and the chunked channels-first one
(conv_lowering.py) compute what the whole-batch lowering computes, up to the order of float
sums: 1e-12 of the largest value in float64."""

from __future__ import annotations

import numpy as np
import pytest

from convnet_gpu.backends import NumpyBackend, conv_lowering
from convnet_gpu.backends.geometry import WindowGeometry
from convnet_gpu.backends.numpy_backend import load_jit
from convnet_gpu.errors import UserError
from tests.test_cpu_kernels import needs_jit

GEOMETRIES = [  # (channels, height, width, kernel_h, kernel_w, stride, pad)
    (1, 8, 8, 3, 3, 1, 1),
    (3, 7, 9, 5, 3, 1, 2),  # a non-square kernel, pad = KW - 1
    (3, 7, 9, 5, 3, 2, 2),  # stride 2
    (4, 5, 5, 3, 3, 2, 0),
    (2, 4, 6, 1, 1, 1, 0),
    (1, 3, 3, 3, 3, 1, 3),  # pad > K - 1: some windows read only padding; added back
]


def case(window, n, out_channels=3, seed=0):
    geom = WindowGeometry(*window)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, geom.channels, geom.height, geom.width))
    weight = rng.standard_normal((out_channels, geom.channels, geom.kernel_h, geom.kernel_w))
    dy = rng.standard_normal((n, out_channels, geom.out_h, geom.out_w))
    return geom, x, weight, dy


def run(forward, backward, workspace, geom, x, weight, dy, with_dx=True, xp=np):
    y, d_weight = xp.full_like(dy, np.nan), xp.full_like(weight, np.nan)
    dx = xp.full_like(x, np.nan) if with_dx else None
    forward(x, weight, y, workspace, geom)
    backward(x, weight, dy, d_weight, dx, workspace, geom)
    return y, d_weight, dx


def blocked(window, n, compiled: bool):
    """(y, d_weight, dx) of the blocked convolution in blocks of 2 images, dx added back by
    numba's kernel (compiled) or NumPy's adds."""
    geom, x, weight, dy = case(window, n)
    image_bytes = max(geom.channels, 3) * geom.kernel_h * geom.kernel_w * geom.height * geom.width
    workspace = conv_lowering.block_workspace(geom, 3, n, np.float64, 2 * image_bytes * 8,
                                              compiled_add_back=compiled)  # fmt: skip
    assert len(workspace.col) == 2  # blocks of 2, 2 and 1 images
    add_back = load_jit(True).conv_add_back if compiled else None
    backward = lambda *a: conv_lowering.blocked_backward(*a, add_back=add_back)
    return run(conv_lowering.blocked_forward, backward, workspace, geom, x, weight, dy)


@pytest.mark.parametrize("window", GEOMETRIES)
def test_blocks_compute_the_whole_batch_lowering(window):
    n = 5
    geom, x, weight, dy = case(window, n)
    expected = run_lowered(NumpyBackend(), geom, x, weight, dy, chunk_bytes=None, batch_size=n)
    assert_close(blocked(window, n, compiled=False), expected)


@needs_jit
@pytest.mark.parametrize("window", GEOMETRIES)
def test_the_compiled_add_back_gives_numpys_bits(window):
    """numba's one-pass add-back of dx adds in NumPy's order: with Winograd's convolution off, a
    step is the same with or without the cpu-jit extra (tests/test_cpu_kernels.py)."""
    for want, have in zip(blocked(window, 5, compiled=False), blocked(window, 5, compiled=True)):
        np.testing.assert_array_equal(have, want)


def run_lowered(backend, geom, x, weight, dy, chunk_bytes, batch_size, with_dx=True):
    dtype = np.dtype(x.dtype)
    workspace = conv_lowering.lowered_workspace(backend, geom, len(weight), batch_size, dtype,
                                                chunk_bytes)  # fmt: skip
    return run(
        lambda *a: conv_lowering.lowered_forward(backend, *a),
        lambda *a: conv_lowering.lowered_backward(backend, *a),
        workspace, geom, x, weight, dy, with_dx, backend.xp,
    )  # fmt: skip


def assert_close(got, expected):
    for name, want, have in zip(("y", "d_weight", "dx"), expected, got):
        if want is None:
            assert have is None, name
            continue
        assert np.abs(have - want).max() <= 1e-12 * np.abs(want).max(), name


@pytest.mark.parametrize("window", GEOMETRIES)
@pytest.mark.parametrize("with_dx", [True, False])
def test_chunks_compute_the_whole_batch_lowering(window, with_dx):
    """Chunks of 2, 2 and 1 images (the first two lowered again in backward) against one."""
    n = 5
    geom, x, weight, dy = case(window, n)
    cpu = NumpyBackend()
    per_image = max(geom.col_rows, 3) * geom.out_h * geom.out_w * 8
    chunked = conv_lowering.lowered_workspace(cpu, geom, 3, n, np.dtype(np.float64), 2 * per_image)
    assert chunked.images == 2 and chunked.d_weight_share.shape == (3, geom.col_rows)
    expected = run_lowered(cpu, geom, x, weight, dy, None, n, with_dx)
    got = run_lowered(cpu, geom, x, weight, dy, 2 * per_image + 1, n, with_dx)
    assert_close(got, expected)


@pytest.mark.parametrize("n", [0, 1, 3, 6, 8])
def test_chunks_of_a_short_batch(n):
    """Set up for 8 images in chunks of 5: fewer rows than a chunk, a chunk and a bit, a full
    batch, or no rows at all (d_weight zero)."""
    geom, x, weight, dy = case(GEOMETRIES[2], n)
    cpu = NumpyBackend()
    per_image = max(geom.col_rows, 3) * geom.out_h * geom.out_w * 8
    workspace = conv_lowering.lowered_workspace(
        cpu, geom, 3, 8, np.dtype(np.float64), 5 * per_image
    )
    assert workspace.images == 5
    expected = run_lowered(cpu, geom, x, weight, dy, None, 8)
    got = run_lowered(cpu, geom, x, weight, dy, 5 * per_image, 8)
    if n == 0:
        assert np.array_equal(got[1], np.zeros_like(weight)) and got[2].shape == x.shape
    else:
        assert_close(got, expected)


def test_a_backend_lowers_in_chunks_of_its_conv_chunk_bytes():
    geom = WindowGeometry(*GEOMETRIES[2])
    cpu = NumpyBackend()
    whole = cpu.conv_workspace(geom, 3, 8, np.float32)  # 3 channels: lowered channels-first
    cpu.conv_chunk_bytes = 1
    chunked = cpu.conv_workspace(geom, 3, 8, np.float32)
    assert (whole.images, whole.d_weight_share, chunked.images) == (8, None, 1)


def test_the_direct_sum_agrees():
    """Against the definition, not another lowering: y[i, f, oh, ow] = sum over c, kh, kw."""
    geom, x, weight, dy = case((2, 5, 6, 3, 2, 2, 1), 3)
    workspace = conv_lowering.block_workspace(geom, 3, 3, np.float64, 1)
    y, _, _ = run(conv_lowering.blocked_forward, conv_lowering.blocked_backward, workspace, geom,
                  x, weight, dy)  # fmt: skip
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    for oh in range(geom.out_h):
        for ow in range(geom.out_w):
            window = padded[:, :, 2 * oh : 2 * oh + 3, 2 * ow : 2 * ow + 2]
            expected = np.einsum("ichw,fchw->if", window, weight)
            assert np.allclose(y[:, :, oh, ow], expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("window", [GEOMETRIES[0], GEOMETRIES[2]])
def test_d_weight_is_the_same_without_dx(window):
    geom, x, weight, dy = case(window, 4)
    cpu = NumpyBackend()
    workspace = cpu.conv_workspace(geom, 3, 4, np.float64)
    forward, backward = cpu.conv_forward, cpu.conv_backward
    _, with_dx, _ = run(forward, backward, workspace, geom, x, weight, dy)
    _, without_dx, _ = run(forward, backward, workspace, geom, x, weight, dy, with_dx=False)
    assert np.array_equal(with_dx, without_dx)


def test_a_worker_with_no_rows_gets_a_zero_weight_gradient():
    geom, x, weight, dy = case(GEOMETRIES[0], 0)
    cpu = NumpyBackend()
    workspace = cpu.conv_workspace(geom, 3, 4, np.float64)
    _, d_weight, dx = run(cpu.conv_forward, cpu.conv_backward, workspace, geom, x, weight, dy)
    assert dx.shape == (0, 1, 8, 8) and np.array_equal(d_weight, np.zeros_like(weight))


def test_conv_forward_names_a_wrong_shape():
    geom = WindowGeometry(2, 6, 6, 3, 3, 1, 1)
    cpu = NumpyBackend()
    workspace = cpu.conv_workspace(geom, 3, 4, np.float32)
    x, weight = np.zeros((4, 2, 6, 6), np.float32), np.zeros((3, 2, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"conv_forward: y has shape \(4, 3, 5, 6\), expected"):
        cpu.conv_forward(x, weight, np.zeros((4, 3, 5, 6), np.float32), workspace, geom)


@pytest.mark.parametrize(("text", "expected"), [("", None), ("0", None), (" 16 ", 16 << 20)])
def test_the_chunk_size_setting(monkeypatch, text, expected):
    monkeypatch.setenv(conv_lowering.CHUNK_ENV_VAR, text)
    assert conv_lowering.chunk_bytes_from_env() == expected


@pytest.mark.parametrize("text", ["-1", "16MiB", "1.5", "99999999"])
def test_a_bad_chunk_size_names_the_setting(monkeypatch, text):
    monkeypatch.setenv(conv_lowering.CHUNK_ENV_VAR, text)
    with pytest.raises(UserError, match="CONVNET_GPU_CONV_CHUNK_MIB=.* is not a size in MiB"):
        conv_lowering.chunk_bytes_from_env()


@pytest.mark.gpu
@pytest.mark.parametrize("window", GEOMETRIES)
def test_cuda_chunks_compute_the_cpu_whole_batch_lowering(cuda_backend, window):
    n = 5
    geom, x, weight, dy = case(window, n)
    expected = run_lowered(NumpyBackend(), geom, x, weight, dy, None, n)
    per_image = max(geom.col_rows, 3) * geom.out_h * geom.out_w * 8
    device = [cuda_backend.asarray(array) for array in (x, weight, dy)]
    got = run_lowered(cuda_backend, geom, *device, chunk_bytes=2 * per_image, batch_size=n)
    assert_close([cuda_backend.to_host(array) for array in got], expected)


@pytest.mark.gpu
def test_cuda_chunked_convolutions_replay_allocation_free(cuda_backend):
    """Every chunk's views and launches are fixed in setup: the step captures and replays."""
    import cupy

    geom, x, weight, dy = case(GEOMETRIES[0], 7)
    x, weight, dy = (cuda_backend.asarray(a.astype(np.float32)) for a in (x, weight, dy))
    workspace = conv_lowering.lowered_workspace(cuda_backend, geom, 3, 7, np.dtype(np.float32),
                                                3 * geom.col_rows * 64 * 4)  # fmt: skip
    assert workspace.images == 3
    xp = cuda_backend.xp
    y, d_weight, dx = xp.empty_like(dy), xp.empty_like(weight), xp.empty_like(x)

    def step():
        cuda_backend.conv_forward(x, weight, y, workspace, geom)
        cuda_backend.conv_backward(x, weight, dy, d_weight, dx, workspace, geom)

    step()
    eager = [cuda_backend.to_host(a) for a in (y, d_weight, dx)]
    graph = cuda_backend.capture(step)
    pool = cupy.get_default_memory_pool()
    before = pool.used_bytes()
    for _ in range(3):
        graph.replay()
    cuda_backend.synchronize()
    assert pool.used_bytes() == before
    for want, have in zip(eager, (y, d_weight, dx)):
        np.testing.assert_array_equal(cuda_backend.to_host(have), want)
