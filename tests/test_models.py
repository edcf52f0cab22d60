"""Named models and TOML model files: shapes, residual blocks, and errors that name the key."""

from __future__ import annotations

import numpy as np
import pytest

from convnet_gpu import Net, SoftmaxCrossEntropy
from convnet_gpu.layers import BatchNorm, Conv2D, Dense, Residual
from convnet_gpu.layers.base import walk
from convnet_gpu.models import ModelFileError, build_model, load_model_file


@pytest.mark.parametrize(
    "name, shape",
    [
        ("simple-cnn", (1, 28, 28)),
        ("simple-cnn-bn", (1, 28, 28)),
        ("mini-resnet", (1, 28, 28)),
        ("mini-resnet", (3, 32, 32)),
    ],
)
def test_named_models_build_and_run(name, shape):
    net = Net(build_model(name), SoftmaxCrossEntropy(), seed=0).setup(4, shape)
    assert net.output_shape == (10,)
    rng = np.random.default_rng(0)
    n = net.load_batch(
        rng.standard_normal((3,) + shape).astype(np.float32),
        rng.integers(0, 10, 3).astype(np.int32),
    )
    net.forward(n)
    net.backward(n)
    assert np.isfinite(float(net.loss.loss)) and np.any(net.params.grad != 0)


@pytest.mark.parametrize("name", ["simple-cnn", "simple-cnn-bn", "mini-resnet"])
def test_torch_peer_computes_the_same_function(name):
    """The benchmark's PyTorch peer is the same net: given our weights, the same logits."""
    torch = pytest.importorskip(
        "torch", reason="PyTorch (an optional benchmark peer) is not installed"
    )
    from convnet_gpu.models import MODELS
    from convnet_gpu.torch_models import TORCH_MODELS

    assert set(TORCH_MODELS) == set(MODELS)
    net = Net(build_model(name), SoftmaxCrossEntropy(), dtype=np.float64, seed=3).setup(
        4, (1, 28, 28)
    )
    ours = [
        array
        for _, layer in walk(net.layers)
        if not list(layer.children())
        for array in layer.params.values()
    ]
    peer = TORCH_MODELS[name]().double().eval()
    theirs = list(peer.parameters())
    assert [a.size for a in ours] == [p.numel() for p in theirs]
    with torch.no_grad():
        for array, parameter in zip(ours, theirs):  # Dense keeps W as (in, out), torch (out, in)
            parameter.copy_(torch.from_numpy(array.T if array.ndim == 2 else array))
    images = np.random.default_rng(0).standard_normal((4, 1, 28, 28))
    net.forward(net.load_batch(images), train=False)
    with torch.no_grad():
        expected = peer(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(net.blobs[-1].data, expected, rtol=1e-9, atol=1e-9)


def test_mini_resnet_is_net_b():
    layers = build_model("mini-resnet")
    blocks = [layer for layer in layers if isinstance(layer, Residual)]
    assert len(blocks) == 3
    widths = [block.body.layers[0].out_channels for block in blocks]
    strides = [block.body.layers[0].stride for block in blocks]
    assert widths == [32, 64, 128] and strides == [1, 2, 2]
    assert blocks[0].shortcut.layers == []  # identity where the shape is kept
    assert (
        isinstance(blocks[1].shortcut.layers[0], Conv2D)
        and blocks[1].shortcut.layers[0].stride == 2
    )
    net = Net(layers, SoftmaxCrossEntropy()).setup(2, (1, 28, 28))
    # BatchNorm parameters are not decayed; conv weights are
    bn = blocks[0].body.layers[1]
    assert isinstance(bn, BatchNorm) and "running_mean" in bn.buffers
    assert 0 < float(net.params.decay_mask.sum()) < net.params.size


MODEL_FILE = """
# a small residual net
[[layers]]
type = "conv"
out = 8
kernel = 3
pad = 1

[[layers]]
type = "batchnorm"

[[layers]]
type = "relu"

[[layers]]
type = "residual"
body = [{type = "conv", out = 8, kernel = 3, pad = 1}, {type = "batchnorm"}, {type = "relu"},
        {type = "conv", out = 8, kernel = 3, pad = 1}, {type = "batchnorm"}]

[[layers]]
type = "residual"
body = [{type = "conv", out = 16, kernel = 3, stride = 2, pad = 1}, {type = "batchnorm"}]
shortcut = [{type = "conv", out = 16, kernel = 1, stride = 2}]

[[layers]]
type = "global_avgpool"

[[layers]]
type = "dropout"
p = 0.25

[[layers]]
type = "dense"
out = 10

[[layers]]
type = "bias"
"""


def test_model_file_builds_a_residual_net(tmp_path):
    path = tmp_path / "net.toml"
    path.write_text(MODEL_FILE)
    layers = build_model(str(path))
    assert [type(layer).__name__ for layer in layers] == [
        "Conv2D",
        "BatchNorm",
        "ReLU",
        "Residual",
        "Residual",
        "GlobalAvgPool",
        "Dropout",
        "Dense",
        "Bias",
    ]
    assert layers[4].shortcut.layers[0].stride == 2 and layers[6].p == 0.25
    net = Net(layers, SoftmaxCrossEntropy()).setup(2, (1, 12, 12))
    assert net.output_shape == (10,)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ('[[layers]]\ntype = "conv"\nout = 8\nkernel = \n', "not valid TOML"),
        ('[[layers]]\ntype = "convolution"\n', "layers[0].type: unknown layer type 'convolution'"),
        (
            '[[layers]]\ntype = "relu"\n\n[[layers]]\ntype = "conv"\nout = 8\n',
            "layers[1].kernel: missing",
        ),
        (
            '[[layers]]\ntype = "conv"\nout = "8"\nkernel = 3\n',
            "layers[0].out: expected an integer",
        ),
        (
            '[[layers]]\ntype = "dense"\nout = 3\nbias = true\n',
            "layers[0].bias: unknown key for a dense layer",
        ),
        (
            '[[layers]]\ntype = "residual"\nshortcut = []\n',
            "layers[0].body: a residual block needs a body",
        ),
        (
            '[[layers]]\ntype = "dropout"\np = 1.5\n',
            "layers[0]: Dropout probability must be in [0, 1)",
        ),
        ('[[layers]]\ntype = "dense"\nout = 3\ninit = 1\n', "layers[0].init: expected a string"),
        (
            '[[layers]]\ntype = "conv"\nout = 3\nkernel = 3\ninit = "xavier"\n',
            "layers[0].init: unknown weight init 'xavier'; use one of: he, uniform",
        ),
        ('title = "x"\n', "unknown top-level key 'title'"),
        ("", "no [[layers]] tables"),
    ],
)
def test_bad_model_files_name_the_key_at_fault(tmp_path, text, fragment):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ModelFileError) as error:
        load_model_file(path)
    message = str(error.value)
    assert fragment in message and str(path) in message and "\n" not in message.strip()


