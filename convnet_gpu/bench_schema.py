"""The documented format of `convnet-gpu bench --json`: a JSON Schema, and a small validator.

The file is a JSON array of rows. A "step" row is one engine on one device at one thread count
and batch size (or says why it was skipped); a "layer" row is one piece of a training step from
`--layers`. Every row carries the machine, the commit and when the run started, so a figure can
always be traced to what produced it.

docs/bench-schema.json is SCHEMA written out (`python -m convnet_gpu.bench_schema`; a test keeps
the two equal). `validate(rows)` checks a document against it with the subset of JSON Schema that
SCHEMA uses (type, const, enum, minimum, exclusiveMinimum, properties, required,
additionalProperties false, items, oneOf, $ref into $defs), so no jsonschema package is needed.
"""

from __future__ import annotations

import json
import sys

NUMBER = {"type": "number", "minimum": 0}
POSITIVE = {"type": "number", "exclusiveMinimum": 0}
COUNT = {"type": "integer", "minimum": 1}
TEXT = {"type": "string"}
VERSION = {"type": ["string", "null"]}


def _described(schema: dict, description: str) -> dict:
    return {**schema, "description": description}


MACHINE = {
    "type": "object",
    "description": "The machine the run measured on (convnet_gpu.machine).",
    "required": ["cpu", "cores", "logical_cpus", "gpu", "platform", "python", "libraries"],
    "additionalProperties": False,
    "properties": {
        "cpu": _described(TEXT, "The CPU's model name, as /proc/cpuinfo gives it."),
        "cores": _described(COUNT, "Cores this process could run on (its affinity)."),
        "logical_cpus": _described(COUNT, "Logical CPUs of the machine (os.cpu_count())."),
        "gpu": _described(VERSION, "The name of CUDA device 0 where CuPy was loaded, else null."),
        "platform": _described(TEXT, "platform.platform()."),
        "python": _described(TEXT, "The Python version."),
        "libraries": {
            "type": "object",
            "description": "Installed versions (null: not installed).",
            "required": ["convnet-gpu", "numpy", "numba", "cupy", "torch"],
            "additionalProperties": False,
            "properties": dict.fromkeys(
                ("convnet-gpu", "numpy", "numba", "cupy", "torch"), VERSION
            ),
        },
    },
}

COMMIT = {
    "type": "object",
    "description": "The git commit of the code that ran (nulls: not a git checkout).",
    "required": ["id", "dirty"],
    "additionalProperties": False,
    "properties": {
        "id": _described({"type": ["string", "null"]}, "The commit hash."),
        "dirty": _described(
            {"type": ["boolean", "null"]}, "Whether tracked files had uncommitted changes."
        ),
    },
}

# Fields every row has, step or layer.
COMMON = {
    "engine": _described({"enum": ["convnet_gpu", "torch"]}, "Whose code ran."),
    "device": _described(
        TEXT,
        "The device as the engine describes it (library versions, threads, GPU name); "
        "the device asked for when skipped.",
    ),  # fmt: skip
    "requested": _described(TEXT, "The device as given to --device (cpu, cuda, cuda:N, auto)."),
    "model": _described(TEXT, "A named model or a model file."),
    "batch_size": _described(COUNT, "Images per step."),
    "threads": _described(
        {"type": ["integer", "null"], "minimum": 1},
        "CPU threads a step ran on (null: a CUDA device, or a skipped row without --threads).",
    ),
    "machine": {"$ref": "#/$defs/machine"},
    "commit": {"$ref": "#/$defs/commit"},
    "measured_at": _described(TEXT, "When the run started: ISO 8601, UTC."),
    "load_average": _described(
        {"type": ["array", "null"], "items": {"type": "number", "minimum": 0}},
        "The system's load average over 1, 5 and 15 minutes when the run started (null: the "
        "OS has none): how busy a shared machine was.",
    ),
    "command": _described(TEXT, "The command line that wrote the file (the CLI sets it)."),
}
OPTIONAL = ("command", "load_average")  # load_average: files written before it was recorded
COMMON_REQUIRED = ["kind", *[k for k in COMMON if k not in OPTIONAL]]

STEP_FIGURES = {
    "precision": _described({"enum": ["fp32", "tf32"]}, "How float32 matrix products ran."),
    "steps": _described(COUNT, "Steps timed for each figure."),
    "warmup": _described(
        {"type": "integer", "minimum": 0}, "Untimed steps before them, as asked for."
    ),
    "train_ms_per_step": _described(POSITIVE, "A training step, steady state (ms)."),
    "train_images_per_second": _described(POSITIVE, "batch_size / the training step."),
    "first_train_step_ms": _described(
        POSITIVE, "The first training step alone (kernel compilation, caches, allocation)."
    ),
    "infer_ms_per_step": _described(POSITIVE, "An inference pass, steady state (ms)."),
    "infer_images_per_second": _described(POSITIVE, "batch_size / the inference pass."),
    "first_infer_step_ms": _described(POSITIVE, "The first inference pass alone (ms)."),
    "peak_memory_bytes": _described(
        {"type": ["integer", "null"], "minimum": 0},
        "Peak memory the measurement added on its device (null: not measurable here).",
    ),
    "memory_measure": _described(
        {
            "enum": [
                "host RSS growth",
                "CuPy pool high-water growth",
                "torch.cuda.max_memory_allocated",
            ]
        },
        "How peak_memory_bytes was read (convnet_gpu.memory).",
    ),  # fmt: skip
    "cuda_graph": _described({"enum": ["on", "off"]}, "Ours: whether steps replayed a CUDA graph."),
    "cuda_graph_fallback": _described(TEXT, "Ours: why capture was given up (--cuda-graph auto)."),
    "train_vs_torch": _described(
        POSITIVE, "Ours: train img/s over the torch row's at the same device, threads and batch."
    ),
    "infer_vs_torch": _described(POSITIVE, "Ours: the same for inference."),
    "cuda_graph_mode": _described(
        {"enum": ["auto", "on", "off"]}, "scripts/gpu_bench.py: the --cuda-graph mode it ran."
    ),
}

