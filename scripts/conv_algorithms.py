"""Time one convolution's forward + backward (with dx) on one CPU thread: lowered in blocks
(conv_lowering.py) against Winograd's (winograd.py), over a grid of channels, image sizes and
kernels, float32: what winograd.applies()'s thresholds (MIN_CHANNELS, MIN_CHANNEL_PRODUCT and,
for outputs under SMALL_OUTPUT, MIN_CHANNEL_PRODUCT_SMALL) were chosen from. With --errors,
instead: Winograd's float32 error against the float64 lowering on simple-cnn's second
convolution and its 3x3 twin, with winograd.POINTS or the --points given.

    PYTHONPATH=. python scripts/conv_algorithms.py [--batch 64] [--channels 4x4,8x8,...]
    PYTHONPATH=. python scripts/conv_algorithms.py --errors [--points 0,1,-1,2,-2]
"""

from __future__ import annotations

import argparse
import time
from fractions import Fraction

import numpy as np

from convnet_gpu.backends import NumpyBackend, conv_lowering, winograd
from convnet_gpu.backends import winograd_kernels as kernels
from convnet_gpu.backends.geometry import WindowGeometry
from convnet_gpu.backends.numpy_backend import WINOGRAD_BLOCK_BYTES

DEFAULT_CHANNELS = "4x4,8x8,8x16,16x16,16x32,32x32,32x64,64x64,128x128"


def best_ms(job, repeats: int = 5) -> float:
    job()  # warm: numba's loading, first touch of the buffers
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        job()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def time_step(forward, backward, workspace, geom, out_channels: int, batch: int) -> float:
    """forward(x, weight, y, workspace, geom), then backward(..., dy, d_weight, dx, ...)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, geom.channels, geom.height, geom.width), dtype=np.float32)
    shape = (out_channels, geom.channels, geom.kernel_h, geom.kernel_w)
    weight = rng.standard_normal(shape, dtype=np.float32)
    dy = rng.standard_normal((batch, out_channels, geom.out_h, geom.out_w), dtype=np.float32)
    y, d_weight, dx = np.empty_like(dy), np.empty_like(weight), np.empty_like(x)
    return best_ms(lambda: (forward(x, weight, y, workspace, geom),
                            backward(x, weight, dy, d_weight, dx, workspace, geom)))  # fmt: skip


def float32_errors(points) -> None:
    """For seeds 0-3 at batch 8, the largest |float32 Winograd - float64 lowering| of y,
    d_weight and dx, over the largest |value|."""
    print(f"float32 error / largest value, points {', '.join(str(p) for p in points)}, batch 8")
    cpu = NumpyBackend(jit=False)
    for kernel in (5, 3):
        geom = WindowGeometry(32, 14, 14, kernel, kernel, 1, kernel // 2)
        worst = np.zeros(3)
        for seed in range(4):
            rng = np.random.default_rng(seed)
            x = rng.standard_normal((8, 32, 14, 14))
            weight = 0.05 * rng.standard_normal((64, 32, kernel, kernel))  # outputs of order 1
            dy = rng.standard_normal((8, 64, 14, 14))
            exact = _run(lambda *a: conv_lowering.lowered_forward(cpu, *a),
                         lambda *a: conv_lowering.lowered_backward(cpu, *a),
                         conv_lowering.lowered_workspace(cpu, geom, 64, 8, x.dtype),
                         geom, x, weight, dy)  # fmt: skip
            ws = _with_points(winograd.workspace(geom, 64, 8, np.float32, 3 << 20), points)
            rounded = _run(lambda *a: winograd.forward(*a, kernels),
                           lambda *a: winograd.backward(*a, kernels), ws, geom,
                           *(a.astype(np.float32) for a in (x, weight, dy)))  # fmt: skip
            errors = [np.abs(r - e).max() / np.abs(e).max() for r, e in zip(rounded, exact)]
            worst = np.maximum(worst, errors)
        print(
            f"{kernel}x{kernel}, 32 -> 64 channels, 14x14: y {worst[0]:.1e}, "
            f"d_weight {worst[1]:.1e}, dx {worst[2]:.1e}"
        )


def _with_points(ws, points):
    """ws with the transforms' matrices of another set of points."""
    at, g, bt = (m.astype(ws.bt.dtype) for m in
                 winograd.toom_cook_matrices(ws.tiling.m, ws.g.shape[1], points))  # fmt: skip
    at6 = np.zeros_like(ws.at6)
    at6[: len(at)] = at
    return ws._replace(at=at, at6=at6, g=g, bt=bt)


def _run(forward, backward, workspace, geom, x, weight, dy):
    y, d_weight, dx = np.empty_like(dy), np.empty_like(weight), np.empty_like(x)
    forward(x, weight, y, workspace, geom)
    backward(x, weight, dy, d_weight, dx, workspace, geom)
    return y, d_weight, dx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--channels", default=DEFAULT_CHANNELS, help="CxF pairs, comma-separated")
    parser.add_argument("--errors", action="store_true", help="float32 errors, not timings")
    parser.add_argument("--points", help="the 5 finite points for --errors, e.g. 0,1,-1,2,-2")
    args = parser.parse_args()
    if args.errors:
        points = winograd.POINTS
        if args.points:
            points = tuple(Fraction(p) for p in args.points.split(","))
        float32_errors(points)
        return
    lowering = NumpyBackend(threads=1, jit=True, winograd=False)
    forward = lambda *a: winograd.forward(*a, kernels)
    backward = lambda *a: winograd.backward(*a, kernels)
    print(f"batch {args.batch}, float32, 1 thread: forward + backward with dx, best of 5 (ms)")
    print(
        f"{'kernel':6} {'image':7} {'C x F':>9} {'lowering':>9} {'Winograd':>9} {'ratio':>6}  used"
    )
    for kernel in (3, 5):
        for size in (7, 14, 28):
            for pair in args.channels.split(","):
                channels, out_channels = (int(part) for part in pair.split("x"))
                geom = WindowGeometry(channels, size, size, kernel, kernel, 1, kernel // 2)
                lowered_ws = lowering.conv_workspace(geom, out_channels, args.batch, np.float32)
                lowered = time_step(lowering.conv_forward, lowering.conv_backward, lowered_ws,
                                    geom, out_channels, args.batch)  # fmt: skip
                # Winograd's workspace made directly: also where applies() says no
                tiled_ws = winograd.workspace(geom, out_channels, args.batch, np.float32,
                                              WINOGRAD_BLOCK_BYTES)  # fmt: skip
                tiled = time_step(forward, backward, tiled_ws, geom, out_channels, args.batch)
                used = "Winograd" if winograd.applies(geom, out_channels) else "lowering"
                print(f"{kernel}x{kernel:<4} {size:>2}x{size:<4} {pair:>9} {lowered:9.2f} "
                      f"{tiled:9.2f} {lowered / tiled:5.2f}x  {used}")  # fmt: skip


if __name__ == "__main__":
    main()
