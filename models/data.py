"""Training data in memory: aligned index arrays and fast mini-batches over them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import torch
from torch.utils.data import IterableDataset

from features.contract import Col


@dataclass
class Interactions:
    """Aligned index arrays of impression rows: user, item and deepest level reached (0..T)."""

    users: np.ndarray
    items: np.ndarray
    levels: np.ndarray
    propensity: np.ndarray | None = None  # θ per row, for losses that weight by it

    @classmethod
    def from_frame(cls, frame: pl.DataFrame) -> Interactions:
        """The rows of a feature split (``user_idx, item_idx, level[, propensity]``)."""
        propensity = frame[Col.PROPENSITY].to_numpy() if Col.PROPENSITY in frame.columns else None
        return cls(
            frame[Col.USER_IDX].to_numpy(),
            frame[Col.ITEM_IDX].to_numpy(),
            frame[Col.LEVEL].to_numpy(),
            propensity,
        )

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """(users, items, levels) as int64 tensors, plus the float propensity when present."""
        ids = tuple(
            torch.from_numpy(np.array(a, dtype=np.int64))
            for a in (self.users, self.items, self.levels)
        )
        if self.propensity is None:
            return ids
        return (*ids, torch.from_numpy(np.array(self.propensity, dtype=np.float32)))


@dataclass
class Pairs:
    """Aligned (user, item) index arrays of positive pairs."""

    users: np.ndarray
    items: np.ndarray

    def __post_init__(self) -> None:
        self.users = np.asarray(self.users, dtype=np.int64)
        self.items = np.asarray(self.items, dtype=np.int64)
        if self.users.shape != self.items.shape or self.users.ndim != 1:
            raise ValueError("users and items must be aligned 1-d arrays")


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
