"""Training data in memory: aligned index arrays and fast mini-batches over them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import scipy.sparse as sp
import torch
import torch.distributed as dist
from torch.utils.data import IterableDataset

from features.contract import Col


def rank_share(rows: torch.Tensor) -> torch.Tensor:
    """This rank's part of one global batch ``rows`` under distributed training (the whole batch
    otherwise): ``tensor_split(rows, world)[rank]``, so the ranks' parts are disjoint, differ in
    size by at most one row, and together are the batch one process would have drawn."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return rows
    return torch.tensor_split(rows, dist.get_world_size())[dist.get_rank()]


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


@dataclass
class Interactions:
    """An interaction table as aligned index arrays: user, item and deepest level reached (0..T).

    Level 0 rows are logged exposures without feedback (impressions); level c ≥ 1 means "reached
    level c or deeper" (for one-level data, 1 = interacted). ``n_users`` / ``n_items`` are the
    sizes of the id vocabularies (every item of the catalogue, also those without a row here);
    when not given they are the largest index + 1.

    >>> t = Interactions(np.array([0, 0, 2]), np.array([1, 3, 1]), np.array([1, 0, 2]))
    >>> (t.n_users, t.n_items, t.positives().users.tolist())
    (3, 4, [0, 2])
    """

    users: np.ndarray
    items: np.ndarray
    levels: np.ndarray
    propensity: np.ndarray | None = None  # θ per row, for losses that weight by it
    n_users: int | None = None
    n_items: int | None = None

    def __post_init__(self) -> None:
        self.users = np.asarray(self.users, dtype=np.int64)
        self.items = np.asarray(self.items, dtype=np.int64)
        self.levels = np.asarray(self.levels, dtype=np.int64)
        if not (self.users.shape == self.items.shape == self.levels.shape) or self.users.ndim != 1:
            raise ValueError("users, items and levels must be aligned 1-d arrays")
        if self.propensity is not None and np.shape(self.propensity) != self.users.shape:
            raise ValueError("propensity must be aligned with the rows")
        if self.n_users is None:
            self.n_users = int(self.users.max()) + 1 if self.users.size else 0
        if self.n_items is None:
            self.n_items = int(self.items.max()) + 1 if self.items.size else 0
        if self.users.size and (self.users.min() < 0 or self.users.max() >= self.n_users):
            raise ValueError(f"user indices must lie in [0, {self.n_users})")
        if self.items.size and (self.items.min() < 0 or self.items.max() >= self.n_items):
            raise ValueError(f"item indices must lie in [0, {self.n_items})")

    @classmethod
    def from_frame(
        cls, frame: pl.DataFrame, n_users: int | None = None, n_items: int | None = None
    ) -> Interactions:
        """The rows of a feature split (``user_idx, item_idx[, level][, propensity]``); without a
        ``level`` column every row is a positive (level 1)."""
        propensity = frame[Col.PROPENSITY].to_numpy() if Col.PROPENSITY in frame.columns else None
        levels = (
            frame[Col.LEVEL].to_numpy()
            if Col.LEVEL in frame.columns
            else np.ones(frame.height, np.int64)
        )
        return cls(
            frame[Col.USER_IDX].to_numpy(),
            frame[Col.ITEM_IDX].to_numpy(),
            levels,
            propensity,
            n_users,
            n_items,
        )

    @classmethod
    def encode(
        cls, users: np.ndarray, items: np.ndarray, levels: np.ndarray | None = None
    ) -> tuple[Interactions, np.ndarray, np.ndarray]:
        """A table from raw ids: (interactions, user ids by index, item ids by index); the
        vocabularies are the sorted distinct ids, every row a positive when ``levels`` is None."""
        user_ids, u = np.unique(np.asarray(users), return_inverse=True)
        item_ids, i = np.unique(np.asarray(items), return_inverse=True)
        lev = np.ones(u.size, np.int64) if levels is None else np.asarray(levels)
        return cls(u, i, lev, None, user_ids.size, item_ids.size), user_ids, item_ids

    def __len__(self) -> int:
        return int(self.users.size)

    @property
    def n_levels(self) -> int:
        """The deepest level present (at least 1)."""
        return max(1, int(self.levels.max())) if self.levels.size else 1

    def take(self, rows: np.ndarray) -> Interactions:
        """The selected rows (a boolean mask or indices), same vocabularies."""
        prop = None if self.propensity is None else np.asarray(self.propensity)[rows]
        return Interactions(
            self.users[rows],
            self.items[rows],
            self.levels[rows],
            prop,
            self.n_users,
            self.n_items,
        )

    def positives(self, level: int = 1) -> Interactions:
        """The rows that reached ``level`` or deeper."""
        return self.take(self.levels >= level)

    def matrix(self, level: int = 1) -> sp.csr_matrix:
        """(n_users, n_items) float32 CSR with 1 for every pair with a row of level ≥ ``level``."""
        pos = self.positives(level)
        m = sp.csr_matrix(
            (np.ones(len(pos), np.float32), (pos.users, pos.items)),
            shape=(self.n_users, self.n_items),
        )
        m.sum_duplicates()
        m.data[:] = 1.0
        return m

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
    the pass number, so training is reproducible. With ``shard`` (training batches) each rank of a
    distributed run yields only its :func:`rank_share` of every global batch of ``batch_size``
    rows — the same permutation on every rank, so the ranks together see each row once per pass;
    a last batch with fewer rows than ranks is dropped (no rank may get an empty step).
    """

    def __init__(
        self,
        tensors: tuple[torch.Tensor, ...],
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        shard: bool = False,
    ):
        if not tensors or any(t.shape[0] != tensors[0].shape[0] for t in tensors):
            raise ValueError("tensors must be non-empty and share their first dimension")
        self.tensors = tensors
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.shard = shard
        self._epoch = 0

    def __len__(self) -> int:
        return -(-self.tensors[0].shape[0] // self.batch_size)

    def __iter__(self):
        n = self.tensors[0].shape[0]
        world = _world() if self.shard else 1
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed + self._epoch)
            order = torch.randperm(n, generator=gen)
            self._epoch += 1
        else:
            order = None
        for start in range(0, n, self.batch_size):
            if min(self.batch_size, n - start) < world:
                return
            if order is None and world == 1:
                yield tuple(t[start : start + self.batch_size] for t in self.tensors)
                continue
            idx = (
                torch.arange(start, min(start + self.batch_size, n))
                if order is None
                else order[start : start + self.batch_size]
            )
            if self.shard:
                idx = rank_share(idx)
            yield tuple(t[idx] for t in self.tensors)


class UserBatches(IterableDataset):
    """Yields, per step, every row of ``batch_users`` users (aligned slices of ``tensors``, whose
    first tensor holds the user of each row).

    Each pass draws a fresh permutation of the users from a generator seeded by ``seed`` and the
    pass number; a user's rows stay together, so a step can score its users against the whole
    catalogue once and reuse that for all their rows. In a distributed run each rank takes its
    :func:`rank_share` of every step's users (a last step with fewer users than ranks is dropped).
    """

    def __init__(self, tensors: tuple[torch.Tensor, ...], batch_users: int, seed: int = 0):
        if not tensors or any(t.shape[0] != tensors[0].shape[0] for t in tensors):
            raise ValueError("tensors must be non-empty and share their first dimension")
        users = tensors[0]
        order = torch.argsort(users, stable=True)
        self.tensors = tuple(t[order] for t in tensors)
        self.users, counts = torch.unique_consecutive(self.tensors[0], return_counts=True)
        self.starts = torch.cumsum(counts, 0) - counts
        self.counts = counts
        self.batch_users = batch_users
        self.seed = seed
        self._epoch = 0

    def __len__(self) -> int:
        return -(-self.users.numel() // self.batch_users)

    def __iter__(self):
        gen = torch.Generator().manual_seed(self.seed + self._epoch)
        self._epoch += 1
        perm = torch.randperm(self.users.numel(), generator=gen)
        world = _world()
        for lo in range(0, perm.numel(), self.batch_users):
            pick = perm[lo : lo + self.batch_users]
            if pick.numel() < world:
                return
            pick = rank_share(pick)
            rows = torch.cat(
                [
                    torch.arange(int(s), int(s) + int(c))
                    for s, c in zip(self.starts[pick], self.counts[pick], strict=True)
                ]
            )
            yield tuple(t[rows] for t in self.tensors)
