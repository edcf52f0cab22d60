"""The CUDA window kernels (im2col.cu, pooling.cu), run on the CPU: a host C++ compiler builds
them with a small shim for CUDA's keywords and thread indices, a loop plays every thread of a
small grid (so the grid-stride loops wrap), and the results must equal the NumPy backend's, for
both index types the kernels are instantiated with (int and long long). No GPU needed; skips
without g++ or clang++."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import run_host_harness

from convnet_gpu.backends import WindowGeometry, get_backend

KERNELS_DIR = Path(__file__).resolve().parents[1] / "convnet_gpu" / "backends" / "kernels"
GEOMETRIES = [
    WindowGeometry(3, 8, 8, 5, 5, stride=1, pad=2),
    WindowGeometry(2, 9, 7, 3, 3, stride=2, pad=1),
    WindowGeometry(4, 6, 5, 1, 1, stride=1, pad=0),
    WindowGeometry(3, 8, 6, 2, 2, stride=2, pad=0),
    WindowGeometry(2, 7, 9, 3, 3, stride=2, pad=1),
    WindowGeometry(1, 7, 9, 4, 2, stride=3, pad=3),
]
N = 2

SHIM = r"""
#include <cstdio>
#include <cstring>
#include <vector>
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
struct Dim3 { unsigned int x = 1, y = 1, z = 1; };
static Dim3 blockIdx, threadIdx, blockDim, gridDim;
inline float __int_as_float(int v) { float f; std::memcpy(&f, &v, 4); return f; }
inline double __longlong_as_double(long long v) { double d; std::memcpy(&d, &v, 8); return d; }
#include "window.cuh"
#include "im2col.cu"
#include "pooling.cu"

// Every thread of a 3 x 5 grid in turn: 15 threads, so each grid-stride loop goes round.
template <typename Kernel> void launch(Kernel kernel) {
    gridDim.x = 3; blockDim.x = 5;
    for (unsigned b = 0; b < 3; ++b)
        for (unsigned t = 0; t < 5; ++t) { blockIdx.x = b; threadIdx.x = t; kernel(); }
}
template <typename V> void print(const V& values) {
    for (auto v : values) std::printf("%.17g ", (double)v);
    std::printf("\n");
}
// Input values exact in double on both sides: distinct, so max pooling has no ties.
double value(long long i) { return (double)((i * 7919) % 1009) / 64.0 - 7.0; }
"""


def _values(count: int) -> np.ndarray:
    return ((np.arange(count, dtype=np.int64) * 7919) % 1009) / 64.0 - 7.0


def _geometry_args(g: WindowGeometry, index: str) -> str:
    """The window kernels' trailing arguments (n, C, H, W, KH, KW, stride, pad, OH, OW), cast."""
    values = (N, g.channels, g.height, g.width, g.kernel_h, g.kernel_w, g.stride, g.pad,
              g.out_h, g.out_w)  # fmt: skip
    return ", ".join(f"({index}){v}" for v in values)


def _harness(g: WindowGeometry, index: str) -> str:
    """main(): the six kernels on one geometry with index type `index`, one output per line."""
    args = _geometry_args(g, index)
    x_size = N * g.channels * g.height * g.width
    y_size = N * g.channels * g.out_h * g.out_w
    col_size = g.col_rows * g.col_cols(N)
    t = f"<double, {index}>"
    return (
        SHIM
        + f"""
int main() {{
    std::vector<double> x({x_size}), col({col_size}), dx({x_size}), y({y_size}), dy({y_size});
    std::vector<int> argmax({y_size});
    for (long long i = 0; i < {x_size}; ++i) x[i] = value(i);
    for (long long i = 0; i < {y_size}; ++i) dy[i] = value(i + 5);
    launch([&] {{ im2col_kernel{t}(x.data(), col.data(), {args}); }}); print(col);
    for (long long i = 0; i < {col_size}; ++i) col[i] = value(i + 3);
    launch([&] {{ col2im_kernel{t}(col.data(), dx.data(), {args}); }}); print(dx);
    launch([&] {{ maxpool_forward_kernel{t}(x.data(), y.data(), argmax.data(), {args}); }});
    print(y); print(argmax);
    launch([&] {{ maxpool_backward_kernel{t}(dy.data(), argmax.data(), dx.data(), {args}); }});
    print(dx);
    launch([&] {{ avgpool_forward_kernel{t}(x.data(), y.data(), {args}); }}); print(y);
    launch([&] {{ avgpool_backward_kernel{t}(dy.data(), dx.data(), {args}); }}); print(dx);
}}
"""
    )


