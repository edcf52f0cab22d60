"""Learning-rate schedules: hand-computed values and PyTorch's OneCycleLR step for step."""

from __future__ import annotations

import math

import pytest

from convnet_gpu.schedules import scheduled_lr
from convnet_gpu.settings import SCHEDULES


def test_cosine_schedule_goes_from_base_to_zero():
    assert scheduled_lr("cosine", 0.1, 0, 100) == pytest.approx(0.1)
    assert scheduled_lr("cosine", 0.1, 50, 100) == pytest.approx(0.05)
    assert scheduled_lr("cosine", 0.1, 100, 100) == pytest.approx(0.0, abs=1e-12)
    values = [scheduled_lr("cosine", 0.1, s, 100) for s in range(101)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert scheduled_lr("constant", 0.1, 77, 100) == 0.1
    with pytest.raises(ValueError, match="unknown schedule"):
        scheduled_lr("zigzag", 0.1, 0, 10)


def test_cosine_with_linear_warmup():
    lr = lambda step: scheduled_lr("cosine", 0.1, step, 110, warmup_steps=10)
    assert lr(0) == pytest.approx(0.01)  # 0.1 * 1/10
    assert lr(4) == pytest.approx(0.05)  # 0.1 * 5/10
    assert lr(9) == pytest.approx(0.1)  # end of warm-up
    assert lr(10) == pytest.approx(0.1)  # cosine starts at base
    assert lr(60) == pytest.approx(0.05)  # half of the 100 remaining steps
    assert lr(110) == pytest.approx(0.0, abs=1e-15)
    assert scheduled_lr("constant", 0.2, 1, 50, warmup_steps=4) == pytest.approx(0.1)


def test_step_schedule():
    lr = lambda step, **kw: scheduled_lr("step", 0.1, step, 100, **kw)
    assert [lr(s) for s in (0, 49, 50, 74, 75, 99)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    )
    assert [lr(s, milestones=(0.3,), gamma=0.5) for s in (29, 30, 99)] == pytest.approx(
        [0.1, 0.05, 0.05]
    )
    warm = lambda step: scheduled_lr("step", 0.1, step, 120, warmup_steps=20)
    assert [warm(s) for s in (0, 19, 69, 70, 94, 95)] == pytest.approx(
        [0.005, 0.1, 0.1, 0.01, 0.01, 0.001]
    )


def test_onecycle_hand_computed():
    # total 100, pct_start 0.3: from 1/25 = 0.04 up to 1 at step 29 (phase end 0.3 * 100 - 1),
    # then down to 0.04 / 1e4 = 4e-6 at step 99; both phases cosine-shaped, as torch's "cos"
    lr = lambda step, **kw: scheduled_lr("onecycle", 1.0, step, 100, **kw)
    assert lr(0) == pytest.approx(0.04)
    assert lr(10) == pytest.approx(1.0 + (0.04 - 1.0) / 2 * (math.cos(math.pi * 10 / 29) + 1))
    assert lr(29) == pytest.approx(1.0)
    assert lr(64) == pytest.approx((1.0 + 4e-6) / 2)  # halfway through the 70-step descent
    assert lr(99) == pytest.approx(4e-6)
    assert lr(150) == pytest.approx(4e-6)  # past the end it stays at the floor
    # anneal_strategy="linear": straight lines through the same corners
    assert lr(10, anneal_strategy="linear") == pytest.approx(0.04 + 0.96 * 10 / 29)
    assert lr(64, anneal_strategy="linear") == pytest.approx((1.0 + 4e-6) / 2)
    assert lr(99, anneal_strategy="linear") == pytest.approx(4e-6)
    # warm-up fraction 0.5 of 20 steps: the peak at step 9
    assert scheduled_lr("onecycle", 1.0, 9, 20, warmup=0.5) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="own warm-up"):
        scheduled_lr("onecycle", 1.0, 0, 100, warmup_steps=5)
    with pytest.raises(ValueError, match="anneal_strategy"):
        scheduled_lr("onecycle", 1.0, 0, 100, anneal_strategy="cubic")


@pytest.mark.parametrize(
    "total_steps, pct_start, anneal_strategy",
    [(100, 0.3, "cos"), (37, 0.25, "cos"), (5, 0.3, "cos"), (50, 0.3, "linear")],
)
def test_onecycle_matches_torch(total_steps, pct_start, anneal_strategy):
    torch = pytest.importorskip("torch")
    param = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([param], lr=0.5)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=0.5,
        total_steps=total_steps,
        pct_start=pct_start,
        anneal_strategy=anneal_strategy,
        cycle_momentum=False,
    )
    theirs = []
    for _ in range(total_steps):
        theirs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    ours = [
        scheduled_lr(
            "onecycle", 0.5, step, total_steps, warmup=pct_start, anneal_strategy=anneal_strategy
        )
        for step in range(total_steps)
    ]
    assert ours == pytest.approx(theirs, rel=1e-12, abs=1e-15)


def test_every_schedule_is_listed_and_rejects_bad_steps():
    assert SCHEDULES == ("constant", "cosine", "step", "onecycle")
    for schedule in SCHEDULES:
        assert scheduled_lr(schedule, 0.1, 0, 10) > 0
    with pytest.raises(ValueError, match="warmup_steps"):
        scheduled_lr("cosine", 0.1, 0, 10, warmup_steps=10)