STEP_ROW = {
    "type": "object",
    "description": "One engine on one device, thread count and batch size.",
    "required": [
        *COMMON_REQUIRED,
        "precision",
        "steps",
        "warmup",
        "infer_ms_per_step",
        "infer_images_per_second",
        "first_infer_step_ms",
        "peak_memory_bytes",
        "memory_measure",
    ],  # fmt: skip
    "additionalProperties": False,
    "properties": {"kind": {"const": "step"}, **COMMON, **STEP_FIGURES},
}

SKIPPED_ROW = {
    "type": "object",
    "description": "An engine and device that could not run, and why.",
    "required": [*COMMON_REQUIRED, "steps", "warmup", "skipped"],
    "additionalProperties": False,
    "properties": {
        "kind": {"const": "step"},
        **COMMON,
        "steps": STEP_FIGURES["steps"],
        "warmup": STEP_FIGURES["warmup"],
        "skipped": _described(TEXT, "Why: no GPU, no PyTorch, no peer for a model file, ..."),
        "cuda_graph_mode": STEP_FIGURES["cuda_graph_mode"],
    },
}

LAYER_ROW = {
    "type": "object",
    "description": "One piece of a training step (--layers): a layer's forward or backward, "
    "the loss, the optimizer's update; ours only, on one CPU thread.",
    "required": [*COMMON_REQUIRED, "precision", "position", "layer_index", "layer", "phase", "ms"],
    "additionalProperties": False,
    "properties": {
        "kind": {"const": "layer"},
        **COMMON,
        "precision": STEP_FIGURES["precision"],
        "position": _described(
            {"type": "integer", "minimum": 0}, "Where the piece runs in a step (0 first)."
        ),
        "layer_index": _described(
            {"type": ["integer", "null"], "minimum": 0},
            "The top-level layer's index (null: the loss or the optimizer).",
        ),
        "layer": _described(TEXT, "The layer as it describes itself: Conv2D(32, 5x5, ...)."),
        "phase": _described({"enum": ["forward", "backward", "update"]}, "Which pass."),
        "ms": _described(NUMBER, "Milliseconds one call takes (see convnet_gpu.profile)."),
    },
}

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "convnet-gpu/bench-schema.json",
    "title": "convnet-gpu bench --json",
    "description": "An array of result rows: steps of each engine per device, thread count and "
    "batch size (kind step), and the per-layer pieces of --layers (kind layer).",
    "type": "array",
    "items": {
        "oneOf": [{"$ref": "#/$defs/step"}, {"$ref": "#/$defs/skipped"}, {"$ref": "#/$defs/layer"}]
    },  # fmt: skip
    "$defs": {
        "step": STEP_ROW,
        "skipped": SKIPPED_ROW,
        "layer": LAYER_ROW,
        "machine": MACHINE,
        "commit": COMMIT,
    },
}


# ---- the validator --------------------------------------------------------------------------
_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def validate(document, schema: dict = SCHEMA) -> list[str]:
    """Every way `document` breaks `schema` (empty: it validates), each naming where."""
    return _errors(document, schema, "$", schema)


def _errors(value, schema: dict, where: str, root: dict) -> list[str]:
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/$defs/")
        return _errors(value, root["$defs"][name], where, root)
    if "oneOf" in schema:
        return _one_of(value, schema["oneOf"], where, root)
    problems = _scalar_errors(value, schema, where)
    if problems:
        return problems
    if isinstance(value, dict):
        return _object_errors(value, schema, where, root)
    if isinstance(value, list) and "items" in schema:
        return [p for i, item in enumerate(value)
                for p in _errors(item, schema["items"], f"{where}[{i}]", root)]  # fmt: skip
    return []


def _scalar_errors(value, schema: dict, where: str) -> list[str]:
    types = schema.get("type")
    if types is not None:
        types = [types] if isinstance(types, str) else types
        if not any(_TYPES[t](value) for t in types):
            return [f"{where}: expected {' or '.join(types)}, got {json.dumps(value)[:60]}"]
    if "const" in schema and value != schema["const"]:
        return [f"{where}: expected {schema['const']!r}, got {value!r}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{where}: {value!r} is not one of {schema['enum']}"]
    if _TYPES["number"](value):
        if "minimum" in schema and value < schema["minimum"]:
            return [f"{where}: {value} < {schema['minimum']}"]
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            return [f"{where}: {value} <= {schema['exclusiveMinimum']}"]
    return []


def _object_errors(value: dict, schema: dict, where: str, root: dict) -> list[str]:
    properties = schema.get("properties", {})
    problems = [f"{where}: missing {key!r}" for key in schema.get("required", [])
                if key not in value]  # fmt: skip
    if schema.get("additionalProperties") is False:
        problems += [f"{where}: unknown field {key!r}" for key in value if key not in properties]
    for key, item in value.items():
        if key in properties:
            problems += _errors(item, properties[key], f"{where}.{key}", root)
    return problems


def _one_of(value, options: list, where: str, root: dict) -> list[str]:
    outcomes = [_errors(value, option, where, root) for option in options]
    matched = sum(not problems for problems in outcomes)
    if matched == 1:
        return []
    if matched > 1:
        return [f"{where}: matches {matched} of the row kinds, expected exactly one"]
    closest = min(outcomes, key=len)  # the kind it was most likely meant to be
    return closest


if __name__ == "__main__":
    json.dump(SCHEMA, sys.stdout, indent=2)
    sys.stdout.write("\n")
