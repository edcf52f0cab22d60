"""convnet_gpu.profile: every piece of a training step, in the order a step runs them."""

from __future__ import annotations

from convnet_gpu.profile import format_layer_table, profile_layers


def test_every_stage_has_a_forward_and_a_backward_then_the_loss_and_the_update():
    described, rows = profile_layers("cpu", "simple-cnn", 4, steps=1)
    assert "1 thread" in described
    stages = [r for r in rows if r["layer_index"] is not None]
    spans = [(r["layer_index"], r["last_layer_index"]) for r in stages if r["phase"] == "forward"]
    backward = [(r["layer_index"], r["last_layer_index"]) for r in stages
                if r["phase"] == "backward"]  # fmt: skip
    # the stages cover simple-cnn's 14 top-level layers once each, in order, then backwards
    assert [i for first, last in spans for i in range(first, last + 1)] == list(range(14))
    assert backward == spans[::-1]
    assert [r["layer"] for r in rows if r["layer_index"] is None] == [
        "SoftmaxCrossEntropy",
        "SoftmaxCrossEntropy",
        "SGD",
    ]
    assert [r["position"] for r in rows] == list(range(len(rows)))
    assert all(r["ms"] >= 0 and r["calls"] == 1 for r in rows)


def test_a_fused_stage_is_one_piece_named_as_the_step_runs_it():
    net_stages = _stages_of("simple-cnn")
    fused = [s for s in net_stages if s.last > s.first]
    assert fused, "the CPU fuses Bias -> ReLU -> MaxPool2D in simple-cnn"
    _, rows = profile_layers("cpu", "simple-cnn", 4, steps=1)
    forward = [r for r in rows if r["phase"] == "forward" and r["layer_index"] is not None]
    assert [(r["layer_index"], r["last_layer_index"], r["layer"]) for r in forward] == [
        (s.first, s.last, s.runner.describe()) for s in net_stages
    ]
    assert any(r["layer"].startswith("fused[") for r in forward)


def _stages_of(model: str):
    from convnet_gpu.backends import get_backend
    from convnet_gpu.layers import SoftmaxCrossEntropy
    from convnet_gpu.models import build_model
    from convnet_gpu.net import Net

    net = Net(build_model(model, 10), SoftmaxCrossEntropy(), get_backend("cpu", threads=1))
    net.setup(4, (1, 28, 28))
    return net.chain.stages


def test_the_table_ends_with_the_sum_and_the_device():
    rows = [
        {"position": 0, "layer_index": 0, "layer": "Conv2D", "phase": "forward", "ms": 1.5},
        {"position": 1, "layer_index": None, "layer": "SGD", "phase": "update", "ms": 0.5},
    ]
    table = format_layer_table(rows, "cpu (test)", 8).splitlines()
    assert table[0].startswith("    0 forward  Conv2D")
    assert table[-1].startswith("sum") and "2.000 ms" in table[-1] and "batch 8" in table[-1]
