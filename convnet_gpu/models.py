"""Named architectures and TOML model files.

Builders pair every Conv2D/Dense with its Bias (or BatchNorm, whose beta is the bias) so none is
forgotten. A model file describes the same thing as data:

    [[layers]]
    type = "conv"          # conv, dense, bias, relu, leaky_relu, tanh, sigmoid, maxpool, avgpool,
    out = 32               # global_avgpool, batchnorm, dropout, flatten, residual
    kernel = 3
    pad = 1
    init = "uniform"       # conv and dense: "he" (the default) or "uniform" (see layers.base)

    [[layers]]
    type = "residual"
    body = [{type = "conv", out = 32, kernel = 3, pad = 1}, {type = "batchnorm"}]
    shortcut = []          # optional; empty is the identity
"""

from __future__ import annotations

import sys
from pathlib import Path

from .errors import ModelError
from .fileio import NotARegularFile, read_regular_file
from .layers import (
    AvgPool2D,
    BatchNorm,
    Bias,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool,
    LeakyReLU,
    MaxPool2D,
    ReLU,
    Residual,
    Sigmoid,
    Tanh,
)
from .layers.base import check_weight_init
from .limits import format_bytes

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


def conv_bias_relu(out_channels: int, kernel_size: int, stride: int = 1, pad: int = 0) -> list:
    return [Conv2D(out_channels, kernel_size, stride, pad), Bias(), ReLU()]


