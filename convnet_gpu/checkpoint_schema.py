"""What a checkpoint must hold to be used: every field checked before any state is touched.

A checkpoint is input like any file: truncated, edited, or written by something else. Nothing
of it is copied into a net or a part of a run until all of it has been checked, so a refusal
leaves everything as it was, and every refusal is one line naming the field:

    read_checkpoint (checkpoint.py)   the npz members' headers (sizes bounded before reading),
                                      then the meta: format, settings, the net's dtype and
                                      signature, each part's scalars (types and ranges)
    check_net_state                   the net's arrays against the net built here: exactly the
                                      keys, shapes and dtypes it has (no casting, no broadcast),
                                      finite values; exactly the layers with scalars, each
                                      value checked by its layer
    check_run_state                   the run's parts against a Trainer: the arrays its parts
                                      have (exact keys), the sample order (a permutation of the
                                      training set), the position (epoch and batch in range,
                                      the step they imply), the optimizer's step count

Settings are checked by type and range here too, since `--resume` trusts them as if given as
flags.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import UserError
from .layers.base import walk
from .settings import (
    FLOAT32_MAX,
    MAX_JITTER,
    OPTIMIZERS,
    PRECISIONS,
    SCHEDULES,
    RunSettings,
    SettingError,
)

NET_DTYPES = ("float32", "float64")
RUN_PARTS = ("optimizer", "position", "selection")  # a Trainer's parts (Trainer.parts)
_DAMAGED = "the checkpoint is damaged or not one convnet-gpu wrote; use an intact copy"


class CheckpointError(UserError):
    """A checkpoint that cannot be used here; the message says why and what to do."""


def field_error(path, field: str, problem: str) -> CheckpointError:
    return CheckpointError(f"{path}: {field}: {problem}; {_DAMAGED}")


# ---- values ---------------------------------------------------------------------------------
def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def require_int(path, field: str, value, low: int = 0, high: int | None = None) -> int:
    if not _is_int(value) or value < low or (high is not None and value > high):
        span = f">= {low}" if high is None else f"in {low}..{high}"
        raise field_error(path, field, f"must be an integer {span}, got {value!r}")
    return value


def require_number(path, field: str, value, low=0.0, high=math.inf, low_open=False) -> float:
    """A finite number in [low, high] ((low, high] with low_open)."""
    ok = _is_number(value) and math.isfinite(value) and value <= high
    ok = ok and (value > low if low_open else value >= low)
    if not ok:
        span = f"{'(' if low_open else '['}{low}, {high}]"
        raise field_error(path, field, f"must be a finite number in {span}, got {value!r}")
    return float(value)


def require_dict(path, field: str, value) -> dict:
    if not isinstance(value, dict):
        raise field_error(path, field, f"must be a JSON object, got {type(value).__name__}")
    return value


def require_keys(path, field: str, value: dict, keys) -> None:
    missing = [key for key in keys if key not in value]
    if missing:
        raise field_error(path, f"{field}.{missing[0]}", "missing")


# ---- the meta as a whole ----------------------------------------------------------------------
def check_meta(meta, path) -> None:
    """The meta of a (migrated) checkpoint: its structure and every scalar's type and range."""
    require_dict(path, "meta", meta)
    net = require_dict(path, "net", meta.get("net"))
    require_keys(path, "net", net, ("signature", "dtype", "layer_scalars"))
    if net["dtype"] not in NET_DTYPES:
        raise field_error(path, "net.dtype", f"must be one of {', '.join(NET_DTYPES)}, got "
                          f"{net['dtype']!r}")  # fmt: skip
    _check_signature(path, net["signature"])
    for layer_path, scalars in require_dict(
        path, "net.layer_scalars", net["layer_scalars"]
    ).items():
        for name, value in require_dict(path, f"net.layer_scalars.{layer_path}", scalars).items():
            require_int(path, f"net.layer_scalars.{layer_path}.{name}", value, 0, 2**63 - 1)
    if "settings" in meta:
        settings_of(meta, path)
    if meta.get("train_images") is not None:
        require_int(path, "train_images", meta["train_images"])
    if "data" in meta:  # the data's identity (Dataset.identity), compared on --resume
        data = require_dict(path, "data", meta["data"])
        require_keys(path, "data", data, ("train_images", "test_images", "labels_sha256"))
        require_int(path, "data.train_images", data["train_images"])
        require_int(path, "data.test_images", data["test_images"])
        if not isinstance(data["labels_sha256"], str):
            raise field_error(path, "data.labels_sha256", "must be a hex string")
    if "distributed" in meta:  # how its ranks trained: --bn is taken from it on --resume
        distributed = require_dict(path, "distributed", meta["distributed"])
        if distributed.get("bn", "sync") not in ("sync", "local"):
            raise field_error(path, "distributed.bn", f"must be one of sync, local, got "
                              f"{distributed['bn']!r}")  # fmt: skip
    for part, check in (("optimizer", _check_optimizer), ("position", _check_position),
                        ("selection", _check_selection)):  # fmt: skip
        if part in meta:
            check(path, require_dict(path, part, meta[part]))