def _numpy_results(g: WindowGeometry) -> list[np.ndarray]:
    be = get_backend("cpu")
    x_shape, y_shape = (N, g.channels, g.height, g.width), (N, g.channels, g.out_h, g.out_w)
    col_shape = (g.col_rows, g.col_cols(N))
    x = _values(int(np.prod(x_shape))).reshape(x_shape)
    dy = _values(int(np.prod(y_shape)) + 5)[5:].reshape(y_shape)
    col_in = _values(int(np.prod(col_shape)) + 3)[3:].reshape(col_shape)
    col, dx = np.empty(col_shape), np.empty(x_shape)
    y, argmax = np.empty(y_shape), np.empty(y_shape, np.int32)
    workspace = be.pool_workspace(y_shape, np.float64)
    results = []
    be.im2col(x, col, g)
    results.append(col.copy())
    be.col2im(col_in, dx, g)
    results.append(dx.copy())
    be.maxpool_forward(x, y, argmax, workspace, g)
    results += [y.copy(), argmax.copy()]
    be.maxpool_backward(dy, argmax, dx, workspace, g)
    results.append(dx.copy())
    be.avgpool_forward(x, y, g)
    results.append(y.copy())
    be.avgpool_backward(dy, dx, g)
    results.append(dx.copy())
    return results


@pytest.mark.parametrize("index", ["int", "long long"])
@pytest.mark.parametrize(
    "g", GEOMETRIES, ids=lambda g: f"{g.kernel_h}x{g.kernel_w}s{g.stride}p{g.pad}"
)
def test_window_kernels_on_the_host_equal_numpy(tmp_path, g, index):
    printed = run_host_harness(_harness(g, index), tmp_path, KERNELS_DIR, ragged=True)
    names = ["im2col", "col2im", "maxpool y", "maxpool argmax", "maxpool dx", "avgpool y",
             "avgpool dx"]  # fmt: skip
    for name, row, expected in zip(names, printed, _numpy_results(g)):
        # The same terms in the same order as NumPy; average pooling's 1/(KH*KW) is rounded
        # once on both sides, so the results agree to the last bit or within an ulp or two.
        np.testing.assert_allclose(row, expected.ravel(), rtol=1e-15, atol=1e-15, err_msg=name)


# ---- pooling.cu: Bias, ReLU and max pooling fused ------------------------------------------------
def _fused_harness(g: WindowGeometry, index: str) -> str:
    """main(): the fused forward (y, argmax) and backward (dx) with a per-channel bias."""
    args = _geometry_args(g, index)
    x_size = N * g.channels * g.height * g.width
    y_size = N * g.channels * g.out_h * g.out_w
    t = f"<double, {index}>"
    return (
        SHIM
        + f"""
int main() {{
    std::vector<double> x({x_size}), bias({g.channels}), dx({x_size}), y({y_size}), dy({y_size});
    std::vector<int> argmax({y_size});
    for (long long i = 0; i < {x_size}; ++i) x[i] = value(i);
    for (long long c = 0; c < {g.channels}; ++c) bias[c] = 1.5 - c;
    for (long long i = 0; i < {y_size}; ++i) dy[i] = value(i + 5);
    launch([&] {{ bias_relu_maxpool_forward_kernel{t}(x.data(), bias.data(), y.data(),
                                                      argmax.data(), {args}); }});
    print(y); print(argmax);
    launch([&] {{ bias_relu_maxpool_backward_kernel{t}(dy.data(), y.data(), argmax.data(),
                                                       dx.data(), {args}); }});
    print(dx);
}}
"""
    )


