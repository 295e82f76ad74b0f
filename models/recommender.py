"""The library's front door: fit a model on an interaction table, get exact top-k back.

The shape users know from ``implicit`` and RecTools::

    from models.data import Interactions
    from models.gnolr.recommender import GNOLRRecommender

    train, user_ids, item_ids = Interactions.encode(frame["user"], frame["item"])
    model = GNOLRRecommender().fit(train)
    items, scores = model.recommend(np.arange(train.n_users), k=10)  # seen items filtered
    item_ids[items]                                                    # back to raw ids

Every model implements ``_fit`` and ``score`` (catalogue scores of some users); the ranking — exact
top-k, each user's training positives excluded, an optional candidate allow-list — is done once,
here, for all of them: the comparison command, the tuning command, the pipeline stages and a
notebook all go through :meth:`Recommender.recommend`.

Iterative models accept a ``validation`` (built by the caller, e.g.
:class:`evaluation.validation.RankingNDCG`: NDCG@K of validation positives from this very
``recommend``) for early stopping and for choosing the epoch; models never import evaluation code.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Literal, Protocol, Self

import numpy as np
import scipy.sparse as sp

from models.data import Interactions
from models.ranking import top_k

NO_ITEM = -1  # padding of a top-k row with fewer eligible items than k


class RankingValidation(Protocol):
    """What iterative models call after a validation epoch: ``validation(model)`` → metrics named
    without ``valid/`` (its ``monitor`` among them, as ``valid/<name>``); ``kind = "ranking"``
    tells a model to pass itself rather than its validation logits."""

    kind: Literal["ranking"]
    monitor: str
    mode: Literal["max", "min"]

    def __call__(self, model: Recommender) -> dict[str, float]: ...


class Recommender(ABC):
    """Base of every top-k model: ``fit`` → ``_fit``; ``recommend`` ranks ``score``.

    After ``fit``: ``n_users``, ``n_items``, ``seen`` (CSR of each user's training positives, the
    items ``filter_seen`` removes) and ``fit_info`` (what the fit did: seconds, epochs, …).
    Models of graded feedback rank by ``rank_level`` (0-based; None = the deepest level); the others
    rank every level alike.
    """

    rank_level: int | None = None

    def __init__(self) -> None:
        self.n_users = 0
        self.n_items = 0
        self.seen: sp.csr_matrix | None = None
        self.fit_info: dict[str, Any] = {}

    def fit(
        self,
        train: Interactions,
        valid: Interactions | None = None,
        validation: RankingValidation | Any | None = None,
    ) -> Self:
        """Fit on ``train`` (positives: level ≥ 1; level-0 rows are logged exposures, which only
        models that learn from them read). ``valid`` rows and ``validation`` choose the epoch of
        iterative models; closed-form models ignore them. Returns the fitted model."""
        self.n_users, self.n_items = int(train.n_users), int(train.n_items)
        self.seen = train.matrix(1)
        self._fit(train, valid, validation)
        return self

    @abstractmethod
    def _fit(self, train: Interactions, valid: Interactions | None, validation) -> None: ...

    @abstractmethod
    def score(self, users: np.ndarray) -> np.ndarray:
        """Scores of every item for ``users``, shape (len(users), n_items); higher is better."""

    def recommend(
        self,
        users: np.ndarray,
        k: int = 10,
        filter_seen: bool = True,
        items: np.ndarray | None = None,
        batch_size: int = 1024,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` (item indices, scores) per user, each (len(users), k), best first; ties
        go to the lower item index.

        ``filter_seen`` drops each user's training positives; ``items`` (indices), when given, is
        the allow-list of candidates (e.g. the items present in train, as the MS Recommenders
        protocol ranks). Rows with fewer than ``k`` eligible items are padded with -1 / -inf.
        """
        if self.seen is None:
            raise RuntimeError("fit the model before recommend")
        if k < 1:
            raise ValueError("k must be at least 1")
        users = np.atleast_1d(np.asarray(users, dtype=np.int64))
        blocked = None
        if items is not None:
            blocked = np.ones(self.n_items, bool)
            blocked[np.asarray(items, dtype=np.int64)] = False
        out_items = np.full((users.size, k), NO_ITEM, np.int64)
        out_scores = np.full((users.size, k), -np.inf, np.float64)
        for lo in range(0, users.size, batch_size):
            batch = users[lo : lo + batch_size]
            s = np.array(self.score(batch), dtype=np.float64)
            if blocked is not None:
                s[:, blocked] = -np.inf
            if filter_seen:
                seen = self.seen[batch].tocoo()
                s[seen.row, seen.col] = -np.inf
            top = top_k(s, k)
            vals = np.take_along_axis(s, top, axis=1)
            ok = np.isfinite(vals)
            width = top.shape[1]
            out_items[lo : lo + batch.size, :width] = np.where(ok, top, NO_ITEM)
            out_scores[lo : lo + batch.size, :width] = np.where(ok, vals, -np.inf)
        return out_items, out_scores


class Popularity(Recommender):
    """score(u, i) at level c = number of training users of item i with level ≥ c, the same for
    everyone (ties go to the lower item index); ``rank_level`` picks c (default: the deepest)."""

    def __init__(self, rank_level: int | None = None) -> None:
        super().__init__()
        self.rank_level = rank_level

    def _fit(self, train: Interactions, valid, validation) -> None:
        self.counts = np.stack(
            [
                np.asarray(train.matrix(c).sum(axis=0)).ravel().astype(np.float64)
                for c in range(1, train.n_levels + 1)
            ],
            axis=1,
        )  # (n_items, T)

    def pair_scores(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Level scores of aligned (user, item) pairs, shape (n, T)."""
        return self.counts[np.asarray(items)]

    def score(self, users: np.ndarray) -> np.ndarray:
        level = self.counts.shape[1] - 1 if self.rank_level is None else self.rank_level
        return np.broadcast_to(self.counts[:, level], (len(users), self.n_items))