def _check_signature(path, signature) -> None:
    """A list of [description, {parameter: shape}] per layer, then [input shape]."""
    valid = isinstance(signature, list) and len(signature) >= 1
    valid = valid and all(isinstance(entry, list) and entry for entry in signature)
    valid = valid and isinstance(signature[-1][0], str)
    valid = valid and all(
        len(entry) == 2 and isinstance(entry[0], str) and isinstance(entry[1], dict)
        for entry in signature[:-1]
    )
    if not valid:
        raise field_error(path, "net.signature", "must list each layer and the input shape")


# ---- settings ---------------------------------------------------------------------------------
def _choice(options):
    return lambda value: value in options, f"one of {', '.join(options)}"


_SETTING_RULES = {
    "model": (lambda v: isinstance(v, str) and v != "", "a model name or file"),
    "epochs": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "batch_size": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "optimizer": _choice(OPTIMIZERS),
    "lr": (lambda v: _is_number(v) and 0 < v <= FLOAT32_MAX, "a finite number > 0"),
    "momentum": (lambda v: _is_number(v) and 0 <= v < 1, "in [0, 1)"),
    "weight_decay": (lambda v: _is_number(v) and 0 <= v <= FLOAT32_MAX, "a finite number >= 0"),
    "max_grad_norm": (
        lambda v: v is None or (_is_number(v) and 0 < v <= FLOAT32_MAX),
        "null or a finite number > 0",
    ),
    "schedule": _choice(SCHEDULES),
    "label_smoothing": (lambda v: _is_number(v) and 0 <= v < 1, "in [0, 1)"),
    "val_split": (lambda v: _is_number(v) and 0 <= v < 1, "in [0, 1)"),
    "early_stop": (lambda v: v is None or (_is_int(v) and v >= 1), "null or an integer >= 1"),
    "plateau": (lambda v: isinstance(v, bool), "true or false"),
    "jitter": (lambda v: _is_int(v) and 0 <= v <= MAX_JITTER, f"an integer in 0..{MAX_JITTER}"),
    "flip": (lambda v: v is None or isinstance(v, bool), "true or false"),
    "seed": (lambda v: _is_int(v) and 0 <= v < 2**32, "an integer in 0..4294967295"),
    "train_subset": (lambda v: v is None or (_is_int(v) and v >= 1), "null or an integer >= 1"),
    "precision": _choice(PRECISIONS),
}


def settings_of(meta: dict, path) -> RunSettings:
    """The run's settings, each checked by type and range as its flag would be."""
    from .data import DATASETS

    stored = require_dict(path, "settings", meta.get("settings"))
    rules = {**_SETTING_RULES, "dataset": _choice(tuple(DATASETS))}
    for name, value in stored.items():
        if name not in rules:
            raise field_error(path, f"settings.{name}", "not a run setting of this version")
        accepts, rule = rules[name]
        if not accepts(value):
            raise field_error(path, f"settings.{name}", f"must be {rule}, got {value!r}")
    try:
        return RunSettings.from_meta(stored)
    except SettingError as exc:  # settings that contradict each other
        raise field_error(path, f"settings.{exc.setting}", exc.problem) from None


# ---- the parts' scalars -----------------------------------------------------------------------
def _check_optimizer(path, scalars: dict) -> None:
    require_keys(path, "optimizer", scalars, ("class", "steps", "lr"))
    if not isinstance(scalars["class"], str):
        raise field_error(
            path, "optimizer.class", f"must be a class name, got {scalars['class']!r}"
        )
    require_int(path, "optimizer.steps", scalars["steps"])
    require_number(path, "optimizer.lr", scalars["lr"], high=FLOAT32_MAX)


