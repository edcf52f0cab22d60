"""convnet_gpu.bench_plot and `convnet-gpu plot BENCH.json`: the scaling curves and the
per-layer bars of a bench file, and one-line errors for a file that is not one."""

from __future__ import annotations

import json
import struct

import pytest

from convnet_gpu import cli
from convnet_gpu.bench_plot import plot_bench
from convnet_gpu.plot import PlotError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MACHINE = {"cpu": "Test CPU", "cores": 2, "gpu": None}
COMMIT = {"id": "0123456789abcdef" * 2 + "01234567", "dirty": False}


def step(engine, threads, batch, speed):
    return {"kind": "step", "engine": engine, "device": f"cpu ({engine})", "requested": "cpu",
            "model": "simple-cnn", "batch_size": batch, "threads": threads,
            "train_images_per_second": speed * threads * batch ** 0.2,
            "infer_images_per_second": 3 * speed * threads * batch ** 0.2,
            "machine": MACHINE, "commit": COMMIT,
            "measured_at": "2026-11-29T23:00:00+00:00"}  # fmt: skip


def layer(position, index, name, phase, ms):
    return {"kind": "layer", "engine": "convnet_gpu", "device": "cpu (NumPy, 1 thread)",
            "requested": "cpu", "model": "simple-cnn", "batch_size": 32, "threads": 1,
            "position": position, "layer_index": index, "layer": name, "phase": phase, "ms": ms,
            "machine": MACHINE, "commit": COMMIT}  # fmt: skip


ROWS = [
    step(engine, threads, batch, speed)
    for engine, speed in (("convnet_gpu", 300.0), ("torch", 280.0))
    for threads in (1, 2)
    for batch in (32, 128, 512)
] + [
    layer(0, 0, "Conv2D(32, 5x5)", "forward", 1.5),
    layer(1, None, "SoftmaxCrossEntropy", "forward", 0.1),
    layer(2, None, "SoftmaxCrossEntropy", "backward", 0.05),
    layer(3, 0, "Conv2D(32, 5x5)", "backward", 2.5),
    layer(4, None, "SGD", "update", 0.7),
]


@pytest.fixture
def matplotlib():
    return pytest.importorskip("matplotlib")


def png_size(path):
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    return struct.unpack(">II", data[16:24])


def write(tmp_path, rows, name="b.json"):
    path = tmp_path / name
    path.write_text(json.dumps(rows))
    return path


def test_both_curves_and_the_layer_bars_are_drawn(matplotlib, tmp_path):
    written = plot_bench(write(tmp_path, ROWS))
    assert [p.name for p in written] == ["b-batch.png", "b-threads.png", "b-layers-cpu-b32.png"]
    for path in written:
        width, height = png_size(path)
        assert width >= 600 and height >= 300


def test_one_batch_size_draws_the_thread_curve_alone(matplotlib, tmp_path):
    rows = [r for r in ROWS if r["kind"] == "step" and r["batch_size"] == 128]
    assert [p.name for p in plot_bench(write(tmp_path, rows), tmp_path / "out")] == [
        "b-threads.png"
    ]


def test_the_cli_plots_a_bench_file_and_still_plots_run_folders(matplotlib, tmp_path, capsys):
    path = write(tmp_path, ROWS)
    assert cli.main(["plot", str(path), "--out", str(tmp_path / "figs")]) == 0
    assert "b-batch.png" in capsys.readouterr().out
    assert (tmp_path / "figs" / "b-threads.png").is_file()


@pytest.mark.parametrize(
    "content, complaint",
    [
        ("{not json", "not JSON"),
        ('{"rows": []}', "not a `convnet-gpu bench --json` file"),
        ("[]", "not a `convnet-gpu bench --json` file"),
        (json.dumps([step("convnet_gpu", 2, 128, 300.0)]), "nothing to draw"),
    ],
)
def test_a_file_that_is_not_a_bench_file_is_a_one_line_error(tmp_path, capsys, content, complaint):
    path = tmp_path / "x.json"
    path.write_text(content)
    with pytest.raises(PlotError, match=complaint):
        plot_bench(path)
    assert cli.main(["plot", str(path)]) == 2
    err = capsys.readouterr().err
    assert complaint in err and len(err.strip().splitlines()) == 1
