"""Sets of (user, item) pairs and uniform negative sampling outside them.

One rule for every sampled negative in the project: a negative of user u is drawn uniformly from the
items outside a given pair set — the user's *training* positives for the models
(:mod:`models.negatives`), the items the user had rated *by then* for MovieLens' sampled
impressions (:mod:`features.sources.movielens`). Nothing held out (validation, test, the future)
may shape the pool: excluding a user's test items from its negatives would tell the model which
items are held out.
"""

from __future__ import annotations

import numpy as np


class PairSet:
    """(user, item) index pairs as sorted int64 keys ``user·n_items + item``, with an optional time
    per pair (the earliest, when a pair repeats).

    >>> s = PairSet(np.array([0, 0, 1]), np.array([2, 0, 1]), n_items=3)
    >>> s.contains(np.array([0, 0, 1]), np.array([2, 1, 1])).tolist()
    [True, False, True]
    """

    def __init__(
        self,
        users: np.ndarray,
        items: np.ndarray,
        n_items: int,
        times: np.ndarray | None = None,
    ) -> None:
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        if users.shape != items.shape or users.ndim != 1:
            raise ValueError("users and items must be aligned 1-d arrays")
        if items.size and (items.min() < 0 or items.max() >= n_items):
            raise ValueError(f"item indices must lie in [0, {n_items})")
        self.n_items = int(n_items)
        keys = users * self.n_items + items
        if times is None:
            self.keys = np.unique(keys)
            self.times = None
        else:
            times = np.asarray(times)
            order = np.lexsort((times, keys))  # by key, earliest time first
            first = np.r_[True, np.diff(keys[order]) != 0]
            self.keys = keys[order][first]
            self.times = times[order][first]

    def __len__(self) -> int:
        return int(self.keys.size)

    def _find(self, users: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        key = np.asarray(users, dtype=np.int64) * self.n_items + np.asarray(items, dtype=np.int64)
        if self.keys.size == 0:
            return np.zeros(key.shape, bool), np.zeros(key.shape, np.int64)
        idx = np.minimum(np.searchsorted(self.keys, key), self.keys.size - 1)
        return self.keys[idx] == key, idx

    def contains(
        self, users: np.ndarray, items: np.ndarray, at: np.ndarray | None = None
    ) -> np.ndarray:
        """Whether each (user, item) pair is in the set; with ``at`` (aligned times, needs pair
        times), whether it entered the set at or before ``at``."""
        found, idx = self._find(users, items)
        if at is None:
            return found
        if self.times is None:
            raise ValueError("this pair set has no times")
        return found & (self.times[idx] <= np.asarray(at))

    def counts_per_user(self, n_users: int) -> np.ndarray:
        """Pairs per user, shape (n_users,)."""
        return np.bincount(self.keys // self.n_items, minlength=n_users)

    def sample_outside(
        self,
        users: np.ndarray,
        k: int,
        rng: np.random.Generator,
        at: np.ndarray | None = None,
    ) -> np.ndarray:
        """``k`` items per row of ``users``, uniform over the items whose pair with that user is not
        in the set (with ``at``: not in it by that time); shape (len(users), k). Rejection sampling:
        redraw only the rejected draws until none is left."""
        users = np.asarray(users, dtype=np.int64)
        if k == 0 or users.size == 0:
            return np.empty((users.size, k), dtype=np.int64)
        if self.keys.size and np.bincount(self.keys // self.n_items).max() >= self.n_items:
            full = np.flatnonzero(np.bincount(self.keys // self.n_items) >= self.n_items)
            if np.isin(users, full).any():
                raise ValueError("a user holds every item: there is no item to sample outside")
        owner = np.repeat(users, k)
        when = None if at is None else np.repeat(np.asarray(at), k)
        draws = rng.integers(0, self.n_items, owner.size)
        todo = np.flatnonzero(self.contains(owner, draws, when))
        while todo.size:
            draws[todo] = rng.integers(0, self.n_items, todo.size)
            todo = todo[
                self.contains(owner[todo], draws[todo], None if when is None else when[todo])
            ]
        return draws.reshape(users.size, k)
