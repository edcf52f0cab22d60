"""Checkpoints: one .npz file with every array a run needs to continue, written atomically.

The file holds the net's state (the flat parameters, each layer's buffers such as BatchNorm's
running statistics, its layers' scalars such as Dropout's step) and the state of each *part*
of a run that keeps some: the optimizer (its moments), the position in training (the epoch's
sample order, the RNG state, the metrics so far) and model selection (the best parameters).
Each part gives and takes its own state through two methods, so this module knows none of
their insides:

    part.state() -> (scalars: JSON-able dict, arrays: dict of device arrays)
    part.load_state(scalars, host_arrays)

Inside the file, a part's arrays are named "<part>.<key>" and its scalars sit under meta[part];
`meta` is one JSON string with the run's settings (stored once), the model signature and
everything else. Arrays are stored as host NumPy arrays, so a checkpoint written on a GPU loads
on the CPU and back. The write goes to a temporary file renamed over the old checkpoint, so a
process killed mid-write leaves the previous checkpoint intact. Older formats (2 and 3) are
migrated on reading.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np

from .errors import UserError
from .fileio import write_bytes_atomic
from .layers.base import walk
from .rundir import RunDir

FORMAT_VERSION = 4  # 4: settings stored once, parts under their own names (3: flat meta)
_INIT_NOTE = re.compile(r", init=\w+")  # layers.base.init_note


class CheckpointError(UserError):
    """A checkpoint that cannot be used here; the message says why and what to do."""


def model_signature(net) -> list:
    """What must match for a checkpoint to fit a net: each layer and its parameter shapes.

    Weight inits are left out: the checkpoint's parameters replace the initial ones anyway.
    """
    layers = [
        [layer.describe(), {name: list(p.shape) for name, p in net.layer_parameters(i).items()}]
        for i, layer in enumerate(net.layers)
    ]
    return _without_inits(layers + [[str(net.input_shape)]])


def _without_inits(signature: list) -> list:
    """A signature with the init notes taken out of its layer descriptions (checkpoints written
    before model_signature left them out still have them)."""
    return [[_INIT_NOTE.sub("", entry[0]), *entry[1:]] for entry in signature]


def _buffer_key(name: str) -> str:
    return f"layer{name}"


def _layer_scalars(net) -> dict:
    return {
        path: layer.state_scalars() for path, layer in walk(net.layers) if layer.state_scalars()
    }


def save_checkpoint(path, net, meta: dict, parts: dict | None = None) -> Path:
    """Write the net's state, `meta` (JSON-able: the settings, the device, ...) and the state of
    each part (name -> object with state()/load_state()) to `path`, atomically."""
    to_host = net.backend.to_host
    arrays = {"params": to_host(net.params.data)}
    arrays.update({_buffer_key(name): to_host(array) for name, array in net.named_buffers()})
    full_meta = {
        **meta,
        "format": FORMAT_VERSION,
        "net": {
            "signature": model_signature(net),
            "dtype": str(net.dtype),
            "layer_scalars": _layer_scalars(net),
        },
    }
    for part_name, part in (parts or {}).items():
        scalars, part_arrays = part.state()
        full_meta[part_name] = scalars
        arrays.update({f"{part_name}.{key}": to_host(a) for key, a in part_arrays.items()})
    arrays["meta"] = np.array(json.dumps(full_meta))
    payload = io.BytesIO()
    np.savez(payload, **arrays)
    path = Path(path)
    write_bytes_atomic(path, payload.getvalue())
    return path


def read_checkpoint(path) -> tuple[dict, dict]:
    """(meta, host arrays) of a checkpoint (its file, or the run folder holding it), with
    one-line errors for what cannot be read; older formats come back migrated."""
    path = Path(path)
    if path.is_dir():
        path = RunDir(path).checkpoint
    if not path.is_file():
        raise CheckpointError(
            f"{path}: no checkpoint there; pass the run folder that a training run with an "
            f"output folder wrote"
        )
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
        meta = json.loads(str(arrays.pop("meta")))
        format_version = meta.get("format") if isinstance(meta, dict) else None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path}: not a readable convnet-gpu checkpoint ({exc})") from None
    if format_version in (2, 3):
        meta, arrays = _from_format_3(meta, arrays, format_version)
    elif format_version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {format_version} is not {FORMAT_VERSION}; it was "
            f"written by another convnet-gpu version"
        )
    return meta, arrays


# Format 3 kept settings and parts flat in meta; its part arrays had these prefixes.
_FORMAT_3_ARRAY_PREFIXES = {
    "optim.": "optimizer.",
    "best.": "selection.best.",
    "order": "position.order",
}
_FORMAT_3_SETTINGS = (
    "model", "dataset", "epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay",
    "max_grad_norm", "schedule", "label_smoothing", "val_split", "early_stop", "plateau",
    "jitter", "flip", "seed", "train_subset",
)  # fmt: skip


def _from_format_3(meta: dict, arrays: dict, version: int) -> tuple[dict, dict]:
    """A format 2 or 3 checkpoint in today's layout (same arrays, renamed; meta regrouped)."""
    settings = {name: meta[name] for name in _FORMAT_3_SETTINGS if name in meta}
    if version == 2 and "flip" in settings:  # format 2 stored --flip as given: it took effect
        settings["flip"] = bool(settings["flip"]) and bool(
            settings.get("jitter")
        )  # only with jitter
    migrated = {
        "format": FORMAT_VERSION,
        "settings": settings,
        "device": meta.get("device"),
        "train_images": meta.get("train_images"),
        "net": {
            "signature": meta["signature"],
            "dtype": meta["dtype"],
            "layer_scalars": meta.get("layer_scalars", {}),
        },
        "optimizer": {"class": meta.get("optimizer_class"), **meta.get("optimizer_scalars", {})},
    }
    if "position" in meta:  # written by a Trainer
        migrated["position"] = {**meta["position"], "rng": meta["rng"], "metrics": meta["history"]}
        migrated["selection"] = meta["selection"]
    renamed = {}
    for key, array in arrays.items():
        for old, new in _FORMAT_3_ARRAY_PREFIXES.items():
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        renamed[key] = array
    return migrated, renamed


