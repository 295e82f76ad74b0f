"""Each user's training positives — the items ranking must not show again — in one CSR structure.

Built once from the training split (:meth:`SeenItems.from_training`), it is what the evaluation, the
serving bundle and the batch stage all exclude.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from features.contract import Col


class SeenItems:
    """Per-user sets of item indices in CSR form (``indptr`` (n_users+1,), ``indices``)."""

    def __init__(self, indptr: np.ndarray, indices: np.ndarray) -> None:
        self.indptr = np.asarray(indptr, dtype=np.int64)
        self.indices = np.asarray(indices, dtype=np.int64)

    @classmethod
    def from_pairs(cls, users: np.ndarray, items: np.ndarray, n_users: int) -> SeenItems:
        pairs = np.unique(
            np.stack([users.astype(np.int64), items.astype(np.int64)], axis=1), axis=0
        )
        counts = (
            np.bincount(pairs[:, 0], minlength=n_users)
            if len(pairs)
            else np.zeros(n_users, np.int64)
        )
        return cls(
            np.r_[0, np.cumsum(counts)], pairs[:, 1] if len(pairs) else np.zeros(0, np.int64)
        )

    @property
    def n_users(self) -> int:
        return len(self.indptr) - 1

    def __getitem__(self, user: int) -> np.ndarray:
        return self.indices[self.indptr[user] : self.indptr[user + 1]]

    def save(self, path) -> None:
        np.savez(path, indptr=self.indptr, indices=self.indices)

    @classmethod
    def load(cls, path) -> SeenItems:
        with np.load(path) as z:
            return cls(z["indptr"], z["indices"])

    @classmethod
    def from_training(cls, train: pl.DataFrame, n_users: int, min_level: int = 1) -> SeenItems:
        """The (user, item) pairs of the training split with ``level ≥ min_level``."""
        pos = train.filter(pl.col(Col.LEVEL) >= min_level)
        return cls.from_pairs(pos[Col.USER_IDX].to_numpy(), pos[Col.ITEM_IDX].to_numpy(), n_users)
