"""Time one convolution's forward + backward (with dx) on one CPU thread: lowered in blocks
(conv_lowering.py) against Winograd's (winograd.py), over a grid of channels, image sizes and
kernels, float32. What winograd.MIN_CHANNELS and MIN_CHANNEL_PRODUCT were chosen from.

    PYTHONPATH=. python scripts/conv_algorithms.py [--batch 64] [--channels 4x4,8x8,...]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from convnet_gpu.backends import NumpyBackend, winograd
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--channels", default=DEFAULT_CHANNELS, help="CxF pairs, comma-separated")
    args = parser.parse_args()
    lowering = NumpyBackend(threads=1, jit=True, winograd=False)
    kernels = NumpyBackend(threads=1, jit=True).winograd_kernels
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