def part_arrays(arrays: dict, part_name: str) -> dict:
    """The arrays of one part, keys without the "<part>." prefix."""
    prefix = f"{part_name}."
    return {key[len(prefix) :]: a for key, a in arrays.items() if key.startswith(prefix)}


def load_into(meta: dict, arrays: dict, net, path="checkpoint") -> None:
    """Copy a checkpoint's net state into a set-up net, in place, on any device."""
    saved = meta["net"]
    if _without_inits(saved["signature"]) != model_signature(net):
        model = meta.get("settings", {}).get("model", "?")
        raise CheckpointError(
            f"{path}: the checkpoint is of a different model ({model}, "
            f"{len(saved['signature']) - 1} layers, input {saved['signature'][-1][0]}) than the "
            f"one built here; use the model and the dataset (its input shape) of the run that "
            f"wrote it"
        )
    if np.dtype(saved["dtype"]) != net.dtype:
        raise CheckpointError(
            f"{path}: checkpoint dtype {saved['dtype']} differs from the net's {net.dtype}"
        )
    backend = net.backend
    backend.copy_from_host(arrays["params"], net.params.data)
    for name, array in net.named_buffers():
        backend.copy_from_host(arrays[_buffer_key(name)], array)
    for layer_path, layer in walk(net.layers):
        if layer_path in saved["layer_scalars"]:
            layer.load_state_scalars(saved["layer_scalars"][layer_path])
    if net.workers is not None:
        net.workers.copy_state_from_net()


def load_part(meta: dict, arrays: dict, part_name: str, part, path="checkpoint") -> None:
    """Hand a part its saved scalars and host arrays (it copies them where they belong)."""
    if part_name not in meta:
        raise CheckpointError(
            f"{path}: holds no {part_name} state (it was not written by a training run)"
        )
    part.load_state(meta[part_name], part_arrays(arrays, part_name))
