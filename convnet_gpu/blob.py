"""Blob: a data array and its gradient, allocated once (Caffe's data/diff pair)."""

from __future__ import annotations


class Blob:
    """`data` and `grad` hold a full batch; a smaller batch uses views of the first n rows."""

    def __init__(self, data, grad=None):
        self.data = data
        self.grad = grad

    @classmethod
    def allocate(cls, backend, shape, dtype, with_grad=True) -> Blob:
        grad = backend.zeros(shape, dtype) if with_grad else None
        return cls(backend.zeros(shape, dtype), grad)

    @property
    def shape(self) -> tuple:
        return tuple(self.data.shape)

    @property
    def nbytes(self) -> int:
        return self.data.nbytes + (self.grad.nbytes if self.grad is not None else 0)

    def rows(self, n: int):
        """(data, grad) views of the first n samples; grad is None when the blob has none."""
        return self.data[:n], (self.grad[:n] if self.grad is not None else None)

    def __repr__(self) -> str:
        return f"Blob(shape={self.shape}, dtype={self.data.dtype}, grad={self.grad is not None})"
