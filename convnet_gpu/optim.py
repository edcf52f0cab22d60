"""Optimizers over the Net's flat parameter buffer: state allocated once, updated in place, and
gradient-norm clipping on the device. (The learning rate of each step comes from schedules.py.)

Each update is one backend op over the flat buffers (Backend.sgd_update / adam_update: a few
flat ufuncs on NumPy, one kernel on CUDA), so it allocates no array. Hyper-parameters are
Python floats (NEP 50: a float32 array times a float64 NumPy/CuPy scalar would become float64).
Weight decay is multiplied by `params.decay_mask` (1 for weights, 0 for biases), so biases are
never decayed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .settings import OPTIMIZERS, SettingError


# ---- gradient-norm clipping -----------------------------------------------------------------
@dataclass
class ClipScratch:
    """Device buffers of clip_grad_norm: `squares` like the flat gradient; `norm`, `scale` 0-d."""

    xp: object  # the backend's array module
    squares: object
    norm: object  # the global L2 norm of the gradient before clipping
    scale: object  # min(1, max_norm / (norm + 1e-6))

    @classmethod
    def allocate(cls, backend, params, squares=None) -> ClipScratch:
        """`squares` may be a flat buffer shared with other work (an optimizer's scratch)."""
        shape, dtype = params.grad.shape, params.grad.dtype
        if squares is None:
            squares = backend.empty(shape, dtype)
        return cls(backend.xp, squares, backend.zeros((), dtype), backend.zeros((), dtype))


def clip_grad_norm(params, max_norm: float, scratch: ClipScratch):
    """Scale params.grad in place so its global L2 norm is at most max_norm, like
    torch.nn.utils.clip_grad_norm_:

        norm  = sqrt(sum(grad * grad))             one reduction over the flat buffer
        scale = min(1, max_norm / (norm + 1e-6))
        grad  = grad * scale

    The norm and the scale stay 0-d device arrays: no host round trip, so a CUDA graph can
    capture it. Returns scratch.norm, the norm before clipping.
    """
    xp, grad, norm, scale = scratch.xp, params.grad, scratch.norm, scratch.scale
    xp.multiply(grad, grad, out=scratch.squares)
    xp.sum(scratch.squares, out=norm)
    xp.sqrt(norm, out=norm)
    xp.add(norm, 1e-6, out=scale)
    xp.divide(float(max_norm), scale, out=scale)
    xp.minimum(scale, 1.0, out=scale)
    xp.multiply(grad, scale, out=grad)
    return norm


# ---- optimizers -----------------------------------------------------------------------------
class Optimizer:
    """What every optimizer shares: the flat buffers, the learning rate and step counter in
    device memory, optional clipping and the state a checkpoint saves.

    `lr` lives in a 0-d device array (`lr_now`) that the update reads where it is; set it from
    the host between steps, or let follow_schedule() have every step read its lr from a device
    table, which a replayed CUDA graph can do. `steps` (a device counter as well) counts the
    steps since setup or the last reset_state() (Adam's bias correction restarts with its moments).
    """

    # True: w -= lr * wd * mask * w (AdamW); False: L2 weight decay inside the gradient
    decoupled_weight_decay = False

    def __init__(self, lr: float, weight_decay: float, max_grad_norm: float | None):
        if not 0 < lr < math.inf:
            raise SettingError("lr", f"must be a finite number > 0, got {lr}")
        if not 0 <= weight_decay < math.inf:
            raise SettingError("weight_decay", f"must be a finite number >= 0, got {weight_decay}")
        if max_grad_norm is not None and not 0 < max_grad_norm < math.inf:
            raise SettingError("max_grad_norm", f"must be a finite number > 0, got {max_grad_norm}")
        self.weight_decay = float(weight_decay)
        self.max_grad_norm = None if max_grad_norm is None else float(max_grad_norm)
        self._initial_lr = float(lr)
        self.params = None
        self.grad_norm = None  # with clipping: 0-d device array, the last norm before clipping
        self.schedule = None  # (lr table, step counter) from follow_schedule()

    def setup(self, net):
        be, params = net.backend, net.params
        self.backend, self.xp, self.params = be, be.xp, params
        shape, dtype = params.data.shape, params.data.dtype
        self.scratch = be.empty(shape, dtype)
        # grad + wd * mask * w needs its own buffer: the update still uses scratch after it.
        decays_in_gradient = self.weight_decay and not self.decoupled_weight_decay
        self.decayed_grad = be.empty(shape, dtype) if decays_in_gradient else None
        if self.max_grad_norm is not None:
            self.clip_scratch = ClipScratch.allocate(be, params, squares=self.scratch)
            self.grad_norm = self.clip_scratch.norm
        self.lr_now = be.zeros((), dtype)
        self.lr = self._initial_lr
        self.step_counter = be.counter(0)
        self.allocate_state(be, shape, dtype)
        return self

    @property
    def lr(self) -> float:
        """The learning rate of the next step (or the last one, under a schedule): a host read."""
        return float(self.lr_now) if self.params is not None else self._initial_lr

    @lr.setter
    def lr(self, value: float) -> None:
        if self.params is None:
            self._initial_lr = float(value)
        else:
            self.lr_now.fill(value)

    @property
    def steps(self) -> int:
        return int(self.step_counter) if self.params is not None else 0

    @steps.setter
    def steps(self, value: int) -> None:
        self.step_counter.fill(int(value))

    def follow_schedule(self, lr_table, clock) -> None:
        """From now on each step takes its lr from lr_table[clock] (device arrays: a table of
        every step's lr and the 0-d step counter that indexes it)."""
        self.schedule = (lr_table, clock)

    def allocate_state(self, backend, shape, dtype) -> None:
        raise NotImplementedError

    def step(self) -> None:
        if self.params is None:
            raise RuntimeError(f"call {type(self).__name__}(...).setup(net) before step()")
        if self.schedule is not None:
            table, clock = self.schedule
            self.backend.select(table, clock, self.lr_now)
        if self.max_grad_norm is not None:
            clip_grad_norm(self.params, self.max_grad_norm, self.clip_scratch)
        self.backend.increment(self.step_counter)
        self.update()

    def update(self) -> None:
        raise NotImplementedError

    # ---- state ------------------------------------------------------------------------------
    def state_arrays(self) -> dict:
        """The device arrays a checkpoint saves (and restores in place)."""
        raise NotImplementedError

    def state_scalars(self) -> dict:
        """The host numbers a checkpoint saves: the step counter and the current lr."""
        return {"steps": self.steps, "lr": self.lr}

    def load_state_scalars(self, scalars: dict) -> None:
        self.steps, self.lr = int(scalars["steps"]), float(scalars["lr"])

    def state(self) -> tuple[dict, dict]:
        """(scalars, device arrays) for a checkpoint: the class, the step counter, the lr and
        the moments."""
        return {"class": type(self).__name__, **self.state_scalars()}, self.state_arrays()

    def load_state(self, scalars: dict, arrays: dict) -> None:
        """Restore what state() gave (arrays are host arrays, copied in place)."""
        if scalars.get("class") != type(self).__name__:
            raise SettingError(
                "optimizer",
                f"the checkpoint's optimizer is {scalars.get('class')}, not {type(self).__name__}",
            )
        for key, array in self.state_arrays().items():
            self.backend.copy_from_host(arrays[key], array)
        self.load_state_scalars(scalars)

    def reset_state(self) -> None:
        """Zero the momentum / moments in place (same arrays) and restart the step counter."""
        for array in self.state_arrays().values():
            array.fill(0)
        self.steps = 0


class SGD(Optimizer):
    """SGD with momentum or Nesterov momentum (PyTorch's form), weight decay on weights only.

    g = grad + weight_decay * decay_mask * w
    v = momentum * v + g                   (v starts at zero)
    w = w - lr * v                         (momentum)
    w = w - lr * (g + momentum * v)        (nesterov)
    w = w - lr * g                         (momentum 0)
    """

    def __init__(
        self,
        lr: float = 0.05,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        max_grad_norm: float | None = None,
    ):
        if not 0 <= momentum < 1:
            raise SettingError("momentum", f"must be in [0, 1), got {momentum}")
        if nesterov and momentum == 0:
            raise SettingError("momentum", "Nesterov momentum needs momentum > 0")
        super().__init__(lr, weight_decay, max_grad_norm)
        self.momentum, self.nesterov = float(momentum), bool(nesterov)

    def allocate_state(self, backend, shape, dtype):
        self.velocity = backend.zeros(shape, dtype)

    def update(self):
        params = self.params
        self.backend.sgd_update(
            params.data, params.grad, self.velocity, params.decay_mask, self.lr_now,
            self.momentum, self.weight_decay, self.nesterov, self.scratch, self.decayed_grad,
        )  # fmt: skip

    def state_arrays(self) -> dict:
        return {"velocity": self.velocity}


class Adam(Optimizer):
    """Adam (PyTorch's form); weight decay as L2 in the gradient, on weights only.

        g = grad + weight_decay * decay_mask * w
        m = m + (1 - beta1) * (g - m)           m, v start at zero
        v = beta2 * v + (1 - beta2) * g * g
        w = w - lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

    The bias corrections come from the device step counter t.
    """

    def __init__(
        self,
        lr: float = 1e-3,
        betas=(0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        max_grad_norm: float | None = None,
    ):
        beta1, beta2 = betas
        if not (0 <= beta1 < 1 and 0 <= beta2 < 1 and eps > 0):
            raise SettingError("betas", f"{type(self).__name__} needs 0 <= betas < 1 and eps > 0")
        super().__init__(lr, weight_decay, max_grad_norm)
        self.betas, self.eps = (float(beta1), float(beta2)), float(eps)

    def allocate_state(self, backend, shape, dtype):
        self.exp_avg = backend.zeros(shape, dtype)
        self.exp_avg_sq = backend.zeros(shape, dtype)

    def update(self):
        params = self.params
        self.backend.adam_update(
            params.data, params.grad, self.exp_avg, self.exp_avg_sq, params.decay_mask,
            self.lr_now, self.step_counter, self.betas, self.eps, self.weight_decay,
            self.decoupled_weight_decay, self.scratch, self.decayed_grad,
        )  # fmt: skip

    def state_arrays(self) -> dict:
        return {"exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq}


class AdamW(Adam):
    """Adam with decoupled weight decay (PyTorch's AdamW): first w = w - lr * wd * decay_mask * w,
    then the Adam step on the plain gradient."""

    decoupled_weight_decay = True

    def __init__(
        self,
        lr: float = 1e-3,
        betas=(0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        max_grad_norm: float | None = None,
    ):
        super().__init__(lr, betas, eps, weight_decay, max_grad_norm)


def build_optimizer(
    name: str,
    lr: float,
    momentum: float = 0.9,
    weight_decay: float | None = None,
    betas=(0.9, 0.999),
    eps: float = 1e-8,
    max_grad_norm: float | None = None,
) -> Optimizer:
    """An optimizer by name (one of OPTIMIZERS), not yet set up.

    `momentum` is for sgd/nesterov only (Adam's is betas[0]); `weight_decay=None` takes the
    optimizer's default (0 for sgd, nesterov and adam; 0.01 for adamw).
    """
    decay = {} if weight_decay is None else {"weight_decay": weight_decay}
    if name in ("sgd", "nesterov"):
        return SGD(lr, momentum, nesterov=name == "nesterov", max_grad_norm=max_grad_norm, **decay)
    if name in ("adam", "adamw"):
        cls = Adam if name == "adam" else AdamW
        return cls(lr, betas, eps, max_grad_norm=max_grad_norm, **decay)
    raise SettingError("optimizer", f"unknown {name!r}; choose one of: {', '.join(OPTIMIZERS)}")
