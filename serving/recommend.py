"""Recommendations for one request: the logic behind the API, testable without HTTP."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from serving.bundle import Bundle


@dataclass
class Recommendation:
    item_id: str
    score: float
    probabilities: dict[str, float] | None = None


@dataclass
class RecommendResult:
    items: list[Recommendation]
    model_version: str
    fallback: str | None = None  # "popular" when the user is unknown


def recommend(bundle: Bundle, user_id: str, k: int, exclude_seen: bool = True) -> RecommendResult:
    """Top-k items for ``user_id`` by the deepest level's logit, with P(level) of every level.

    Unknown users get the most popular items (``fallback="popular"``, score = rank-based, no
    probabilities), since nothing personal is known about them.
    """
    levels = bundle.levels
    user = bundle.user_index.get(user_id)
    if user is None:
        top = bundle.popular[:k]
        items = [
            Recommendation(str(bundle.item_ids[i]), float(-rank)) for rank, i in enumerate(top)
        ]
        return RecommendResult(items, bundle.model_version, fallback="popular")
    exclude = [bundle.seen[user]] if exclude_seen else None
    ids, _ = bundle.retriever.search(
        bundle.embeddings.user_vectors(np.array([user])), k, exclude=exclude
    )
    ids = ids[0][ids[0] >= 0]
    logits = bundle.embeddings.logits(np.full(ids.size, user), ids)
    probs = 1.0 / (1.0 + np.exp(-logits))
    items = [
        Recommendation(
            str(bundle.item_ids[i]),
            float(logits[n, -1]),
            {name: float(probs[n, c]) for c, name in enumerate(levels)},
        )
        for n, i in enumerate(ids)
    ]
    return RecommendResult(items, bundle.model_version)
