"""Checkpoints: atomic writes, exact resume, refusal of a different model, cross-device loads."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from train_helpers import build_trainer

from convnet_gpu import SGD, Net, SoftmaxCrossEntropy, get_backend
from convnet_gpu.backends import winograd
from convnet_gpu.checkpoint import CheckpointError, load_into, read_checkpoint, save_checkpoint
from convnet_gpu.data import Dataset
from convnet_gpu.errors import TrainingDiverged, TrainingInterrupted, UserError
from convnet_gpu.layers import (
    BatchNorm,
    Bias,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool,
    MaxPool2D,
    ReLU,
    Residual,
)
from convnet_gpu.layers.base import walk
from convnet_gpu.settings import RunSettings


def tiny_dataset(seed=0):
    rng = np.random.default_rng(seed)
    x = lambda n: rng.standard_normal((n, 1, 8, 8)).astype(np.float32)
    y = lambda n: rng.integers(0, 3, n).astype(np.int32)
    return Dataset(x(90), y(90), x(20), y(20), ("a", "b", "c"), 0.0, 1.0)


def tiny_net(backend=None, seed=1, width=4):
    layers = [Conv2D(width, 3, pad=1), Bias(), ReLU(), MaxPool2D(2), Flatten(), Dense(3), Bias()]
    return Net(layers, SoftmaxCrossEntropy(), backend, seed=seed).setup(16, (1, 8, 8))


def tiny_winograd_net(backend=None, seed=1):
    """32 -> 64 channels, 3x3 on 8x8: the CPU with numba runs it as Winograd's
    (backends/winograd.py; test_a_winograd_net_runs_winograd)."""
    layers = [Conv2D(32, 3, pad=1), Bias(), ReLU(), Conv2D(64, 3, pad=1), Bias(), ReLU(),
              MaxPool2D(2), Flatten(), Dense(3), Bias()]  # fmt: skip
    return Net(layers, SoftmaxCrossEntropy(), backend, seed=seed).setup(16, (1, 8, 8))


def test_a_winograd_net_runs_winograd():
    backend = get_backend("cpu")
    if backend.winograd_kernels is None:
        pytest.skip(
            "Winograd's convolution is off here: numba (the cpu-jit extra) is missing or "
            "CONVNET_GPU_WINOGRAD is 0"
        )
    net = tiny_winograd_net(backend)
    assert isinstance(net.layers[3].workspace, winograd.WinogradWorkspace)


def tiny_resnet(backend=None, seed=1):
    """State beyond parameters: BatchNorm running statistics and Dropout's step counter."""
    block = Residual([Conv2D(4, 3, pad=1), BatchNorm(), ReLU(), Conv2D(4, 3, pad=1), BatchNorm()])
    layers = [
        Conv2D(4, 3, pad=1),
        BatchNorm(),
        ReLU(),
        block,
        ReLU(),
        GlobalAvgPool(),
        Dropout(0.3),
        Dense(3),
        Bias(),
    ]
    return Net(layers, SoftmaxCrossEntropy(), backend, seed=seed).setup(16, (1, 8, 8))


def make_trainer(out_dir, backend=None, net_seed=1, build=tiny_net, epochs=3, dataset=None):
    net = build(backend, seed=net_seed)
    optimizer = SGD(0.05, momentum=0.9, weight_decay=1e-3).setup(net)
    augment = build is tiny_resnet  # the resnet case also checks jitter across a resume
    return build_trainer(
        net, dataset or tiny_dataset(), out_dir, optimizer, model="tiny", lr=0.05,
        weight_decay=1e-3, epochs=epochs, batch_size=16, seed=7, jitter=1 if augment else 0,
        flip=augment,
    )  # fmt: skip


def stop_after(trainer, steps):
    """Make the trainer stop (as on Ctrl-C) after `steps` optimizer steps."""
    optimizer, original_step, left = trainer.optimizer, trainer.optimizer.step, [steps]

    def step():
        original_step()
        left[0] -= 1
        if left[0] == 0:
            trainer._stop_requested = True

    optimizer.step = step  # an instance attribute: the optimizer is still an SGD


@pytest.mark.parametrize("build", [tiny_net, tiny_resnet, tiny_winograd_net])
@pytest.mark.parametrize("steps", [6, 13])  # end of epoch 1 (6 batches a epoch), mid-epoch 3
@pytest.mark.parametrize("threads", [1, 3])  # 3: the step on CPU worker threads (workers.py)
def test_resume_is_bitwise_identical_to_an_uninterrupted_run(tmp_path, steps, build, threads):
    backend = get_backend("cpu", threads=threads)
    straight = make_trainer(tmp_path / "straight", backend, build=build)
    straight.fit()

    interrupted = make_trainer(tmp_path / "resumed", backend, build=build)
    stop_after(interrupted, steps)
    with pytest.raises(TrainingInterrupted, match="saved") as stop:
        interrupted.fit()
    assert stop.value.saved == tmp_path / "resumed" / "checkpoint.npz"

    resumed = make_trainer(tmp_path / "resumed", backend, net_seed=99, build=build)  # load wins
    resumed.restore(*read_checkpoint(tmp_path / "resumed"))
    assert resumed.position.step == steps
    resumed.fit()
    assert np.array_equal(resumed.net.params.data, straight.net.params.data)
    assert np.array_equal(resumed.optimizer.velocity, straight.optimizer.velocity)
    for key in ("test_accuracy", "test_loss"):
        resumed_values = [r[key] for r in resumed.epoch_metrics]
        assert resumed_values == [r[key] for r in straight.epoch_metrics], key
    for (path, layer), (_, twin) in zip(walk(resumed.net.layers), walk(straight.net.layers)):
        assert layer.state_scalars() == twin.state_scalars(), path
        for name, array in layer.buffers.items():
            assert np.array_equal(array, twin.buffers[name]), f"{path}.{name}"


