"""convnet_gpu.plot: PNG figures of a run folder, and its one-line errors.

Input checks run before matplotlib is imported, so the error tests (and the missing-matplotlib
test) run everywhere; the tests that render PNGs skip when matplotlib is not installed.
"""

from __future__ import annotations

import json
import struct
import sys

import pytest

from convnet_gpu.plot import PlotError, PlotUnavailable, plot_run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

METRICS = [
    {
        "epoch": 1,
        "train_loss": 1.43,
        "train_accuracy": 0.61,
        "test_loss": 0.65,
        "test_accuracy": 0.76,
        "seconds": 10.5,
        "images_per_second": 284.0,
    },
    {
        "epoch": 2,
        "train_loss": 0.50,
        "train_accuracy": 0.81,
        "test_loss": 0.51,
        "test_accuracy": 0.81,
        "seconds": 9.3,
        "images_per_second": 322.0,
    },
    {
        "epoch": 3,
        "train_loss": 0.38,
        "train_accuracy": 0.86,
        "test_loss": 0.48,
        "test_accuracy": 0.82,
        "seconds": 9.1,
        "images_per_second": 330.0,
    },
]
CONFUSION = [[50, 3, 7], [4, 40, 6], [2, 8, 30]]
EVAL = {
    "accuracy": 120 / 150,
    "loss": 0.55,
    "per_class_accuracy": [50 / 60, 40 / 50, 30 / 40],
    "confusion": CONFUSION,
    "images": 150,
    "classes": ["cat", "dog", "T-shirt/top"],
}


@pytest.fixture
def matplotlib():
    return pytest.importorskip("matplotlib")


def write_run(folder, metrics=METRICS, eval_report=EVAL, summary=True):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in metrics))
    if eval_report is not None:
        (folder / "eval.json").write_text(json.dumps(eval_report))
    if summary:
        (folder / "summary.json").write_text(
            json.dumps({"model": "simple-cnn", "dataset": "fashion-mnist"})
        )
    return folder


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path.name} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def assert_sensible_png(path):
    width, height = png_size(path)
    assert width >= 400 and height >= 300, (path.name, width, height)


# ---- rendering (needs matplotlib) ---------------------------------------------------------------
def test_plot_run_writes_loss_accuracy_and_confusion(matplotlib, tmp_path):
    run = write_run(tmp_path / "run")
    written = plot_run(run)
    assert [p.name for p in written] == ["loss.png", "accuracy.png", "confusion.png"]
    for path in written:
        assert path.parent == run
        assert_sensible_png(path)
    assert not list(run.glob("*.tmp")) and not list(run.glob(".*"))  # no temporaries left


def test_no_confusion_png_without_eval_json(matplotlib, tmp_path):
    run = write_run(tmp_path / "run", eval_report=None)
    written = plot_run(run)
    assert [p.name for p in written] == ["loss.png", "accuracy.png"]
    assert not (run / "confusion.png").exists()


def test_out_dir_is_created_and_run_dir_left_alone(matplotlib, tmp_path):
    run = write_run(tmp_path / "run")
    before = sorted(p.name for p in run.iterdir())
    written = plot_run(run, tmp_path / "figures" / "nested")
    assert {p.parent for p in written} == {tmp_path / "figures" / "nested"}
    assert all(p.is_file() for p in written)
    assert sorted(p.name for p in run.iterdir()) == before


def test_single_epoch_run_and_no_summary(matplotlib, tmp_path):
    run = write_run(tmp_path / "run", metrics=METRICS[:1], eval_report=None, summary=False)
    for path in plot_run(run):
        assert_sensible_png(path)


def test_val_and_lr_columns_are_plotted_when_present(matplotlib, tmp_path):
    metrics = [
        {
            **r,
            "val_loss": r["test_loss"] + 0.01,
            "val_accuracy": r["test_accuracy"] - 0.01,
            "lr": 0.02 / r["epoch"],
        }
        for r in METRICS
    ]
    run = write_run(tmp_path / "run", metrics=metrics)
    written = plot_run(run)
    assert [p.name for p in written] == ["loss.png", "accuracy.png", "lr.png", "confusion.png"]
    assert_sensible_png(run / "lr.png")


def test_partial_columns_nulls_and_nan_still_plot(matplotlib, tmp_path):
    """Older records without test metrics, a null and a NaN (diverged) value leave gaps."""
    metrics = [
        {"epoch": 1, "train_loss": 2.0, "train_accuracy": 0.3},
        {"epoch": 2, "train_loss": None, "train_accuracy": 0.5, "test_loss": float("nan")},
        {"epoch": 3, "train_loss": 1.0, "train_accuracy": 0.6, "test_accuracy": 0.55},
    ]
    run = write_run(tmp_path / "run", metrics=metrics, eval_report=None)
    assert [p.name for p in plot_run(run)] == ["loss.png", "accuracy.png"]


