"""Data augmentation on the training device: image jitter (random shift and left-right mirror).

    jitter = Jitter(pad=2, flip=True, seed=0).setup(net.backend, batch_size, input_shape, net.dtype)
    n = net.load_batch(images, labels)                 # host -> device
    jitter.apply(net.blobs[0].data[:n], step)          # training batches only; step: 0, 1, 2, ...
    net.forward(n, train=True)

The jitter of a batch is a function of (seed, step) only, drawn by the backend's counter-based
hash (Backend.jitter), so a run is reproducible, NumPy and CuPy jitter alike bit for bit, and no
host randomness or host-device traffic is involved. Evaluation batches are not jittered: the
caller simply does not call apply() for them.
"""

from __future__ import annotations

import operator

from .backends.counter_rng import check_seed_and_counter, fmix32

# Jitter hashes its seed with this salt before drawing, so that Jitter(seed=s) and a Dropout
# layer seeded with the same s do not read one random stream (a mask correlated with the shifts).
JITTER_SEED_SALT = 0x4A495454  # "JITT"


class Jitter:
    """Per image: shift by (dy, dx) uniform in [-pad, pad]^2, zero filling (a random HxW crop of
    the image zero-padded by `pad`), then mirror left-right with probability 1/2 if `flip`.

    pad=0 with flip=False is the identity, and apply() then does nothing.
    """

    def __init__(self, pad: int = 2, flip: bool = True, seed: int = 0):
        if not 0 <= operator.index(pad) < 2**31:
            raise ValueError(f"Jitter pad must be an integer in [0, 2**31), got {pad!r}")
        check_seed_and_counter(seed, 0)
        self.pad, self.flip, self.seed = int(pad), bool(flip), int(seed)
        self.stream_seed = fmix32(self.seed ^ JITTER_SEED_SALT)  # the seed Backend.jitter gets
        self.backend = None

    @property
    def is_identity(self) -> bool:
        return self.pad == 0 and not self.flip

    def setup(self, backend, batch_size: int, input_shape, dtype) -> Jitter:
        """Allocate the scratch batch and the backend's workspace for up to batch_size images."""
        if len(tuple(input_shape)) != 3:
            raise ValueError(
                f"Jitter works on (C, H, W) images, got input shape {tuple(input_shape)}"
            )
        self.backend, self.batch_size = backend, int(batch_size)
        self.scratch = self.workspace = None
        if not self.is_identity:
            # jitter() cannot write in place (pixels move), so it writes here and apply copies back.
            self.scratch = backend.empty((self.batch_size,) + tuple(input_shape), dtype)
            self.workspace = backend.jitter_workspace(self.batch_size)
        return self

    def apply(self, batch, step: int, first: int = 0) -> None:
        """Jitter the (n, C, H, W) device batch in place with the draws of training step `step`.

        Image i's draws depend on (seed, step, first + i) only, so a smaller last batch
        (n < batch_size) gets the first n images' jitter of a full batch, and a rank holding
        rows [first, first + n) of a global batch draws what one process would for them.
        Allocates nothing.
        """
        if self.backend is None:
            raise RuntimeError("call Jitter.setup(backend, batch_size, input_shape, dtype) first")
        if self.is_identity:
            return
        n = batch.shape[0]
        if n > self.batch_size:
            raise ValueError(
                f"Jitter was set up for batches of up to {self.batch_size} images, got {n}"
            )
        scratch = self.scratch[:n]
        self.backend.jitter(
            batch, scratch, self.pad, self.flip, self.stream_seed, step, self.workspace, first
        )
        self.backend.xp.copyto(batch, scratch)

    def __repr__(self) -> str:
        return f"Jitter(pad={self.pad}, flip={self.flip}, seed={self.seed})"
