"""Checkpoints: one .npz file with every array a run needs to continue, written atomically.

Inside the file: the flat parameters, each layer's buffers (e.g. BatchNorm running stats), the
optimizer's state arrays, the epoch's sample order, and a JSON string `meta` with everything
else (model signature, hyper-parameters, optimizer scalars, trainer position, RNG state, metrics
history). Arrays are stored as host NumPy arrays, so a checkpoint written on a GPU loads on the
CPU and back. The write goes to a temporary file that is renamed over the old checkpoint, so a
process killed mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np

from .fileio import write_bytes_atomic
from .layers.base import walk

CHECKPOINT_NAME = "checkpoint.npz"
FORMAT_VERSION = 3  # 3: the meta's flip is the effective one (2 stored it as given)
_INIT_NOTE = re.compile(r", init=\w+")  # layers.base.init_note


class CheckpointError(ValueError):
    """A checkpoint that cannot be used here; the message says why and what to do."""


def model_signature(net) -> list:
    """What must match for a checkpoint to fit a net: each layer and its parameter shapes.

    Weight inits are left out: the checkpoint's parameters replace the initial ones anyway.
    """
    layers = [
        [layer.describe(), {name: list(p.shape) for name, p in layer.params.items()}]
        for layer in net.layers
    ]
    return _without_inits(layers + [[str(net.input_shape)]])


def _without_inits(signature: list) -> list:
    """A signature with the init notes taken out of its layer descriptions (checkpoints written
    before model_signature left them out still have them)."""
    return [[_INIT_NOTE.sub("", entry[0]), *entry[1:]] for entry in signature]


def layer_buffers(net):
    """(checkpoint key, array) of every layer's buffers, composites included."""
    for path, layer in walk(net.layers):
        for name, array in layer.buffers.items():
            yield f"layer{path}.{name}", array


def _layer_scalars(net) -> dict:
    return {
        path: layer.state_scalars() for path, layer in walk(net.layers) if layer.state_scalars()
    }


def save_checkpoint(path, net, optimizer, meta: dict, order=None, extra_arrays=None) -> Path:
    """Write net + optimizer state, `meta` (JSON-able) and any extra device arrays to `path`
    atomically."""
    to_host = net.backend.to_host
    arrays = {"params": to_host(net.params.data)}
    arrays.update({key: to_host(array) for key, array in layer_buffers(net)})
    arrays.update(
        {f"optim.{key}": to_host(array) for key, array in optimizer.state_arrays().items()}
    )
    arrays.update({key: to_host(array) for key, array in (extra_arrays or {}).items()})
    if order is not None:
        arrays["order"] = np.asarray(order)
    full_meta = {
        **meta,
        "format": FORMAT_VERSION,
        "signature": model_signature(net),
        "dtype": str(net.dtype),
        "device": net.backend.device,
        "optimizer_class": type(optimizer).__name__,
        "optimizer_scalars": _scalars(optimizer),
        "layer_scalars": _layer_scalars(net),
    }
    arrays["meta"] = np.array(json.dumps(full_meta))
    payload = io.BytesIO()
    np.savez(payload, **arrays)
    path = Path(path)
    write_bytes_atomic(path, payload.getvalue())
    return path


def _scalars(optimizer) -> dict:
    scalars = getattr(optimizer, "state_scalars", None)
    return scalars() if scalars else {"lr": optimizer.lr}


def read_checkpoint(path) -> tuple[dict, dict]:
    """(meta, host arrays) of a checkpoint file, with one-line errors for what cannot be read."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise CheckpointError(
            f"{path}: no checkpoint there; pass the run folder that "
            f"`convnet-gpu train --out DIR` wrote"
        )
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
        meta = json.loads(str(arrays.pop("meta")))
        format_version = meta.get("format") if isinstance(meta, dict) else None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path}: not a readable convnet-gpu checkpoint ({exc})") from None
    if format_version == 2:  # flips took effect only with jitter; format 3 stores the effect
        meta["flip"] = bool(meta.get("flip")) and bool(meta.get("jitter"))
        meta["format"] = format_version = FORMAT_VERSION
    if format_version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {format_version} is not "
            f"{FORMAT_VERSION}; it was written by another convnet-gpu version"
        )
    return meta, arrays


def load_into(meta: dict, arrays: dict, net, optimizer=None, path="checkpoint") -> None:
    """Copy a checkpoint's arrays into a set-up net (and optimizer), in place, on any device."""
    if _without_inits(meta["signature"]) != model_signature(net):
        raise CheckpointError(
            f"{path}: the checkpoint is of a different model ({meta.get('model', '?')}, "
            f"{len(meta['signature']) - 1} layers, input {meta['signature'][-1][0]}) than the one "
            f"built here; use the model and the dataset (its input shape) of the run that wrote it"
        )
    if np.dtype(meta["dtype"]) != net.dtype:
        raise CheckpointError(
            f"{path}: checkpoint dtype {meta['dtype']} differs from the net's {net.dtype}"
        )
    backend = net.backend
    backend.copy_from_host(arrays["params"], net.params.data)
    for key, array in layer_buffers(net):
        backend.copy_from_host(arrays[key], array)
    for path, layer in walk(net.layers):
        if path in meta["layer_scalars"]:
            layer.load_state_scalars(meta["layer_scalars"][path])
    if optimizer is not None:
        if meta["optimizer_class"] != type(optimizer).__name__:
            raise CheckpointError(
                f"{path}: the checkpoint's optimizer is {meta['optimizer_class']}, "
                f"not {type(optimizer).__name__}"
            )
        for key, array in optimizer.state_arrays().items():
            backend.copy_from_host(arrays[f"optim.{key}"], array)
        load_scalars = getattr(optimizer, "load_state_scalars", None)
        if load_scalars:
            load_scalars(meta["optimizer_scalars"])
