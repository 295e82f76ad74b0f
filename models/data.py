"""Fast mini-batches from in-memory tensors (no per-row collation)."""

from __future__ import annotations

import torch
from torch.utils.data import IterableDataset


class TensorBatches(IterableDataset):
    """Yields tuples of aligned slices of ``tensors``, ``batch_size`` rows each.

    With ``shuffle`` every pass draws a fresh permutation from a generator seeded by ``seed`` and
    the pass number, so training is reproducible.
    """

    def __init__(
        self, tensors: tuple[torch.Tensor, ...], batch_size: int, shuffle: bool, seed: int = 0
    ):
        if not tensors or any(t.shape[0] != tensors[0].shape[0] for t in tensors):
            raise ValueError("tensors must be non-empty and share their first dimension")
        self.tensors = tensors
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self._epoch = 0

    def __len__(self) -> int:
        return -(-self.tensors[0].shape[0] // self.batch_size)

    def __iter__(self):
        n = self.tensors[0].shape[0]
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed + self._epoch)
            order = torch.randperm(n, generator=gen)
            self._epoch += 1
        else:
            order = None
        for start in range(0, n, self.batch_size):
            if order is None:
                yield tuple(t[start : start + self.batch_size] for t in self.tensors)
            else:
                idx = order[start : start + self.batch_size]
                yield tuple(t[idx] for t in self.tensors)
