"""Model selection: the plateau rule's decisions and the caller's side of its protocol
(the Trainer-level behaviour is in test_train.py)."""

from __future__ import annotations

import numpy as np
from optim_helpers import batches, tiny_net

from convnet_gpu.optim import SGD
from convnet_gpu.selection import PlateauRule


def test_plateau_rule_decisions():
    rule = PlateauRule()
    accuracies = [0.50, 0.60, 0.60, 0.55, 0.70, 0.65, 0.64, 0.71]
    actions = [rule.observe(accuracy) for accuracy in accuracies]
    assert actions == [
        "new_best",
        "new_best",
        "keep_going",
        "restore_best_and_halve",
        "new_best",
        "restore_best_and_halve",
        "restore_best_and_halve",
        "new_best",
    ]
    assert rule.best == 0.71 and rule.regressions == 3 and rule.lr_scale == 0.125


def test_plateau_rule_drives_a_restore_with_the_optimizer():
    """The caller's side of the protocol: keep the best parameters, restore them and reset."""
    net = tiny_net()
    optimizer = SGD(0.1, momentum=0.9).setup(net)
    rule, best = PlateauRule(), None
    for accuracy, (images, labels) in zip([0.6, 0.5], batches(2)):
        n = net.load_batch(images, labels)
        net.forward(n)
        net.backward(n)
        optimizer.step()
        action = rule.observe(accuracy)
        if action == PlateauRule.NEW_BEST:
            best = net.params.data.copy()
        elif action == PlateauRule.RESTORE:
            net.params.data[...] = best
            optimizer.reset_state()
            optimizer.lr = 0.1 * rule.lr_scale
    assert np.array_equal(net.params.data, best)
    assert not np.any(optimizer.velocity) and optimizer.lr == 0.05