def _check_position(path, scalars: dict) -> None:
    keys = ("epoch", "next_batch", "step", "stopped_early", "rng", "metrics")
    require_keys(path, "position", scalars, keys)
    require_int(path, "position.epoch", scalars["epoch"], 1)
    require_int(path, "position.next_batch", scalars["next_batch"])
    require_int(path, "position.step", scalars["step"])
    if not isinstance(scalars["stopped_early"], bool):
        raise field_error(path, "position.stopped_early", "must be true or false")
    _check_rng_state(path, scalars["rng"])
    metrics = scalars["metrics"]
    if not isinstance(metrics, list) or len(metrics) != scalars["epoch"] - 1:
        raise field_error(
            path, "position.metrics",
            f"must be a list of one record per finished epoch ({scalars['epoch'] - 1})",
        )  # fmt: skip
    for index, record in enumerate(metrics):
        where = f"position.metrics[{index}]"
        require_dict(path, where, record)
        if record.get("epoch") != index + 1:
            raise field_error(path, f"{where}.epoch", f"must be {index + 1}")
        for key, value in record.items():
            if value is not None and not _is_number(value):
                raise field_error(path, f"{where}.{key}", f"must be a number, got {value!r}")


def _check_rng_state(path, state) -> None:
    """The sample-order generator's state, tried on a scratch generator of its kind."""
    if not isinstance(state, dict) or state.get("bit_generator") != "PCG64":
        raise field_error(path, "position.rng", "must be the state of a PCG64 generator")
    try:
        np.random.PCG64().state = state
    except Exception as exc:  # noqa: BLE001 - NumPy's setter raises several kinds on garbage
        raise field_error(path, "position.rng", f"not a valid PCG64 state ({exc})") from None


def _check_selection(path, scalars: dict) -> None:
    keys = ("best", "lr_scale", "regressions", "epochs_since_best")
    require_keys(path, "selection", scalars, keys)
    if scalars["best"] is not None:
        require_number(path, "selection.best", scalars["best"], 0.0, 1.0)
    require_number(path, "selection.lr_scale", scalars["lr_scale"], 0.0, 1.0, low_open=True)
    require_int(path, "selection.regressions", scalars["regressions"])
    require_int(path, "selection.epochs_since_best", scalars["epochs_since_best"])


# ---- arrays against what is built here ----------------------------------------------------------
def check_array(path, key: str, saved, like) -> None:
    """`saved` (a host array) must have exactly the shape and dtype of `like` (the array it
    will be copied into) and finite values: no cast, no broadcast."""
    if saved.shape != tuple(like.shape):
        raise CheckpointError(
            f"{path}: array {key} has shape {saved.shape}, the net built here needs "
            f"{tuple(like.shape)}; {_DAMAGED}"
        )
    if saved.dtype != np.dtype(like.dtype):
        raise CheckpointError(
            f"{path}: array {key} is {saved.dtype}, the net built here needs "
            f"{np.dtype(like.dtype)} (no casting); {_DAMAGED}"
        )
    if saved.dtype.kind == "f" and not np.isfinite(saved).all():
        raise CheckpointError(f"{path}: array {key} holds NaN or infinite values; {_DAMAGED}")
    if key.endswith(("running_var", "exp_avg_sq")) and (saved < 0).any():
        raise CheckpointError(f"{path}: array {key} holds negative variances; {_DAMAGED}")


def net_arrays(net) -> dict:
    """The arrays of a net's state, under their checkpoint names."""
    return {"params": net.params.data, **{f"layer{n}": a for n, a in net.named_buffers()}}


def check_net_state(meta: dict, arrays: dict, net, path) -> None:
    """The net's part of a checkpoint against a set-up net, before any of it is copied."""
    from .checkpoint import model_signature, without_inits

    saved = meta["net"]
    if without_inits(saved["signature"]) != model_signature(net):
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
    expected = net_arrays(net)
    own = {key for key in arrays if key.split(".")[0] not in RUN_PARTS}
    _check_exact_keys(path, own, expected, "the net")
    for key, like in expected.items():
        check_array(path, key, arrays[key], like)
    _check_layer_scalars(path, saved["layer_scalars"], net)


def _check_layer_scalars(path, saved: dict, net) -> None:
    """Exactly the layers with scalars of their own (Dropout's seed and step), each with exactly
    its keys, and values its layer accepts (a resume without them would not be exact)."""
    layers = {layer_path: layer for layer_path, layer in walk(net.layers) if layer.state_scalars()}
    missing = sorted(set(layers) - set(saved))
    if missing:
        raise field_error(path, f"net.layer_scalars.{missing[0]}", "missing for the "
                          f"{layers[missing[0]].describe()} built there")  # fmt: skip
    for layer_path, scalars in saved.items():
        layer = layers.get(layer_path)
        if layer is None or set(scalars) != set(layer.state_scalars()):
            raise field_error(path, f"net.layer_scalars.{layer_path}",
                              "does not match the layer built there")  # fmt: skip
        try:
            layer.check_state_scalars(scalars)
        except ValueError as exc:
            raise field_error(path, f"net.layer_scalars.{layer_path}", str(exc)) from None