def test_checkpoint_refuses_a_different_model(tmp_path):
    trainer = make_trainer(tmp_path)
    trainer.save_checkpoint()
    meta, arrays = read_checkpoint(tmp_path)
    wider = tiny_net(width=5)
    with pytest.raises(CheckpointError, match="different model"):
        load_into(meta, arrays, wider)


def _rewrite_meta(path, **changes):
    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    meta = json.loads(str(arrays["meta"]))
    arrays["meta"] = np.array(json.dumps({**meta, **changes}))
    np.savez(path, **arrays)


FORMAT_3_RUN = Path(__file__).parent / "fixtures" / "format3-run"


def _copy_format_3_run(tmp_path) -> Path:
    """The fixture run in tmp_path/run (its model file beside it): a mid-epoch checkpoint that
    convnet-gpu wrote in checkpoint format 3, before the settings schema of format 4."""
    shutil.copy(FORMAT_3_RUN / "tiny.toml", tmp_path)
    (tmp_path / "run").mkdir()
    for name in ("checkpoint.npz", "metrics.jsonl"):
        shutil.copy(FORMAT_3_RUN / name, tmp_path / "run")
    return tmp_path / "run"


def test_a_format_3_checkpoint_reads_as_today_s_layout(tmp_path):
    meta, arrays = read_checkpoint(_copy_format_3_run(tmp_path) / "checkpoint.npz")
    assert meta["format"] == 4
    assert RunSettings.from_meta(meta["settings"]) == RunSettings(
        model="tiny.toml", train_subset=64, epochs=3, batch_size=8, val_split=0.25, plateau=True,
        jitter=1, optimizer="nesterov", weight_decay=1e-3, label_smoothing=0.1,
    )  # fmt: skip
    assert meta["position"]["epoch"] == 2 and meta["position"]["next_batch"] == 4
    assert meta["optimizer"]["class"] == "SGD"
    assert {"position.order", "optimizer.velocity", "selection.best.params"} <= arrays.keys()


@pytest.mark.parametrize("jitter, flip", [(0, False), (1, True)])
def test_a_format_2_checkpoint_loads_with_the_flips_it_trained_with(tmp_path, jitter, flip):
    path = _copy_format_3_run(tmp_path) / "checkpoint.npz"
    _rewrite_meta(path, format=2, jitter=jitter, flip=True)  # format 2 kept --no-flip's default
    meta, _ = read_checkpoint(path)
    assert meta["format"] == 4 and meta["settings"]["flip"] is flip


def test_a_checkpoint_of_an_unknown_format_is_refused(tmp_path):
    trainer = make_trainer(tmp_path, epochs=1)
    trainer.fit()
    _rewrite_meta(tmp_path / "checkpoint.npz", format=1)
    with pytest.raises(CheckpointError, match="format 1 is not 4; it was written by another"):
        read_checkpoint(tmp_path)


def test_settings_are_stored_once(tmp_path):
    trainer = make_trainer(tmp_path, epochs=1)
    trainer.fit()
    meta, _ = read_checkpoint(tmp_path)
    assert RunSettings.from_meta(meta["settings"]) == trainer.settings
    stored = json.dumps({key: value for key, value in meta.items() if key != "settings"})
    assert '"batch_size"' not in stored and '"schedule"' not in stored


def test_restore_refuses_other_settings(tmp_path):
    make_trainer(tmp_path, epochs=1).fit()
    other = make_trainer(tmp_path / "other", epochs=2)
    with pytest.raises(UserError, match="trained with `epochs` = 1, not 2"):
        other.restore(*read_checkpoint(tmp_path))


def test_a_checkpoint_fits_a_net_that_differs_only_in_weight_init(tmp_path):
    def net(init):
        layers = [
            Conv2D(4, 3, pad=1, init=init),
            Bias(),
            ReLU(),
            MaxPool2D(2),
            Flatten(),
            Dense(3, init=init),
            Bias(),
        ]
        return Net(layers, SoftmaxCrossEntropy(), seed=1).setup(16, (1, 8, 8))

    trained = net("he")
    save_checkpoint(tmp_path / "checkpoint.npz", trained, {"note": "tiny"})
    meta, arrays = read_checkpoint(tmp_path)
    other = net("uniform")
    load_into(meta, arrays, other)
    np.testing.assert_array_equal(other.params.data, trained.params.data)
    # Checkpoints written before inits left the signature still name them there.
    signature = meta["net"]["signature"]
    signature[0][0] = signature[0][0].replace("pad=1)", "pad=1, init=uniform)")
    assert "init=uniform" in signature[0][0]
    load_into(meta, arrays, net("he"))


