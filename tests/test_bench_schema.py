"""The bench JSON's documented schema: docs/bench-schema.json is SCHEMA, real `convnet-gpu bench
--json` output validates against it, and the validator finds what breaks it."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import pytest

from convnet_gpu import cli
from convnet_gpu.bench_schema import SCHEMA, validate

DOC = Path(__file__).resolve().parent.parent / "docs" / "bench-schema.json"


@pytest.fixture(scope="module")
def bench_rows(tmp_path_factory):
    """A real run: two thread counts, two batch sizes, the per-layer table, the peer where torch
    is installed, and CUDA (measured, or skipped with its reason)."""
    out = tmp_path_factory.mktemp("bench") / "b.json"
    peer = "torch" if importlib.util.find_spec("torch") else "none"
    code = cli.main([
        "bench", "--device", "cpu,cuda", "--threads", "1,2", "--batch-size", "2,4",
        "--steps", "1", "--warmup", "0", "--layers", "--peer", peer, "--json", str(out),
    ])  # fmt: skip
    assert code == 0
    return json.loads(out.read_text())


def test_the_documented_schema_is_the_library_s():
    regenerate = "python -m convnet_gpu.bench_schema > docs/bench-schema.json"
    assert json.loads(DOC.read_text()) == SCHEMA, f"docs/bench-schema.json is stale: {regenerate}"


def test_real_bench_output_validates(bench_rows):
    assert validate(bench_rows) == []
    kinds = {(r["kind"], "skipped" in r) for r in bench_rows}
    assert ("step", False) in kinds and ("layer", False) in kinds
    assert all(r["command"].startswith("convnet-gpu bench --device cpu,cuda") for r in bench_rows)


@pytest.mark.parametrize(
    "break_it, complaint",
    [
        (lambda row: row.pop("machine"), "missing 'machine'"),
        (lambda row: row.update(train_images_per_second=0), "train_images_per_second: 0 <= 0"),
        (lambda row: row.update(threads="two"), "threads: expected integer or null"),
        (lambda row: row.update(surprise=1), "unknown field 'surprise'"),
        (lambda row: row["machine"].pop("cpu"), "machine: missing 'cpu'"),
        (lambda row: row["commit"].update(id=7), "commit.id: expected string or null"),
        (lambda row: row.update(engine="tensorflow"), "engine: 'tensorflow' is not one of"),
    ],
)
def test_the_validator_names_what_breaks_a_row(bench_rows, break_it, complaint):
    rows = copy.deepcopy([r for r in bench_rows if r["kind"] == "step" and "skipped" not in r])
    break_it(rows[0])
    problems = validate(rows)
    assert len(problems) == 1 and complaint in problems[0], problems


def test_a_document_must_be_an_array_of_rows():
    assert validate({"rows": []}) == ['$: expected array, got {"rows": []}']
    assert validate([]) == []