def _check_exact_keys(path, present, expected, owner: str) -> None:
    missing = sorted(set(expected) - set(present))
    if missing:
        raise CheckpointError(f"{path}: array {missing[0]} of {owner} is missing; {_DAMAGED}")
    extra = sorted(set(present) - set(expected))
    if extra:
        raise CheckpointError(f"{path}: array {extra[0]} is not part of {owner}; {_DAMAGED}")


def check_run_state(meta: dict, arrays: dict, trainer, path) -> None:
    """The whole checkpoint against a Trainer built from its settings: the net, then each part's
    scalars and arrays, exactly, before restore() copies anything."""
    check_net_state(meta, arrays, trainer.net, path)
    expected = {}
    for name, part in trainer.parts().items():
        if name not in meta:
            raise CheckpointError(
                f"{path}: holds no {name} state (it was not written by a training run)"
            )
        expected.update({f"{name}.{key}": a for key, a in part.state()[1].items()})
    if meta["optimizer"]["class"] != type(trainer.optimizer).__name__:
        raise field_error(path, "optimizer.class", f"is {meta['optimizer']['class']}, the "
                          f"run's settings give {type(trainer.optimizer).__name__}")  # fmt: skip
    present = {key for key in arrays if key.split(".")[0] in RUN_PARTS}
    present.discard("position.order")  # the one optional array: the order of an epoch begun
    _check_exact_keys(path, present, expected, "the run")
    for key, like in expected.items():
        check_array(path, key, arrays[key], like)
    _check_position_fits(meta["position"], arrays.get("position.order"), trainer, path)
    _check_optimizer_steps(meta, len(trainer.data.train), trainer.settings.plateau, path)


def _check_optimizer_steps(meta: dict, batches: int, plateau: bool, path) -> None:
    """The optimizer counts its steps since setup, or since the plateau rule last reset it at
    the end of an epoch (selection.py): the run's steps, or fewer by whole finished epochs."""
    steps, position = meta["optimizer"]["steps"], meta["position"]
    finished = (position["epoch"] - 1) * batches  # the steps of the finished epochs
    if not (plateau and meta["selection"]["regressions"]):
        _require_exactly(path, "optimizer.steps", steps, position["step"], "position.step")
        return
    # reset at the end of epoch 2 at the earliest (epoch 1 is always the best so far)
    since_reset = position["step"] - steps
    if since_reset % batches or not 2 * batches <= since_reset <= finished:
        raise field_error(
            path, "optimizer.steps", f"must be position.step ({position['step']}) less whole "
            f"epochs of {batches} steps (reset by the plateau rule), got {steps}",
        )  # fmt: skip


def _require_exactly(path, field: str, value, expected: int, rule: str) -> None:
    if not _is_int(value) or value != expected:
        raise field_error(path, field, f"must be {rule} ({expected}), got {value!r}")


def _check_position_fits(position: dict, order, trainer, path) -> None:
    """Epoch and batch within the run, and the step they imply: every batch is one step, and
    an epoch's end (early stop included) moves to batch 0 of the next (train.py, position.py)."""
    batches, samples = len(trainer.data.train), trainer.data.train.num_samples
    epochs = trainer.settings.epochs
    epoch = require_int(path, "position.epoch", position["epoch"], 1, epochs + 1)
    next_batch = require_int(path, "position.next_batch", position["next_batch"], 0, batches - 1)
    if next_batch and (epoch == epochs + 1 or position["stopped_early"]):
        raise field_error(path, "position.next_batch", "must be 0 once the run has finished")
    step = (epoch - 1) * batches + next_batch
    rule = f"(epoch - 1) * {batches} batches + next_batch"
    _require_exactly(path, "position.step", position["step"], step, rule)
    if order is None:
        if position["next_batch"] > 0:
            raise field_error(path, "position.order", "missing for an epoch begun")
        return
    if order.ndim != 1 or order.dtype.kind not in "iu" or len(order) != samples:
        raise field_error(
            path, "position.order",
            f"must be {samples} integer sample indices, got {order.dtype} {order.shape}",
        )  # fmt: skip
    if not np.array_equal(np.sort(order), np.arange(samples)):
        raise field_error(path, "position.order", f"must be an order of 0..{samples - 1}")
