"""The CLI as a user meets it: one-line errors with exit 2, tables, run files."""

from __future__ import annotations

import gzip
import json
import struct

import numpy as np
import pytest

from convnet_gpu import cli
from convnet_gpu.backends import cuda_problem


def run_cli(capsys, *argv):
    try:
        code = cli.main(list(argv))
    except SystemExit as exit_:  # argparse exits for usage errors and --help
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def train_on(data_dir, *more):
    """`train` on the CPU from data_dir, then more arguments."""
    return ("train", "--device", "cpu", "--data-dir", str(data_dir), *more)


def write_idx(path, array):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


@pytest.fixture
def tiny_idx_dir(tmp_path):
    """A Fashion-MNIST-shaped data folder with 96 train and 40 test 28x28 images."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 96), ("t10k", 40)):
        labels = rng.integers(0, 10, count)
        # class-dependent brightness so a few steps can learn something
        images = rng.integers(0, 60, (count, 28, 28)) + labels[:, None, None] * 19
        write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", labels)
    return tmp_path


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["train", "--epochs", "x"], "--epochs: expected a number"),
        (["train", "--epochs", "0"], "--epochs: must be >= 1"),
        (["train", "--lr", "-1"], "--lr: must be a finite number > 0"),
        (["train", "--device", "tpu"], "unknown device 'tpu'"),
        (["train", "--model", "nope"], "unknown model 'nope'"),
        (["bench", "--device", "cpu,gpu7"], "unknown device 'gpu7'"),
        (["bench", "--batch-size", "32,x"], "--batch-size: expected whole numbers >= 1"),
        (["bench", "--batch-size", "32,,64"], "--batch-size: expected whole numbers >= 1"),
        (["bench", "--threads", "1,0"], "--threads: expected whole numbers >= 1"),
        (["bench", "--model", "nope"], "unknown model 'nope'"),
        (["bench", "--device", ","], "--device: no device in ','"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_usage_errors_are_one_line_with_exit_2(capsys, argv, fragment):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert fragment in err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


@pytest.mark.skipif(cuda_problem(0) is None, reason="a GPU is present, so --device cuda works")
def test_cuda_without_gpu_exits_2_with_the_fix(capsys, tiny_idx_dir):
    code, _, err = run_cli(capsys, "train", "--device", "cuda", "--data-dir", str(tiny_idx_dir))
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "--device cuda" in err
    assert ('pip install "convnet-gpu[cuda12]"' in err) or ("use --device cpu" in err)


def test_missing_data_names_both_ways_to_get_it(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--device", "cpu", "--data-dir", str(tmp_path / "none"))
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "--data-dir" in err


def test_train_writes_metrics_and_summary(capsys, tiny_idx_dir, tmp_path):
    out_dir = tmp_path / "run"
    code, out, err = run_cli(
        capsys,
        *train_on(tiny_idx_dir),
        "--epochs",
        "2",
        "--batch-size",
        "32",
        "--lr",
        "0.01",
        "--out",
        str(out_dir),
        "--no-progress",
    )
    assert code == 0, err
    assert out.count("epoch ") >= 2 and "test acc" in out
    records = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    for record in records:
        assert {
            "epoch",
            "train_loss",
            "test_loss",
            "test_accuracy",
            "seconds",
            "images_per_second",
        } <= record.keys()
        assert 0.0 <= record["test_accuracy"] <= 1.0 and record["images_per_second"] > 0
        assert np.isfinite(record["train_loss"])
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["test_accuracy"] == records[-1]["test_accuracy"]
    assert summary["epochs"] == 2 and summary["model"] == "simple-cnn"
    assert summary["device"].startswith("cpu") and summary["images_per_second"] > 0
    assert summary["seconds"] > 0
    assert not [p for p in out_dir.iterdir() if p.name.endswith(".tmp")]  # atomic writes cleaned up


@pytest.mark.parametrize(
    "flags, flips",
    [
        ([], False),
        (["--jitter", "1"], True),
        (["--jitter", "1", "--no-flip"], False),
        (["--flip"], True),
    ],
)
def test_flips_come_with_jitter_unless_told(capsys, tiny_idx_dir, tmp_path, flags, flips):
    def train(name, *extra):
        code, out, err = run_cli(
            capsys,
            *train_on(tiny_idx_dir),
            "--epochs",
            "1",
            "--batch-size",
            "32",
            "--no-progress",
            "--out",
            str(tmp_path / name),
            *extra,
        )
        assert code == 0, err
        assert ("flips" in out.splitlines()[0]) is (flips and name == "run")  # the header
        return json.loads((tmp_path / name / "metrics.jsonl").read_text())

    summary_path = tmp_path / "run" / "summary.json"
    record = train("run", *flags)
    assert json.loads(summary_path.read_text())["flip"] is flips
    for flag in set(flags) & {"--flip", "--no-flip"}:  # --resume refuses it, naming it
        code, _, err = run_cli(capsys, "train", "--resume", str(tmp_path / "run"), flag)
        assert code == 2 and f"drop {flag} " in err
    if flags == ["--flip"]:  # flips alone change what the net sees, hence its training loss
        assert record["train_loss"] != train("plain")["train_loss"]


def test_train_subset_too_large_is_a_usage_error(capsys, tiny_idx_dir):
    code, _, err = run_cli(
        capsys,
        *train_on(tiny_idx_dir),
        "--train-subset",
        "1000",
    )
    assert code == 2
    assert "1000" in err and len(err.strip().splitlines()) == 1


def test_gradcheck_cpu_passes_and_prints_a_table(capsys):
    code, out, _ = run_cli(capsys, "gradcheck", "--device", "cpu")
    assert code == 0
    for name in ("Conv2D 3x3 pad 1", "MaxPool2D 2x2", "SoftmaxCrossEntropy", "small net"):
        assert name in out
    assert "FAIL" not in out and out.count(" pass") >= 18


def test_gradcheck_exits_1_on_a_failure(capsys, monkeypatch):
    from convnet_gpu import gradcheck, gradcheck_cases

    def broken(backend, seed=0):
        return [gradcheck.CheckResult("Broken", "exhaustive", 0.5, 10)]

    monkeypatch.setattr(gradcheck_cases, "check_all", broken)
    code, out, _ = run_cli(capsys, "gradcheck", "--device", "cpu")
    assert code == 1
    assert "FAIL" in out and "1 of 1 checks failed" in out


def test_bench_reports_cpu_and_skips_an_absent_gpu(capsys, tmp_path):
    json_path = tmp_path / "bench.json"
    code, out, err = run_cli(
        capsys,
        "bench",
        "--device",
        "cpu,cuda",
        "--batch-size",
        "8",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--json",
        str(json_path),
    )
    assert code == 0, err
    results = json.loads(json_path.read_text())
    cpu = [r for r in results if r["requested"] == "cpu"][0]
    assert cpu["train_images_per_second"] > 0 and cpu["infer_images_per_second"] > 0
    cuda = [r for r in results if r["requested"] == "cuda"][0]
    if cuda_problem(0) is not None:
        assert "skipped" in cuda and "skipped" in out
    else:
        assert cuda["train_images_per_second"] > 0


def test_info_runs(capsys):
    code, out, _ = run_cli(capsys, "info")
    assert code == 0 and "convnet-gpu" in out and "cuda:" in out


def test_cuda_without_cupy_names_the_install_command(capsys, monkeypatch, tiny_idx_dir):
    monkeypatch.setitem(__import__("sys").modules, "cupy", None)  # `import cupy` now fails
    code, _, err = run_cli(capsys, "train", "--device", "cuda", "--data-dir", str(tiny_idx_dir))
    assert code == 2
    assert err.strip() == (
        "convnet-gpu train: error: --device cuda: CuPy is not installed; install "
        'CuPy with: pip install "convnet-gpu[cuda12]" (or [cuda13] for CUDA 13)'
    )


def test_auto_without_cupy_says_it_uses_the_cpu(capsys, monkeypatch):
    from convnet_gpu.backends import get_backend

    monkeypatch.setitem(__import__("sys").modules, "cupy", None)
    lines = []
    backend = get_backend("auto", announce=lines.append)
    assert backend.name == "cpu"
    assert lines == ["device auto: using the CPU (CuPy is not installed)"]


def test_ctrl_c_saves_and_resume_finishes_like_an_uninterrupted_run(
    capsys, monkeypatch, tiny_idx_dir, tmp_path
):
    import os
    import signal

    from convnet_gpu import optim
    from convnet_gpu.checkpoint import read_checkpoint

    common = [
        "--device",
        "cpu",
        "--data-dir",
        str(tiny_idx_dir),
        "--epochs",
        "2",
        "--batch-size",
        "32",
        "--no-progress",
    ]
    code, _, err = run_cli(capsys, "train", *common, "--out", str(tmp_path / "straight"))
    assert code == 0, err

    original_step, calls = optim.SGD.step, []

    def step_then_ctrl_c(self):
        original_step(self)
        calls.append(1)
        if len(calls) == 4:  # in epoch 2 (3 batches a epoch)
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(optim.SGD, "step", step_then_ctrl_c)
    code, _, err = run_cli(capsys, "train", *common, "--out", str(tmp_path / "resumed"))
    assert code == 130
    assert "--resume" in err and len(err.strip().splitlines()) == 1
    meta, _ = read_checkpoint(tmp_path / "resumed")
    position = meta["position"]
    assert (position["epoch"], position["next_batch"], position["step"]) == (2, 1, 4)

    monkeypatch.setattr(optim.SGD, "step", original_step)
    code, out, err = run_cli(
        capsys,
        *train_on(tiny_idx_dir),
        "--resume",
        str(tmp_path / "resumed"),
        "--no-progress",
    )
    assert code == 0, err
    assert "resuming" in out
    _, straight = read_checkpoint(tmp_path / "straight")
    _, resumed = read_checkpoint(tmp_path / "resumed")
    assert np.array_equal(straight["params"], resumed["params"])
    assert np.array_equal(straight["optimizer.velocity"], resumed["optimizer.velocity"])


def test_eval_reports_accuracy_per_class_and_confusion(capsys, tiny_idx_dir, tmp_path):
    code, _, err = run_cli(
        capsys,
        *train_on(tiny_idx_dir),
        "--epochs",
        "1",
        "--out",
        str(tmp_path / "run"),
        "--no-progress",
    )
    assert code == 0, err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    code, out, err = run_cli(
        capsys,
        "eval",
        "--checkpoint",
        str(tmp_path / "run"),
        "--device",
        "cpu",
        "--data-dir",
        str(tiny_idx_dir),
    )
    assert code == 0, err
    assert f"test accuracy {summary['test_accuracy']:.4f}" in out
    assert "per-class accuracy" in out and "confusion matrix" in out
    confusion_rows = [
        line
        for line in out.splitlines()
        if line.rstrip().endswith(tuple("0123456789"))
        and line.startswith("  ")
        and len(line.split()) >= 12
    ]
    assert (
        sum(int(v) for row in confusion_rows for v in row.split()[-11:-1]) == 40
    )  # 40 test images


def test_eval_of_a_missing_checkpoint_is_a_usage_error(capsys, tmp_path):
    code, _, err = run_cli(capsys, "eval", "--checkpoint", str(tmp_path), "--device", "cpu")
    assert code == 2 and "no checkpoint there" in err and len(err.strip().splitlines()) == 1


def test_overfit_command_reaches_100_percent(capsys, tiny_idx_dir):
    code, out, _ = run_cli(
        capsys,
        "overfit",
        "--device",
        "cpu",
        "--data-dir",
        str(tiny_idx_dir),
        "--samples",
        "32",
        "--max-steps",
        "300",
    )
    assert code == 0 and "100% training accuracy on 32 images" in out


def test_overfit_command_fails_loudly(capsys, tiny_idx_dir):
    code, out, _ = run_cli(
        capsys,
        "overfit",
        "--device",
        "cpu",
        "--data-dir",
        str(tiny_idx_dir),
        "--samples",
        "32",
        "--max-steps",
        "2",
        "--lr",
        "1e-9",
    )
    assert code == 1 and out.startswith("FAILED")


def test_eval_writes_eval_json_and_plot_draws_the_run(capsys, tiny_idx_dir, tmp_path):
    run = tmp_path / "run"
    code, _, err = run_cli(
        capsys,
        *train_on(tiny_idx_dir),
        "--epochs",
        "2",
        "--val-split",
        "0.25",
        "--out",
        str(run),
        "--no-progress",
    )
    assert code == 0, err
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all("val_accuracy" in record for record in records)
    code, _, err = run_cli(
        capsys, "eval", "--checkpoint", str(run), "--device", "cpu", "--data-dir", str(tiny_idx_dir)
    )
    assert code == 0, err
    report = json.loads((run / "eval.json").read_text())
    assert sum(map(sum, report["confusion"])) == 40 and len(report["classes"]) == 10
    pytest.importorskip("matplotlib")
    code, out, err = run_cli(capsys, "plot", str(run))
    assert code == 0, err
    for name in ("loss.png", "accuracy.png", "confusion.png"):
        assert (run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_of_a_missing_run_is_a_usage_error(capsys, tmp_path):
    code, _, err = run_cli(capsys, "plot", str(tmp_path / "nothing"))
    assert code == 2 and len(err.strip().splitlines()) == 1


def test_train_refuses_to_overwrite_a_saved_run(capsys, tiny_idx_dir, tmp_path):
    run = tmp_path / "run"
    args = [
        *train_on(tiny_idx_dir),
        "--epochs",
        "1",
        "--out",
        str(run),
        "--no-progress",
    ]
    assert run_cli(capsys, *args)[0] == 0
    saved = (run / "checkpoint.npz").read_bytes()
    code, _, err = run_cli(capsys, *args)
    assert code == 2 and "--resume" in err and len(err.strip().splitlines()) == 1
    assert (run / "checkpoint.npz").read_bytes() == saved


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--momentum", "1.0"], "--momentum: must be in [0, 1)"),
        (["--optimizer", "nesterov", "--momentum", "0"], "Nesterov momentum needs momentum > 0"),
    ],
)
def test_bad_optimizer_settings_are_one_line_errors(capsys, tiny_idx_dir, argv, fragment):
    code, _, err = run_cli(
        capsys, "train", "--device", "cpu", "--data-dir", str(tiny_idx_dir), *argv
    )
    assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1


def test_unwritable_out_is_a_one_line_error_before_training(capsys, tiny_idx_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, out, err = run_cli(
        capsys,
        *train_on(tiny_idx_dir),
        "--out",
        str(blocker / "run"),
    )
    assert code == 2 and len(err.strip().splitlines()) == 1 and "epoch" not in out


def test_resume_refuses_other_settings_and_accepts_the_checkpoint_file(
    capsys, tiny_idx_dir, tmp_path
):
    run = tmp_path / "run"
    base = ["--device", "cpu", "--data-dir", str(tiny_idx_dir), "--no-progress"]
    assert run_cli(capsys, "train", *base, "--epochs", "1", "--out", str(run))[0] == 0
    code, _, err = run_cli(capsys, "train", *base, "--resume", str(run), "--lr", "0.5")
    assert code == 2 and "drop --lr" in err
    code, out, err = run_cli(capsys, "train", *base, "--resume", str(run / "checkpoint.npz"))
    assert code == 0 and "nothing to resume" in out, err


def test_model_file_with_the_wrong_class_count_is_refused(capsys, tiny_idx_dir, tmp_path):
    model = tmp_path / "five.toml"
    model.write_text('[[layers]]\ntype = "flatten"\n\n[[layers]]\ntype = "dense"\nout = 5\n')
    code, _, err = run_cli(
        capsys,
        *train_on(tiny_idx_dir),
        "--model",
        str(model),
        "--out",
        str(tmp_path / "run"),
    )
    assert code == 2 and "5 outputs but the dataset has 10 classes" in err


def test_flat_batchnorm_with_a_last_batch_of_one_is_refused_up_front(
    capsys, tiny_idx_dir, tmp_path
):
    model = tmp_path / "bn.toml"
    model.write_text(
        '[[layers]]\ntype = "flatten"\n\n[[layers]]\ntype = "dense"\nout = 10\n\n'
        '[[layers]]\ntype = "batchnorm"\n'
    )
    code, _, err = run_cli(
        capsys,
        *train_on(tiny_idx_dir),
        "--model",
        str(model),
        "--batch-size",
        "19",
        "--out",
        str(tmp_path / "r"),
    )
    assert code == 2 and "last training batch would hold 1 image" in err  # 96 = 5 * 19 + 1


def test_resume_refuses_a_flag_even_at_its_default_and_another_run_s_folder(
    capsys, tiny_idx_dir, tmp_path
):
    base = ["--device", "cpu", "--data-dir", str(tiny_idx_dir), "--no-progress"]
    for run in ("a", "b"):
        assert (
            run_cli(capsys, "train", *base, "--epochs", "1", "--out", str(tmp_path / run))[0] == 0
        )
    code, _, err = run_cli(capsys, "train", *base, "--resume", str(tmp_path / "a"), "--seed", "0")
    assert code == 2 and "drop --seed" in err
    saved = (tmp_path / "b" / "checkpoint.npz").read_bytes()
    code, _, err = run_cli(
        capsys, "train", *base, "--resume", str(tmp_path / "a"), "--out", str(tmp_path / "b")
    )
    assert code == 2 and "already holds another run" in err
    assert (tmp_path / "b" / "checkpoint.npz").read_bytes() == saved


def test_a_format_3_checkpoint_resumes_and_evaluates_as_its_own_version_did(
    capsys, tmp_path, monkeypatch
):
    """tests/fixtures/format3-run was interrupted mid-epoch 2 by the code before checkpoint
    format 4; resumed and evaluated by that code, it ended with the figures asserted here (its
    convolutions summed in another order since: the losses agree to float32 rounding)."""
    from test_checkpoint import _copy_format_3_run

    from convnet_gpu.data import DataError, load_fashion_mnist

    try:
        load_fashion_mnist(train_subset=1)
    except DataError:
        pytest.skip("the run trained on Fashion-MNIST, which is not installed here")
    run = _copy_format_3_run(tmp_path)
    monkeypatch.chdir(tmp_path)  # the run's model file is tiny.toml, a relative path
    code, out, err = run_cli(
        capsys, "train", "--device", "cpu", "--threads", "1", "--resume", "run", "--no-progress"
    )
    assert code == 0, err
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert (last["epoch"], last["test_accuracy"]) == (3, 0.1344)
    assert last["test_loss"] == pytest.approx(2.394966431617737, rel=1e-6)
    assert last["train_loss"] == pytest.approx(2.2428625424702964, rel=1e-6)
    code, out, err = run_cli(capsys, "eval", "--checkpoint", "run", "--device", "cpu")
    assert code == 0 and "test accuracy 0.1344" in out, err


def test_help_does_not_import_the_training_stack():
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from convnet_gpu.cli import main\n"
        "try:\n    main(['train', '--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('convnet_gpu.net', 'convnet_gpu.train', 'convnet_gpu.backends', "
        "'cupy', 'tqdm') if m in sys.modules]\n"
        "print('imported:', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True).stdout
    assert "--batch-size" in out and "imported: []" in out, out


def test_module_docstring_lists_every_command():
    first_lines = cli.__doc__.split("\n\n")[1]
    assert all(command in first_lines for command in cli.COMMANDS)


def test_dataset_choices_are_the_registry_s():
    from convnet_gpu.data import DATASETS

    assert tuple(DATASETS) == cli.DATASET_NAMES


def test_bench_takes_a_model_file_and_the_dataset_s_image_shape(capsys, tmp_path):
    model = tmp_path / "m.toml"
    model.write_text(
        '[[layers]]\ntype = "conv"\nout = 2\nkernel = 3\n\n[[layers]]\ntype = "flatten"\n\n'
        '[[layers]]\ntype = "dense"\nout = 10\n'
    )
    out_json = tmp_path / "b.json"
    code, out, err = run_cli(
        capsys, "bench", "--device", "cpu", "--model", str(model), "--dataset", "cifar-10",
        "--batch-size", "4", "--steps", "1", "--warmup", "0", "--json", str(out_json),
    )  # fmt: skip
    assert code == 0, err
    assert "(3, 32, 32)" in out
    assert json.loads(out_json.read_text())[0]["train_images_per_second"] > 0


def test_bench_lists_of_threads_and_batch_sizes_give_a_row_each(capsys, tmp_path):
    out_json = tmp_path / "b.json"
    code, out, err = run_cli(
        capsys, "bench", "--device", "cpu", "--threads", "1,2", "--batch-size", "2,4,2",
        "--steps", "1", "--warmup", "0", "--json", str(out_json),
    )  # fmt: skip
    assert code == 0, err
    rows = json.loads(out_json.read_text())
    assert [(r["threads"], r["batch_size"]) for r in rows] == [(1, 2), (1, 4), (2, 2), (2, 4)]
    assert "batch 2, 4," in out and "1st ms" in out and "peak MiB" in out


def test_bench_layers_prints_each_layer_s_forward_and_backward(capsys):
    code, out, err = run_cli(
        capsys, "bench", "--device", "cpu", "--batch-size", "2", "--steps", "1", "--layers"
    )
    assert code == 0, err
    assert "per layer: simple-cnn, batch 2" in out
    assert " 0 forward  Conv2D(32, 5x5" in out and " 0 backward Conv2D(32, 5x5" in out
    assert "update   SGD" in out


def test_info_names_every_dataset(capsys):
    from convnet_gpu.data import DATASETS

    code, out, _ = run_cli(capsys, "info")
    assert code == 0 and all(f"{name}:" in out for name in DATASETS)