def test_a_model_file_layer_that_does_not_fit_the_input_is_named(tmp_path):
    path = tmp_path / "big-kernel.toml"
    path.write_text(
        '[[layers]]\ntype = "residual"\nbody = [{type = "conv", out = 4, kernel = 9}]\n'
    )
    layers = load_model_file(path)  # valid as a file: the kernel only fails against a 5x5 input
    with pytest.raises(ValueError, match=r"layer 0 \(Residual.*does not fit a 5x5 input"):
        Net(layers).setup(1, (1, 5, 5))


def test_toml_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[[layers]]\ntype = "relu"\n\n[[layers]]\ntype = relu\n')
    with pytest.raises(ModelFileError, match="line 5"):
        load_model_file(path)


def test_residual_shape_mismatch_says_how_to_fix_it():
    with pytest.raises(ValueError, match="strided 1x1 Conv2D"):
        Net([Residual([Conv2D(4, 3, stride=2, pad=1)])]).setup(1, (4, 8, 8))


def test_dense_without_flatten_names_the_layer():
    with pytest.raises(ValueError, match=r"layer 1 \(Dense\(3\)\).*Flatten"):
        Net([Conv2D(2, 3), Dense(3)]).setup(1, (1, 5, 5))


def test_the_example_model_file_builds():
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "small-resnet.toml"
    net = Net(build_model(str(path)), SoftmaxCrossEntropy()).setup(2, (1, 28, 28))
    assert (
        net.output_shape == (10,) and sum(isinstance(layer, Residual) for layer in net.layers) == 2
    )


def test_the_simple_cnn_recipe_file_is_simple_cnn_bn_without_dropout():
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "simple-cnn-bn-nodropout.toml"
    from_file = [layer.describe() for layer in build_model(str(path))]
    built_in = [layer.describe() for layer in build_model("simple-cnn-bn")]
    assert [d.replace(", init=uniform", "") for d in from_file] == [
        d for d in built_in if not d.startswith("Dropout")
    ]
    assert sum("init=uniform" in d for d in from_file) == 4  # both convolutions, both dense