def conv_bn(out_channels: int, kernel_size: int, stride: int = 1) -> list:
    """Conv2D (no bias: BatchNorm's beta is the bias) + BatchNorm, 'same' padding."""
    return [Conv2D(out_channels, kernel_size, stride, kernel_size // 2), BatchNorm()]


def dense_bias(out_features: int) -> list:
    return [Dense(out_features), Bias()]


def basic_block(in_channels: int, out_channels: int, stride: int = 1) -> list:
    """ResNet's basic block: two 3x3 conv+BN with a shortcut, then ReLU. The shortcut is the
    identity, or a strided 1x1 conv+BN where the shape changes."""
    body = [*conv_bn(out_channels, 3, stride), ReLU(), *conv_bn(out_channels, 3)]
    changes_shape = stride != 1 or in_channels != out_channels
    shortcut = conv_bn(out_channels, 1, stride) if changes_shape else []
    return [Residual(body, shortcut), ReLU()]


def simple_cnn(num_classes: int = 10) -> list:
    """Net A: conv5x5x32 - ReLU - pool - conv5x5x64 - ReLU - pool - fc1024 - ReLU - fc."""
    return [
        *conv_bias_relu(32, 5, pad=2),
        MaxPool2D(2),
        *conv_bias_relu(64, 5, pad=2),
        MaxPool2D(2),
        Flatten(),
        *dense_bias(1024),
        ReLU(),
        *dense_bias(num_classes),
    ]


def simple_cnn_bn(num_classes: int = 10) -> list:
    """Net A with BatchNorm after each convolution and dropout before the classifier."""
    return [
        *conv_bn(32, 5),
        ReLU(),
        MaxPool2D(2),
        *conv_bn(64, 5),
        ReLU(),
        MaxPool2D(2),
        Flatten(),
        *dense_bias(1024),
        ReLU(),
        Dropout(0.5),
        *dense_bias(num_classes),
    ]


def mini_resnet(num_classes: int = 10) -> list:
    """Net B: conv3x3x32-BN-ReLU, basic blocks at 32, 64 (stride 2) and 128
    (stride 2), global average pooling, dense."""
    return [
        *conv_bn(32, 3),
        ReLU(),
        *basic_block(32, 32),
        *basic_block(32, 64, stride=2),
        *basic_block(64, 128, stride=2),
        GlobalAvgPool(),
        *dense_bias(num_classes),
    ]


MODELS = {"simple-cnn": simple_cnn, "simple-cnn-bn": simple_cnn_bn, "mini-resnet": mini_resnet}


class ModelFileError(ModelError):
    """A model file that cannot be built; the message names the file and the line or key."""


def build_model(name: str, num_classes: int = 10) -> list:
    """A named model, or the model described by a .toml file."""
    if name.endswith(".toml"):
        return load_model_file(name)
    if name not in MODELS:
        raise ModelError(
            f"unknown model {name!r}; choose one of: {', '.join(MODELS)} "
            f"or a model file ending in .toml"
        )
    return MODELS[name](num_classes)


# ---- model files ------------------------------------------------------------------------------
# type -> (layer class, {key: (argument name, required)})
_LAYER_KEYS = {
    "conv": (
        Conv2D,
        {
            "out": ("out_channels", True),
            "kernel": ("kernel_size", True),
            "stride": ("stride", False),
            "pad": ("pad", False),
            "init": ("init", False),
        },
    ),
    "dense": (Dense, {"out": ("out_features", True), "init": ("init", False)}),
    "bias": (Bias, {}),
    "relu": (ReLU, {}),
    "leaky_relu": (LeakyReLU, {"slope": ("slope", False)}),
    "tanh": (Tanh, {}),
    "sigmoid": (Sigmoid, {}),
    "maxpool": (
        MaxPool2D,
        {"kernel": ("kernel_size", False), "stride": ("stride", False), "pad": ("pad", False)},
    ),
    "avgpool": (
        AvgPool2D,
        {"kernel": ("kernel_size", False), "stride": ("stride", False), "pad": ("pad", False)},
    ),
    "global_avgpool": (GlobalAvgPool, {}),
    "batchnorm": (BatchNorm, {"momentum": ("momentum", False), "eps": ("eps", False)}),
    "dropout": (Dropout, {"p": ("p", False)}),
    "flatten": (Flatten, {}),
}
_FLOAT_ARGS = {"slope", "momentum", "eps", "p"}
# The smallest value of each integer argument: a kernel of 0 has no window, a stride of 0 never
# moves. Upper bounds come from memory: Net.setup refuses a net that cannot fit (limits.py).
_INT_MINIMUM = {"out_channels": 1, "out_features": 1, "kernel_size": 1, "stride": 1, "pad": 0}
MAX_NESTING = 32  # residual blocks inside residual blocks (mini-resnet nests 1)
_STRING_ARGS = {"init"}
MAX_MODEL_FILE_BYTES = 1 << 20  # the largest model here is ~2 KiB of TOML


def load_model_file(path) -> list:
    path = Path(path)
    try:
        payload = read_regular_file(path, MAX_MODEL_FILE_BYTES)
    except NotARegularFile as exc:
        raise ModelFileError(f"{path}: {exc}; a model file is a TOML text file") from None
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read the model file ({exc.strerror})") from None
    if payload is None:
        raise ModelFileError(
            f"{path}: larger than {format_bytes(MAX_MODEL_FILE_BYTES)}, the most a model file may "
            f"hold; a model file lists a net's layers in TOML"
        )
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ModelFileError(
            f"{path}: not a text file (byte {exc.start} is not UTF-8); a model file is TOML"
        ) from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # its message names the line and column
        raise ModelFileError(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:  # arrays or tables nested hundreds deep: the parser recurses
        raise ModelFileError(
            f"{path}: arrays or tables nested too deeply for the TOML parser; a model file "
            f"nests residual blocks at most {MAX_NESTING} deep"
        ) from None
    unknown = set(document) - {"layers"}
    if unknown:
        raise ModelFileError(
            f"{path}: unknown top-level key {sorted(unknown)[0]!r}; a model file "
            f"has one array of tables, [[layers]]"
        )
    layers = document.get("layers")
    if not isinstance(layers, list) or not layers:
        raise ModelFileError(f"{path}: no [[layers]] tables; describe the model as a list of them")
    return _build_layers(layers, f"{path}: layers")


def _build_layers(specs, where: str, depth: int = 0) -> list:
    if not isinstance(specs, list):
        raise ModelFileError(f"{where}: expected a list of layer tables")
    if depth > MAX_NESTING:  # the net's walks and plans recurse once per level
        outermost = where.split(".body")[0]  # the full path would be as deep as the nesting
        raise ModelFileError(
            f"{outermost}: residual blocks nested more than {MAX_NESTING} deep, the most a "
            f"model file may nest"
        )
    return [_build_layer(spec, f"{where}[{index}]", depth) for index, spec in enumerate(specs)]


def _build_layer(spec, where: str, depth: int = 0):
    if not isinstance(spec, dict):
        raise ModelFileError(f'{where}: expected a table like {{type = "relu"}}')
    kind = spec.get("type")
    if kind == "residual":
        extra = set(spec) - {"type", "body", "shortcut"}
        if extra:
            raise ModelFileError(
                f"{where}.{sorted(extra)[0]}: unknown key for a residual block "
                f"(it takes body and shortcut)"
            )
        if "body" not in spec:
            raise ModelFileError(f"{where}.body: a residual block needs a body")
        body = _build_layers(spec["body"], f"{where}.body", depth + 1)
        shortcut = _build_layers(spec.get("shortcut", []), f"{where}.shortcut", depth + 1)
        return _construct(Residual, {"body": body, "shortcut": shortcut}, where)
    if kind not in _LAYER_KEYS:
        known = ", ".join(sorted([*_LAYER_KEYS, "residual"]))
        raise ModelFileError(f"{where}.type: unknown layer type {kind!r}; use one of: {known}")
    cls, keys = _LAYER_KEYS[kind]
    arguments = {}
    for key, value in spec.items():
        if key == "type":
            continue
        if key not in keys:
            raise ModelFileError(
                f"{where}.{key}: unknown key for a {kind} layer"
                + (f" (it takes {', '.join(keys)})" if keys else " (it takes none)")
            )
        argument = keys[key][0]
        wanted, kind_name = _expected_type(argument)
        if isinstance(value, bool) or not isinstance(value, wanted):
            raise ModelFileError(f"{where}.{key}: expected {kind_name}, got {value!r}")
        if argument in _INT_MINIMUM and value < _INT_MINIMUM[argument]:
            raise ModelFileError(
                f"{where}.{key}: must be at least {_INT_MINIMUM[argument]}, got {value}"
            )
        if argument == "init":
            try:
                check_weight_init(value)
            except ValueError as exc:
                raise ModelFileError(f"{where}.{key}: {exc}") from None
        arguments[argument] = value
    for key, (argument, required) in keys.items():
        if required and argument not in arguments:
            raise ModelFileError(f"{where}.{key}: missing; a {kind} layer needs it")
    return _construct(cls, arguments, where)


def _expected_type(argument: str):
    if argument in _FLOAT_ARGS:
        return (int, float), "a number"
    if argument in _STRING_ARGS:
        return str, "a string"
    return int, "an integer"


def _construct(cls, arguments, where):
    try:
        return cls(**arguments)
    except ValueError as exc:
        raise ModelFileError(f"{where}: {exc}") from None