def _unfused_results(g: WindowGeometry) -> list[np.ndarray]:
    """What the NumPy backend's Bias, ReLU and MaxPool2D give, one after the other."""
    be = get_backend("cpu")
    x_shape, y_shape = (N, g.channels, g.height, g.width), (N, g.channels, g.out_h, g.out_w)
    x = _values(int(np.prod(x_shape))).reshape(x_shape)
    dy = _values(int(np.prod(y_shape)) + 5)[5:].reshape(y_shape)
    bias = 1.5 - np.arange(g.channels, dtype=np.float64)
    activated = np.maximum(x + bias.reshape(-1, 1, 1), 0)
    y, argmax, d_activated = np.empty(y_shape), np.empty(y_shape, np.int32), np.empty(x_shape)
    workspace = be.pool_workspace(y_shape, np.float64)
    be.maxpool_forward(activated, y, argmax, workspace, g)
    be.maxpool_backward(dy, argmax, d_activated, workspace, g)
    return [y, argmax, (activated > 0) * d_activated]


@pytest.mark.parametrize("index", ["int", "long long"])
@pytest.mark.parametrize(
    "g", GEOMETRIES, ids=lambda g: f"{g.kernel_h}x{g.kernel_w}s{g.stride}p{g.pad}"
)
def test_fused_bias_relu_maxpool_kernels_on_the_host_equal_the_unfused_numpy(tmp_path, g, index):
    # the bias turns about half the values negative: windows of zeros (ties) and ReLU's edge
    printed = run_host_harness(_fused_harness(g, index), tmp_path, KERNELS_DIR, ragged=True)
    for name, row, expected in zip(["y", "argmax", "dx"], printed, _unfused_results(g)):
        np.testing.assert_array_equal(row, expected.ravel(), err_msg=name)


# ---- channel.cu: per-channel sums and BatchNorm's passes ---------------------------------------
CHANNEL_SHIM = SHIM.replace(
    '#include "im2col.cu"\n#include "pooling.cu"\n', '#include "channel.cu"\n'
)


@pytest.mark.parametrize("index", ["int", "long long"])
@pytest.mark.parametrize("shape, parts", [((3, 4, 5, 6), 32), ((5, 7), 32), ((2, 3, 9, 9), 64)])
def test_channel_kernels_on_the_host_equal_numpy(tmp_path, shape, parts, index):
    n, channels = shape[0], shape[1]
    spatial = int(np.prod(shape[2:], dtype=np.int64))
    size = n * channels * spatial
    sizes = f"({index}){n}, ({index}){channels}, ({index}){spatial}"
    flat = f"({index}){size}, ({index}){channels}, ({index}){spatial}"
    source = (
        CHANNEL_SHIM
        + f"""
int main() {{
    const long long size = {size}, channels = {channels}, parts = {parts};
    std::vector<double> a(size), b(size), center(channels), out(channels), out_b(channels);
    std::vector<double> partial(channels * parts), partial_b(channels * parts);
    const long long lanes = 8;  // the backend uses 32; any count must give the same sums
    std::vector<double> group(channels * lanes), group_b(channels * lanes);
    std::vector<double> x_hat(size), y(size), dx(size);
    for (long long i = 0; i < size; ++i) {{ a[i] = value(i); b[i] = value(i + 11); }}
    for (long long c = 0; c < channels; ++c) center[c] = value(c + 3);
    for (int mode = 0; mode < 3; ++mode) {{
        launch([&] {{ channel_partials_kernel<double, {index}>(a.data(), b.data(), center.data(),
            partial.data(), partial_b.data(), {sizes}, ({index})parts, mode); }});
        launch([&] {{ channel_regroup_kernel<double>(partial.data(), partial_b.data(),
            group.data(), group_b.data(), channels, parts, lanes, mode == 1); }});
        launch([&] {{ channel_finish_kernel<double>(group.data(), group_b.data(), out.data(),
            out_b.data(), channels, lanes, mode == 1); }});
        print(out); print(out_b);
    }}
    // normalize with (mean, inv_std, gamma, beta) = (center, b[:C], a[:C], b[C:2C])
    launch([&] {{ batchnorm_normalize_kernel<double, {index}>(a.data(), center.data(), b.data(),
        a.data(), b.data() + channels, x_hat.data(), y.data(), {flat}); }});
    print(x_hat); print(y);
    launch([&] {{ batchnorm_input_grad_kernel<double, {index}>(a.data(), b.data(), center.data(),
        b.data() + channels, a.data() + channels, 1.0 / 7, dx.data(), {flat}); }});
    print(dx);
}}
"""
    )
    rows = run_host_harness(source, tmp_path, KERNELS_DIR, ragged=True)
    a, b = _values(size).reshape(shape), _values(size + 11)[11:].reshape(shape)
    center = _values(channels + 3)[3:]
    axes = (0,) + tuple(range(2, len(shape)))
    centered = a - center.reshape((channels,) + (1,) * (len(shape) - 2))
    expected = {0: a.sum(axis=axes), 2: a.sum(axis=axes), 3: (a * b).sum(axis=axes),
                4: (centered**2).sum(axis=axes)}  # fmt: skip
    for row, value in expected.items():  # the sums add in another order: equal within rounding
        np.testing.assert_allclose(rows[row], value, rtol=1e-12, err_msg=f"row {row}")
    from convnet_gpu.backends import channel_ops

    flat_b = b.ravel()
    x_hat, y, dx = np.empty(shape), np.empty(shape), np.empty(shape)
    channel_ops.batchnorm_normalize(np, a, center, flat_b[:channels], a.ravel()[:channels],
                                    flat_b[channels:2 * channels], x_hat, y)  # fmt: skip
    channel_ops.batchnorm_input_grad(np, a, b, center, flat_b[channels:2 * channels],
                                     a.ravel()[channels:2 * channels], 7, dx)  # fmt: skip
    for name, row, expected in (("x_hat", rows[6], x_hat), ("y", rows[7], y), ("dx", rows[8], dx)):
        np.testing.assert_array_equal(row, expected.ravel(), err_msg=name)  # same roundings


