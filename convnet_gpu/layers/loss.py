"""Softmax cross-entropy on logits, with the row max subtracted (log-sum-exp) for stability."""

from __future__ import annotations

from ..numerics import softmax_into
from .base import BatchRows


class SoftmaxCrossEntropy:
    """loss = mean_i [ log sum_k exp(z_ik) - sum_k t_ik z_ik ];  d loss / d z = (softmax(z) - t) / n

    The target t is the one-hot label, or with label smoothing e: (1 - e) * onehot + e / K.
    Everything, including the target matrix and the loss scalar, lives in buffers allocated in
    setup, so the step makes no host round trip: `loss` is a 0-d device array. The mean is over
    the whole batch (rows.total, see layers.base.BatchRows): a worker computing a slice of it
    gives its share of the mean and of the gradient.
    """

    name = "SoftmaxCrossEntropy"

    def __init__(self, label_smoothing: float = 0.0):
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)
        self.rows = BatchRows()  # replaced by the Net's

    def _batch_rows(self, n: int) -> int:
        return self.rows.total or n  # 0: used outside a Net

    def setup(self, backend, input_shape, batch_size, dtype):
        if len(input_shape) != 1:
            raise ValueError(
                f"SoftmaxCrossEntropy expects flat (classes,) logits, got {input_shape}"
            )
        self.backend = backend
        classes = input_shape[0]
        xp = backend.xp
        self.class_ids = backend.asarray(xp.arange(classes, dtype="int32").reshape(1, classes))
        self.probs = backend.empty((batch_size, classes), dtype)
        self.target = backend.empty((batch_size, classes), dtype)
        self.scratch = backend.empty((batch_size, classes), dtype)
        self.row_max = backend.empty((batch_size, 1), dtype)
        self.row_sum = backend.empty((batch_size, 1), dtype)
        self.per_sample = backend.empty((batch_size,), dtype)
        self.loss = backend.zeros((), dtype)
        self.predicted = backend.empty((batch_size,), "int64")
        self.hits = backend.empty((batch_size,), "bool")
        self.correct = backend.zeros((), "int64")

    def forward(self, logits, labels):
        """Writes and returns self.loss (0-d device array): the mean loss over the n rows."""
        xp = self.backend.xp
        n = logits.shape[0]
        probs, target, per_sample = self.probs[:n], self.target[:n], self.per_sample[:n]
        row_sum = self.row_sum[:n]
        xp.equal(self.class_ids, labels.reshape(n, 1), out=target)
        if self.label_smoothing:
            classes = target.shape[1]
            xp.multiply(target, 1.0 - self.label_smoothing, out=target)
            xp.add(target, self.label_smoothing / classes, out=target)
        softmax_into(xp, logits, probs, self.row_max[:n], row_sum)
        # per-sample loss = row_max + log(row_sum) - sum_k t_k z_k  (row_sum >= 1: the log is safe)
        xp.multiply(logits, target, out=self.scratch[:n])
        xp.sum(self.scratch[:n], axis=1, out=per_sample)  # sum_k t_k z_k
        xp.subtract(self.row_max[:n, 0], per_sample, out=per_sample)
        xp.log(row_sum, out=row_sum)
        xp.add(per_sample, row_sum[:, 0], out=per_sample)
        xp.sum(per_sample, out=self.loss)
        xp.multiply(self.loss, 1.0 / self._batch_rows(n), out=self.loss)
        return self.loss

    def backward(self, d_logits):
        xp = self.backend.xp
        n = d_logits.shape[0]
        xp.subtract(self.probs[:n], self.target[:n], out=d_logits)
        xp.multiply(d_logits, 1.0 / self._batch_rows(n), out=d_logits)

    def count_correct(self, logits, labels):
        """Writes and returns self.correct (0-d int64 device array): rows whose argmax is right."""
        xp = self.backend.xp
        n = logits.shape[0]
        xp.argmax(logits, axis=1, out=self.predicted[:n])
        xp.equal(self.predicted[:n], labels, out=self.hits[:n])
        xp.sum(self.hits[:n], out=self.correct)
        return self.correct
