"""Scoring a trained net: accuracy, loss, per-class accuracy and the confusion matrix."""

from __future__ import annotations

import numpy as np

from .data import MinibatchLoader
from .replay import StepRunner


def evaluate_net(net, images, labels, num_classes: int, cuda_graph: str = "auto") -> dict:
    """Inference-mode pass over (images, labels); logits come to the host batch by batch. The
    forward pass of full batches is replayed from a CUDA graph where the backend has them."""
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)  # rows: true, cols: predicted
    loss_sum = 0.0
    forward = StepRunner(
        net.backend, lambda n: net.forward(n, train=False), net.batch_size, cuda_graph
    )
    for batch_images, batch_labels in MinibatchLoader(images, labels, net.batch_size).epoch():
        n = net.load_batch(batch_images, batch_labels)
        forward.run(n)
        loss_sum += float(net.loss.loss) * n
        predicted = net.backend.to_host(net.blobs[-1].data[:n]).argmax(axis=1)
        np.add.at(confusion, (batch_labels, predicted), 1)
    per_class_total = confusion.sum(axis=1)
    per_class = np.divide(
        np.diag(confusion), per_class_total, out=np.zeros(num_classes), where=per_class_total > 0
    )
    total = int(confusion.sum())
    return {
        "accuracy": float(np.trace(confusion)) / total,
        "loss": loss_sum / total,
        "per_class_accuracy": per_class.tolist(),
        "confusion": confusion.tolist(),
        "images": total,
    }


def format_report(report: dict, classes) -> str:
    lines = [
        f"test accuracy {report['accuracy']:.4f}   test loss {report['loss']:.4f}   "
        f"({report['images']} images)",
        "",
        "per-class accuracy:",
    ]
    width = max(len(name) for name in classes)
    lines += [
        f"  {name:<{width}}  {accuracy:.4f}"
        for name, accuracy in zip(classes, report["per_class_accuracy"])
    ]
    lines += ["", "confusion matrix (rows: true class, columns: predicted):"]
    lines.append(" " * (width + 2) + "".join(f"{i:>6}" for i in range(len(classes))))
    for i, (name, row) in enumerate(zip(classes, report["confusion"])):
        lines.append(f"  {name:<{width}}" + "".join(f"{count:>6}" for count in row) + f"   {i}")
    return "\n".join(lines)
