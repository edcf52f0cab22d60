"""Building Trainers for tests: tiny data, tiny nets, settings in one call."""

from __future__ import annotations

from convnet_gpu.optim import SGD
from convnet_gpu.run import TrainingData
from convnet_gpu.rundir import RunDir
from convnet_gpu.settings import RunSettings
from convnet_gpu.train import Trainer


def build_trainer(
    net, dataset, out_dir=None, optimizer=None, meta=None, cuda_graph="auto", **settings
):
    """A Trainer of `net` on `dataset` with RunSettings(**settings) (lr 0.01 unless given) and
    SGD at that lr with momentum 0.9 unless an optimizer is given; quiet, no progress bar."""
    settings = RunSettings(**{"lr": 0.01, **settings})
    if optimizer is None:
        optimizer = SGD(settings.lr, momentum=settings.momentum).setup(net)
    run_dir = RunDir(out_dir) if out_dir is not None else None
    data = TrainingData.split(dataset, settings)
    return Trainer(
        net, optimizer, data, settings, run_dir, log=lambda line: None, progress=False, meta=meta,
        cuda_graph=cuda_graph,
    )  # fmt: skip
