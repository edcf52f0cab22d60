"""convnet_gpu.profile: every piece of a training step, in the order a step runs them."""

from __future__ import annotations

from convnet_gpu.profile import format_layer_table, profile_layers


def test_every_layer_has_a_forward_and_a_backward_then_the_loss_and_the_update():
    described, rows = profile_layers("cpu", "simple-cnn", 4, steps=1)
    assert "1 thread" in described
    layers = 14  # simple-cnn's top-level layers
    forward = [
        r["layer_index"] for r in rows if r["phase"] == "forward" and r["layer_index"] is not None
    ]
    backward = [
        r["layer_index"] for r in rows if r["phase"] == "backward" and r["layer_index"] is not None
    ]
    assert forward == list(range(layers)) and backward == list(reversed(range(layers)))
    assert [r["layer"] for r in rows if r["layer_index"] is None] == [
        "SoftmaxCrossEntropy",
        "SoftmaxCrossEntropy",
        "SGD",
    ]
    assert [r["position"] for r in rows] == list(range(len(rows)))
    assert all(r["ms"] >= 0 for r in rows)


def test_the_table_ends_with_the_sum_and_the_device():
    rows = [
        {"position": 0, "layer_index": 0, "layer": "Conv2D", "phase": "forward", "ms": 1.5},
        {"position": 1, "layer_index": None, "layer": "SGD", "phase": "update", "ms": 0.5},
    ]
    table = format_layer_table(rows, "cpu (test)", 8).splitlines()
    assert table[0].startswith(" 0 forward  Conv2D")
    assert table[-1].startswith("sum") and "2.000 ms" in table[-1] and "batch 8" in table[-1]
