"""Baselines as *scorers* for the evaluate stage: popularity and per-level BCE two-towers.

Every model here, and :class:`models.gnolr.network.GNOLREmbeddings`, is a *scorer*: ``logits(users, items)``
gives one score per level (monotone in P(level ≥ c)) and ``level_vectors(c)`` gives the (query,
item) vectors whose inner product ranks the catalogue for level c through the shared retrieval path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from models.gnolr.network import GNOLREmbeddings


class Scorer(Protocol):
    n_levels: int

    def logits(self, users: np.ndarray, items: np.ndarray) -> np.ndarray: ...

    def level_vectors(self, level: int) -> tuple[np.ndarray, np.ndarray]: ...


def popularity_counts(
    items: np.ndarray, levels: np.ndarray, n_items: int, n_levels: int
) -> np.ndarray:
    """counts[i, c−1] = training rows of item i with level ≥ c, shape (n_items, T)."""
    counts = np.zeros((n_items, n_levels), dtype=np.float64)
    for c in range(1, n_levels + 1):
        counts[:, c - 1] = np.bincount(items[levels >= c], minlength=n_items)
    return counts


def popularity_order(counts: np.ndarray) -> np.ndarray:
    """Item indices by ``counts`` (n_items,), most popular first; ties go to the lower index."""
    counts = np.asarray(counts)
    return np.lexsort((np.arange(counts.size), -counts))


class PopularityScorer:
    """Score of item i at level c = its training count at level ≥ c, the same for every user."""

    def __init__(self, counts: np.ndarray, n_users: int) -> None:
        self.counts = np.asarray(counts, dtype=np.float64)  # (n_items, T)
        self.n_levels = self.counts.shape[1]
        self.n_users = n_users

    def logits(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.counts[items]

    def level_vectors(self, level: int) -> tuple[np.ndarray, np.ndarray]:
        users = np.ones((self.n_users, 1), np.float32)
        return users, np.ascontiguousarray(self.counts[:, level : level + 1], dtype=np.float32)


class PerLevelScorer:
    """T independent single-level models (one BCE two-tower per level, the usual industry set-up)."""

    def __init__(self, models: Sequence[GNOLREmbeddings]) -> None:
        if any(m.n_levels != 1 for m in models):
            raise ValueError("each per-level model must have exactly one level")
        self.models = list(models)
        self.n_levels = len(models)

    def logits(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return np.concatenate([m.logits(users, items) for m in self.models], axis=1)

    def level_vectors(self, level: int) -> tuple[np.ndarray, np.ndarray]:
        return self.models[level].level_vectors(0)