@pytest.mark.parametrize("ctype, dtype", [("float", np.float32), ("double", np.float64)])
def test_the_batchnorm_statistics_kernel_on_the_host_rounds_as_numpy(tmp_path, ctype, dtype):
    """Eval (var a variance), training, training with the running statistics: bit for bit."""
    channels, count, momentum, eps = 23, 37, 0.1, 1e-5
    factors = f"1.0 / {count}, 1.0 - {momentum}, {momentum}, {count} / ({count} - 1.0) * {momentum}"
    source = CHANNEL_SHIM.replace("#include <vector>", "#include <vector>\n#include <math.h>")
    source += f"""
int main() {{
    const long long channels = {channels};
    for (int mode = 0; mode < 3; ++mode) {{
        std::vector<{ctype}> mean(channels), var(channels), inv_std(channels);
        std::vector<{ctype}> running_mean(channels), running_var(channels);
        for (long long c = 0; c < channels; ++c) {{
            mean[c] = ({ctype})value(c); var[c] = ({ctype})(value(c + 5) * value(c + 5) * 3);
            running_mean[c] = ({ctype})value(c + 9); running_var[c] = ({ctype})(1 + c / 8.0);
        }}
        launch([&] {{ batchnorm_statistics_kernel<{ctype}>(mean.data(), var.data(),
            inv_std.data(), running_mean.data(), running_var.data(), {factors}, {eps},
            channels, mode); }});
        print(var); print(inv_std); print(running_mean); print(running_var);
    }}
}}
"""
    rows = run_host_harness(source, tmp_path, KERNELS_DIR)
    from convnet_gpu.backends import channel_ops

    c = np.arange(channels)
    for mode in range(3):
        mean = _values(channels).astype(dtype)
        var = (_values(channels + 5)[5:] ** 2 * 3).astype(dtype)
        running = (_values(channels + 9)[9:].astype(dtype), (1 + c / 8.0).astype(dtype))
        inv_std = np.empty(channels, dtype)
        channel_ops.batchnorm_statistics(np, var, eps, inv_std, None if mode == 0 else count,
                                         running if mode == 2 else None, mean,
                                         momentum)  # fmt: skip
        names = ("var", "inv_std", "running_mean", "running_var")
        printed = rows[4 * mode : 4 * mode + 4]
        for name, row, expected in zip(names, printed, (var, inv_std, *running)):
            np.testing.assert_array_equal(
                row, expected.astype(np.float64), err_msg=f"{mode} {name}"
            )
