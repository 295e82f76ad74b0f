"""Multi-objective re-ranking: relevance blended with P[Love] (methods.md §3, "Use").

    score(u, i) = w_rel · relevance(u, i) + w_love · logit(P[Love](u, i))

``relevance`` is GNOLR's deepest-level logit l_T = γ_T·s_T − a_T, i.e. the retrieval inner product
minus a_T. Re-ranking sorts candidates by score with a *stable* sort, so ties keep the candidates'
incoming (retrieval) order; with w_love = 0 and w_rel > 0 the score is a monotone map of relevance
and the result is exactly the relevance ranking. Weights come per request.

Only the candidates the retriever returns are re-ranked (top ``n_candidates`` by relevance), which
is itself a guardrail: the love objective can reorder relevant items, never pull in irrelevant ones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

NO_ITEM = -1
LOVE_EPS = 1e-6


@dataclass(frozen=True)
class BlendWeights:
    """w_rel and w_love of one request; both finite and ≥ 0."""

    relevance: float = 1.0
    love: float = 0.0

    def __post_init__(self) -> None:
        for name in ("relevance", "love"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ValueError(
                    f"blend weight {name!r} must be a finite number ≥ 0, got {value!r}"
                )


def _logit(p: np.ndarray, eps: float = LOVE_EPS) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps)
    return np.log(p) - np.log1p(-p)


def blend_scores(
    relevance: np.ndarray, love: np.ndarray | None, weights: BlendWeights
) -> np.ndarray:
    """w_rel·relevance + w_love·logit(clip(love, ε, 1 − ε)); ``love`` is unused when w_love = 0."""
    score = weights.relevance * np.asarray(relevance, dtype=np.float64)
    if weights.love == 0:
        return score
    if love is None:
        raise ValueError("a love weight > 0 needs P[Love] of every candidate")
    return score + weights.love * _logit(love)


def rerank(
    candidates: np.ndarray,
    relevance: np.ndarray,
    love: np.ndarray | None,
    weights: BlendWeights | Sequence[BlendWeights],
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` of each row of ``candidates`` (Q, N) by blended score, best first.

    ``relevance`` and ``love`` (P[Love]) are aligned with ``candidates``; ``NO_ITEM`` candidates
    (padding) always go last. ``weights`` is one :class:`BlendWeights` or one per row. Returns
    ``(items, scores)``, each (Q, min(k, N)); padded slots hold ``NO_ITEM`` and −inf.
    """
    candidates = np.atleast_2d(candidates)
    relevance = np.atleast_2d(np.asarray(relevance, dtype=np.float64))
    love = None if love is None else np.atleast_2d(love)
    if relevance.shape != candidates.shape or (love is not None and love.shape != candidates.shape):
        raise ValueError("candidates, relevance and love must have the same shape")
    if k < 1:
        raise ValueError("k must be at least 1")
    n_rows = candidates.shape[0]
    per_row = [weights] * n_rows if isinstance(weights, BlendWeights) else list(weights)
    if len(per_row) != n_rows:
        raise ValueError(f"got {len(per_row)} weights for {n_rows} requests")
    k = min(k, candidates.shape[1])
    items = np.full((n_rows, k), NO_ITEM, dtype=np.int64)
    scores = np.full((n_rows, k), -np.inf)
    for q, w in enumerate(per_row):
        valid = candidates[q] != NO_ITEM
        s = np.full(candidates.shape[1], -np.inf)
        s[valid] = blend_scores(relevance[q, valid], None if love is None else love[q, valid], w)
        order = np.argsort(-s, kind="stable")[:k]
        items[q] = np.where(np.isfinite(s[order]), candidates[q, order], NO_ITEM)
        scores[q] = s[order]
    return items, scores


class Search(Protocol):
    """What re-ranking needs from retrieval (e.g. :class:`serving.retrieval.Retriever`)."""

    def search(
        self, queries: np.ndarray, k: int, exclude=None, allow=None
    ) -> tuple[np.ndarray, np.ndarray]: ...


class LoveModel(Protocol):
    def predict(self, users: np.ndarray, items: np.ndarray, positions=0) -> np.ndarray: ...


def blended_recommend(
    retriever: Search,
    user_vectors: np.ndarray,
    deepest_threshold: float,
    love_model: LoveModel | None,
    users: np.ndarray,
    k: int,
    weights: BlendWeights | Sequence[BlendWeights],
    n_candidates: int = 100,
    exclude: Sequence[np.ndarray | None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Retrieve ``n_candidates`` per user by relevance, then re-rank them by the blend.

    ``user_vectors`` are the query vectors of ``users`` (GNOLR's ``user_vectors(users)``), so the
    inner product minus ``deepest_threshold`` (a_T) is the deepest-level logit. P[Love] is scored
    at the top position (context = first slot) for every candidate. Returns ``(items, scores)``.
    """
    users = np.asarray(users)
    ids, inner = retriever.search(user_vectors, max(k, n_candidates), exclude=exclude)
    relevance = np.where(ids != NO_ITEM, inner.astype(np.float64) - deepest_threshold, -np.inf)
    per_row = [weights] * len(users) if isinstance(weights, BlendWeights) else list(weights)
    love = None
    if any(w.love > 0 for w in per_row):
        if love_model is None:
            raise ValueError("a love weight > 0 needs a P[Love] model")
        love = np.full(ids.shape, 0.5)
        rows, cols = np.nonzero(ids != NO_ITEM)
        love[rows, cols] = love_model.predict(users[rows], ids[rows, cols], 0)
    return rerank(ids, relevance, love, per_row, k)
