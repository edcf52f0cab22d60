"""Net A with BatchNorm trained in PyTorch on Fashion-MNIST: a peer for choosing CPU recipes.

Runs the same net, data (convnet_gpu's loader and normalization), SGD with momentum, weight
decay off for biases and BatchNorm, cosine schedule per step, label smoothing and random
horizontal flips as `convnet-gpu train`, so a recipe can be tried at PyTorch's speed and the
two libraries compared epoch by epoch. Needs torch (never a dependency of convnet_gpu):

    python scripts/torch_recipe.py --lr 0.05 --label-smoothing 0.1 --init he --threads 1
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from convnet_gpu.run import load_dataset  # noqa: E402
from convnet_gpu.torch_models import simple_cnn_bn  # noqa: E402


def he_normal_(net: nn.Module) -> None:
    """convnet_gpu's default init: normal weights with std sqrt(2 / fan_in), zero biases."""
    for module in net.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / module.weight[0].numel()))
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--label-smoothing", type=float, default=0.0)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--no-flip", dest="flip", action="store_false")
    parser.add_argument("--init", choices=["torch", "he"], default="torch")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    data = load_dataset("fashion-mnist")
    train_x, train_y = (
        torch.from_numpy(data.train_x),
        torch.from_numpy(data.train_y.astype(np.int64)),
    )
    test_x, test_y = torch.from_numpy(data.test_x), torch.from_numpy(data.test_y.astype(np.int64))
    net = simple_cnn_bn(dropout=args.dropout)
    if args.init == "he":
        he_normal_(net)
    weights = [p for p in net.parameters() if p.ndim > 1]
    others = [p for p in net.parameters() if p.ndim == 1]
    optimizer = torch.optim.SGD(
        [
            {"params": weights, "weight_decay": args.weight_decay},
            {"params": others, "weight_decay": 0.0},
        ],
        lr=args.lr,
        momentum=0.9,
    )
    count = len(train_y)
    total_steps = args.epochs * math.ceil(count / args.batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total_steps))
    )
    loss_fn = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    generator = torch.Generator().manual_seed(args.seed)
    print(f"{vars(args)}", flush=True)
    for epoch in range(1, args.epochs + 1):
        net.train()
        start, loss_sum = time.perf_counter(), 0.0
        order = torch.randperm(count, generator=generator)
        for first in range(0, count, args.batch_size):
            rows = order[first : first + args.batch_size]
            images, labels = train_x[rows], train_y[rows]
            if args.flip:
                flipped = torch.rand(len(rows), generator=generator) < 0.5
                images = torch.where(flipped[:, None, None, None], images.flip(3), images)
            optimizer.zero_grad()
            loss = loss_fn(net(images), labels)
            loss.backward()
            optimizer.step()
            schedule.step()
            loss_sum += loss.item() * len(rows)
        net.eval()
        with torch.no_grad():
            correct = sum(
                int((net(test_x[i : i + 1000]).argmax(1) == test_y[i : i + 1000]).sum())
                for i in range(0, len(test_y), 1000)
            )
        print(
            f"epoch {epoch}  train loss {loss_sum / count:.4f}  "
            f"test acc {correct / len(test_y):.4f}"
            f"  {time.perf_counter() - start:.1f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()
