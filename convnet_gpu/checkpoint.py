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
process killed mid-write leaves the previous checkpoint intact (its temporary file is removed at
the next save). Older formats (2 and 3) are migrated on reading.

Reading trusts nothing (checkpoint_schema.py): members must be stored uncompressed (as np.savez
writes them), each array's npy header is read first and the bytes it claims are bounded by the
file and by free memory (the meta's by MAX_META_BYTES) before the array is read; the meta is
checked field by field; and the arrays are checked against the net they will be copied into
before any is copied.
"""

from __future__ import annotations

import io
import json
import math
import re
import tokenize
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .checkpoint_schema import CheckpointError, check_meta, check_net_state, net_arrays
from .fileio import json_text, remove_stale_temporaries, write_bytes_atomic
from .layers.base import walk
from .limits import TooLarge, check_host_fits, format_bytes
from .rundir import RunDir

FORMAT_VERSION = 4  # 4: settings stored once, parts under their own names (3: flat meta)
_INIT_NOTE = re.compile(r", init=\w+")  # layers.base.init_note
_NPY_KINDS = "biuf" + "U"  # numbers, and the meta's one string; never objects
# The meta's JSON becomes Python objects up to ~20 times its size (json.loads of "[[],[],...]"):
# its npy bytes are capped far above a real run's (a few KiB plus ~1 KiB per epoch's metrics).
MAX_META_BYTES = 16 << 20
_NOT_A_FITTING_NET = (
    "no net that fits in memory has arrays that large: the file is forged or damaged"
)


def model_signature(net) -> list:
    """What must match for a checkpoint to fit a net: each layer and its parameter shapes.

    Weight inits are left out: the checkpoint's parameters replace the initial ones anyway.
    """
    layers = [
        [layer.describe(), {name: list(p.shape) for name, p in net.layer_parameters(i).items()}]
        for i, layer in enumerate(net.layers)
    ]
    return without_inits(layers + [[str(net.input_shape)]])


def without_inits(signature: list) -> list:
    """A signature with the init notes taken out of its layer descriptions (checkpoints written
    before model_signature left them out still have them)."""
    return [[_INIT_NOTE.sub("", entry[0]), *entry[1:]] for entry in signature]


def _layer_scalars(net) -> dict:
    return {
        path: layer.state_scalars() for path, layer in walk(net.layers) if layer.state_scalars()
    }


def save_checkpoint(path, net, meta: dict, parts: dict | None = None) -> Path:
    """Write the net's state, `meta` (JSON-able: the settings, the device, ...) and the state of
    each part (name -> object with state()/load_state()) to `path`, atomically."""
    to_host = net.backend.to_host
    arrays = {key: to_host(array) for key, array in net_arrays(net).items()}
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
    arrays["meta"] = np.array(json_text(full_meta))
    payload = io.BytesIO()
    np.savez(payload, **arrays)
    path = Path(path)
    remove_stale_temporaries(path)  # a killed earlier writer's half-written file
    write_bytes_atomic(path, payload.getvalue())
    return path


def read_checkpoint(path) -> tuple[dict, dict]:
    """(meta, host arrays) of a checkpoint (its file, or the run folder holding it), with
    one-line errors for what cannot be read or is malformed; older formats come back migrated.
    The arrays are checked against a net by load_into (and a whole run by Trainer.restore)."""
    path = Path(path)
    if path.is_dir():
        path = RunDir(path).checkpoint
    if not path.is_file():
        raise CheckpointError(
            f"{path}: no checkpoint there; pass the run folder that a training run with an "
            f"output folder wrote"
        )
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the file is empty (a copy that failed?); use an intact one")
    try:
        arrays = _read_arrays(path)
        meta = json.loads(str(arrays.pop("meta")))
        format_version = meta.get("format") if isinstance(meta, dict) else None
    except KeyError:
        raise CheckpointError(f"{path}: holds no meta; not a convnet-gpu checkpoint") from None
    except TooLarge:  # already one line naming the file, the size and the limit
        raise
    except (OSError, ValueError, EOFError, RecursionError, zipfile.BadZipFile, zlib.error) as exc:
        problem = " ".join(str(exc).split()) or type(exc).__name__
        raise CheckpointError(
            f"{path}: not a readable convnet-gpu checkpoint ({problem})"
        ) from None
    if format_version in (2, 3):
        meta, arrays = _migrated(path, meta, arrays, format_version)
    elif format_version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {format_version!r} is not {FORMAT_VERSION}; it was "
            f"written by another convnet-gpu version"
        )
    check_meta(meta, path)
    return meta, arrays


def _read_arrays(path: Path) -> dict:
    """Every array of the npz, each header read and its size bounded before its data is."""
    arrays = {}
    with zipfile.ZipFile(path) as archive:
        members = archive.infolist()
        names = [info.filename for info in members]
        if len(set(names)) != len(names) or not all(n.endswith(".npy") for n in names):
            raise ValueError("its members are not one .npy file per array")
        for info in members:  # np.savez stores: no member can claim more bytes than the file
            if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
                raise ValueError(
                    f"member {info.filename} is compressed; convnet-gpu writes checkpoints "
                    f"uncompressed"
                )
        headers = [_npy_header(path, archive, info) for info in members]
        check_host_fits(
            f"{path}: the checkpoint's arrays", sum(nbytes for _, _, nbytes in headers),
            _NOT_A_FITTING_NET,
        )  # fmt: skip
        for info in members:
            with archive.open(info) as member:
                arrays[info.filename[: -len(".npy")]] = np.lib.format.read_array(
                    member, allow_pickle=False
                )
    return arrays


def _npy_header(path, archive, info) -> tuple:
    """(shape, dtype, bytes) an npy member claims; its bytes must be what the member holds."""
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        reader = {(1, 0): np.lib.format.read_array_header_1_0,
                  (2, 0): np.lib.format.read_array_header_2_0}.get(version)  # fmt: skip
        if reader is None:
            raise ValueError(f"array {info.filename}: npy version {version} is not 1.0 or 2.0")
        try:
            shape, _, dtype = reader(member, max_header_size=10_000)
        except (ValueError, SyntaxError, TypeError, tokenize.TokenError) as exc:
            # NumPy parses the header's dict with Python's tokenizer: damage raises any of these
            raise ValueError(f"array {info.filename}: unreadable npy header ({exc})") from None
        header_bytes = member.tell()
    name = info.filename[: -len(".npy")]
    if dtype.hasobject or dtype.kind not in _NPY_KINDS or dtype.fields is not None:
        raise ValueError(f"array {name} has dtype {dtype}, not a plain number type")
    nbytes = math.prod(shape) * dtype.itemsize
    if name == "meta" and nbytes > MAX_META_BYTES:
        raise ValueError(
            f"its meta claims {format_bytes(nbytes)}, more than the {format_bytes(MAX_META_BYTES)} "
            f"a checkpoint's meta may hold"
        )
    check_host_fits(f"{path}: array {name} of shape {shape}", nbytes, _NOT_A_FITTING_NET)
    if nbytes != info.file_size - header_bytes:
        raise ValueError(
            f"array {name}: its header claims {nbytes} bytes for shape {shape} of {dtype}, the "
            f"file holds {info.file_size - header_bytes} (truncated or forged)"
        )
    return shape, dtype, nbytes


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


def _migrated(path, meta: dict, arrays: dict, version: int) -> tuple[dict, dict]:
    try:
        return _from_format_3(meta, arrays, version)
    except KeyError as exc:
        raise CheckpointError(
            f"{path}: format {version} meta lacks {exc}; use an intact copy"
        ) from None
    except (TypeError, AttributeError, ValueError):
        raise CheckpointError(
            f"{path}: format {version} meta is malformed; use an intact copy"
        ) from None


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
    """Copy a checkpoint's net state into a set-up net, in place, on any device, once every
    array and scalar of it has been checked against the net (checkpoint_schema.py)."""
    check_net_state(meta, arrays, net, path)
    copy_net_state(meta, arrays, net)


def copy_net_state(meta: dict, arrays: dict, net) -> None:
    """load_into without the checks (for a caller that has made them)."""
    backend = net.backend
    for key, array in net_arrays(net).items():
        backend.copy_from_host(arrays[key], array)
    layer_scalars = meta["net"]["layer_scalars"]
    for layer_path, layer in walk(net.layers):
        if layer_path in layer_scalars:
            layer.load_state_scalars(layer_scalars[layer_path])
    if net.workers is not None:
        net.workers.copy_state_from_net()


def load_part(meta: dict, arrays: dict, part_name: str, part, path="checkpoint") -> None:
    """Hand a part its saved scalars and host arrays (it copies them where they belong)."""
    if part_name not in meta:
        raise CheckpointError(
            f"{path}: holds no {part_name} state (it was not written by a training run)"
        )
    part.load_state(meta[part_name], part_arrays(arrays, part_name))