def test_eval_json_without_class_names_uses_indices(matplotlib, tmp_path):
    report = {key: value for key, value in EVAL.items() if key != "classes"}
    run = write_run(tmp_path / "run", eval_report=report)
    assert_sensible_png(plot_run(run)[-1])


def test_replotting_overwrites(matplotlib, tmp_path):
    run = write_run(tmp_path / "run")
    (run / "loss.png").write_bytes(b"stale")
    plot_run(run)
    assert (run / "loss.png").read_bytes().startswith(PNG_SIGNATURE)


# ---- errors (no matplotlib needed: inputs are checked first) ------------------------------------
def test_missing_run_folder(tmp_path):
    missing = tmp_path / "no-such-run"
    with pytest.raises(PlotError, match="no such run folder") as info:
        plot_run(missing)
    assert str(missing) in str(info.value) and "\n" not in str(info.value)


def test_missing_metrics_file_names_it(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(PlotError, match="not found") as info:
        plot_run(tmp_path / "run")
    assert str(tmp_path / "run" / "metrics.jsonl") in str(info.value)


@pytest.mark.parametrize("text", ["", "\n  \n"], ids=["empty", "blank-lines"])
def test_empty_metrics_names_the_file(tmp_path, text):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(text)
    with pytest.raises(PlotError, match="empty") as info:
        plot_run(run)
    assert str(run / "metrics.jsonl") in str(info.value)


@pytest.mark.parametrize(
    "bad_line, expected",
    [
        ("{not json", "line 2: not JSON lines"),
        ("[1, 2, 3]", "line 2: expected a JSON object, got list"),
        ('{"epoch": "two", "train_loss": 1.0}', "line 2: epoch 'two' is not a number"),
    ],
    ids=["not-json", "not-an-object", "bad-epoch"],
)
def test_bad_metrics_line_names_file_and_line(tmp_path, bad_line, expected):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps(METRICS[0]) + "\n" + bad_line + "\n")
    with pytest.raises(PlotError) as info:
        plot_run(run)
    message = str(info.value)
    assert message.startswith(str(run / "metrics.jsonl") + ": ") and expected in message
    assert "\n" not in message


def test_metrics_without_loss_or_accuracy(tmp_path):
    run = write_run(tmp_path / "run", metrics=[{"epoch": 1, "seconds": 3.0}], eval_report=None)
    with pytest.raises(PlotError, match="no loss or accuracy columns") as info:
        plot_run(run)
    assert str(run / "metrics.jsonl") in str(info.value)


@pytest.mark.parametrize(
    "report, expected",
    [
        ("{oops", "not JSON"),
        ({"confusion": [[1, 2], [3]]}, "not a square matrix"),
        ({"confusion": []}, "not a square matrix"),
        ({"confusion": [[1, "x"], [3, 4]]}, "not a square matrix"),
        ({"confusion": CONFUSION, "classes": ["a", "b"]}, "should list 3 names"),
    ],
    ids=["not-json", "ragged", "empty", "non-number", "class-count"],
)
def test_bad_eval_json_names_the_file(tmp_path, report, expected):
    run = write_run(tmp_path / "run", eval_report=None)
    text = report if isinstance(report, str) else json.dumps(report)
    (run / "eval.json").write_text(text)
    with pytest.raises(PlotError, match=expected) as info:
        plot_run(run)
    assert str(info.value).startswith(str(run / "eval.json") + ": ")


# ---- matplotlib missing -------------------------------------------------------------------------
def test_plot_unavailable_without_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setitem(
        sys.modules, "matplotlib", None
    )  # `import matplotlib` now raises ImportError
    run = write_run(tmp_path / "run")
    with pytest.raises(PlotUnavailable) as info:
        plot_run(run)
    assert str(info.value) == 'plotting needs matplotlib: pip install "convnet-gpu[plot]"'
    assert not list(run.glob("*.png"))


def test_importing_the_module_does_not_import_matplotlib():
    import subprocess
    from pathlib import Path

    import convnet_gpu

    code = (
        "import sys; sys.modules['matplotlib'] = None; import convnet_gpu.plot as p; "
        "assert p.plot_run and 'matplotlib.figure' not in sys.modules"
    )
    subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        cwd=Path(convnet_gpu.__file__).resolve().parents[1],
    )