def test_unreadable_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "checkpoint.npz").write_bytes(b"not a zip file")
    with pytest.raises(CheckpointError, match="not a readable convnet-gpu checkpoint"):
        read_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="no checkpoint there"):
        read_checkpoint(tmp_path / "elsewhere")


def test_killed_while_writing_leaves_the_previous_checkpoint_loadable(tmp_path):
    """A writer killed (SIGKILL) after writing the new file's bytes but before the rename."""
    script = textwrap.dedent(f"""
        import os, sys, time
        sys.path[:0] = [{os.getcwd()!r}, {str(Path(__file__).parent)!r}]
        from tests.test_checkpoint import make_trainer
        trainer = make_trainer({str(tmp_path)!r})
        trainer.save_checkpoint()                      # the good, previous checkpoint
        run_dir, trainer.run_dir = trainer.run_dir, None
        trainer.fit()                                  # changes the parameters (no saves) ...
        trainer.run_dir = run_dir
        def hang(fd):
            print("writing", flush=True)
            time.sleep(60)                             # ... and dies mid-save of the next one
        os.fsync = hang
        trainer.save_checkpoint()
    """)
    before = None
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        before, _ = read_checkpoint(tmp_path)  # readable while the new one is half-written
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    meta, arrays = read_checkpoint(tmp_path)
    assert (meta["position"]["epoch"], meta["position"]["step"]) == (1, 0)
    assert before["position"] == meta["position"]
    net = tiny_net()
    load_into(meta, arrays, net)
    assert np.array_equal(net.params.data, tiny_net().params.data)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert leftovers, "the killed writer's temporary file should be the only trace"


def test_divergence_names_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    trainer = make_trainer(tmp_path, epochs=2)
    real_end_epoch, good = trainer._end_epoch, {}

    def end_epoch_then_poison(*args):
        real_end_epoch(*args)
        good["params"] = trainer.net.params.data.copy()
        trainer.data.train.x[:] = np.nan  # poison the data for epoch 2

    trainer._end_epoch = end_epoch_then_poison
    with pytest.raises(TrainingDiverged) as failure:
        trainer.fit()
    good_params = good["params"]
    message = str(failure.value)
    assert "at step 7" in message and "last good checkpoint" in message  # 6 steps in epoch 1
    meta, arrays = read_checkpoint(tmp_path)
    assert meta["position"]["epoch"] == 2 and np.array_equal(arrays["params"], good_params)


@pytest.mark.gpu
def test_a_gpu_checkpoint_loads_on_the_cpu(tmp_path, cuda_backend, cpu_backend):
    gpu_net = tiny_net(cuda_backend, seed=3)
    save_checkpoint(tmp_path / "checkpoint.npz", gpu_net, {"device": "cuda:0"})
    meta, arrays = read_checkpoint(tmp_path)
    cpu_net = tiny_net(cpu_backend, seed=4)
    load_into(meta, arrays, cpu_net)
    assert cpu_net.params.data.dtype == np.float32
    assert np.array_equal(cpu_net.params.data, cuda_backend.to_host(gpu_net.params.data))
    assert meta["device"] == "cuda:0"


def test_a_plateau_run_whose_optimizer_was_reset_resumes_and_its_count_is_checked(
    tmp_path, monkeypatch
):
    """The plateau rule resets the optimizer's step count at an epoch's end: a checkpoint then
    holds fewer optimizer steps than run steps, by whole epochs, and nothing else."""

    def plateau_trainer():
        net = tiny_net()
        return build_trainer(
            net, tiny_dataset(), tmp_path, SGD(0.05, momentum=0.9).setup(net), model="tiny",
            lr=0.05, epochs=3, batch_size=16, val_split=0.25, plateau=True,
        )  # fmt: skip

    first = plateau_trainer()
    accuracies, real_evaluate = iter([0.6, 0.4]), first.evaluate
    monkeypatch.setattr(
        first, "evaluate",
        lambda loader=None: (1.0, next(accuracies)) if loader is first.data.val
        else real_evaluate(loader),
    )  # fmt: skip
    for _ in range(2):  # epoch 2 regresses: the best state back, the optimizer reset
        first._end_epoch(*first.train_epoch())
    meta, arrays = read_checkpoint(tmp_path)
    batches = len(first.data.train)
    assert meta["position"]["step"] == 2 * batches and meta["optimizer"]["steps"] == 0
    plateau_trainer().restore(meta, arrays)
    for steps in (1, batches, 2 * batches):  # not whole epochs; a reset after epoch 1; none
        meta["optimizer"]["steps"] = steps
        with pytest.raises(CheckpointError, match="optimizer.steps: must be position.step"):
            plateau_trainer().restore(meta, arrays)
