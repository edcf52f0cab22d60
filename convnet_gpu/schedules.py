"""Learning-rate schedules: the learning rate as a function of the step, set on the optimizer
before each step (constant, cosine, step decay, one-cycle; optional linear warm-up)."""

from __future__ import annotations

import math

from .settings import SCHEDULES


def scheduled_lr(
    schedule: str,
    base_lr: float,
    step: int,
    total_steps: int,
    *,
    warmup_steps: int = 0,
    milestones=(0.5, 0.75),
    gamma: float = 0.1,
    warmup: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    anneal_strategy: str = "cos",
) -> float:
    """The learning rate for 0-based `step` of `total_steps`.

    constant: base_lr.
    cosine:   base_lr * (1 + cos(pi * step / total_steps)) / 2, from base_lr down towards 0,
              so the last steps average out the noise of the large early ones.
    step:     base_lr * gamma ** (number of milestone fractions of total_steps reached).
    warmup_steps (constant, cosine, step): first a linear warm-up, base_lr * (step + 1) /
              warmup_steps for step < warmup_steps; the schedule then runs over the remaining
              steps (step - warmup_steps of total_steps - warmup_steps; milestones are fractions
              of that remainder).
    onecycle: PyTorch's OneCycleLR (three_phase=False, same anneal_strategy) with
              max_lr = base_lr and pct_start = warmup: from base_lr / div_factor up to base_lr
              at step warmup * total_steps - 1, then down to base_lr / div_factor /
              final_div_factor (base_lr / 2.5e5 by default) at step total_steps - 1. With "cos"
              (torch's default) both phases are half-cosines, anneal(a, b, p) =
              b + (a - b) * (1 + cos(pi * p)) / 2; with "linear" both are straight lines.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of: {', '.join(SCHEDULES)}")
    if total_steps < 1 or step < 0:
        raise ValueError(f"need total_steps >= 1 and step >= 0, got step {step} of {total_steps}")
    if schedule == "onecycle":
        if warmup_steps:
            raise ValueError(
                "onecycle has its own warm-up: set `warmup` (a fraction), not warmup_steps"
            )
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"anneal_strategy must be 'cos' or 'linear', got {anneal_strategy!r}")
        return _one_cycle(
            base_lr, step, total_steps, warmup, div_factor, final_div_factor, anneal_strategy
        )
    if not 0 <= warmup_steps < total_steps:
        raise ValueError(
            f"need 0 <= warmup_steps < total_steps, got {warmup_steps} of {total_steps}"
        )
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    step, total_steps = step - warmup_steps, total_steps - warmup_steps
    if schedule == "constant":
        return base_lr
    if schedule == "cosine":
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
    return base_lr * gamma ** sum(step >= fraction * total_steps for fraction in milestones)


def _one_cycle(
    max_lr, step, total_steps, pct_start, div_factor, final_div_factor, anneal_strategy
) -> float:
    """torch.optim.lr_scheduler.OneCycleLR's two phases, step for step (its float phase ends)."""
    anneal = {"cos": _anneal_cos, "linear": _anneal_linear}[anneal_strategy]
    initial_lr = max_lr / div_factor
    min_lr = initial_lr / final_div_factor
    warmup_end, last = pct_start * total_steps - 1, total_steps - 1
    step = min(step, last)
    if warmup_end > 0 and step <= warmup_end:
        return anneal(initial_lr, max_lr, step / warmup_end)
    pct = (step - warmup_end) / (last - warmup_end) if last > warmup_end else 1.0
    return anneal(max_lr, min_lr, pct)


def _anneal_cos(start: float, end: float, pct: float) -> float:
    """From start (pct 0) to end (pct 1) along half a cosine wave."""
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


def _anneal_linear(start: float, end: float, pct: float) -> float:
    return (end - start) * pct + start
