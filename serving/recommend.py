"""Recommendations for one request: the logic behind the API, testable without HTTP."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.ranking_blend import BlendWeights, blended_recommend
from serving.bundle import Bundle

N_CANDIDATES = 100  # relevance candidates re-ranked by the blend


@dataclass
class Recommendation:
    item_id: str
    score: float
    probabilities: dict[str, float] | None = None
    p_love: float | None = None


@dataclass
class RecommendResult:
    items: list[Recommendation]
    model_version: str
    fallback: str | None = None  # "popular" when the user is unknown


def recommend(
    bundle: Bundle,
    user_id: str,
    k: int,
    exclude_seen: bool = True,
    weights: BlendWeights | None = None,
) -> RecommendResult:
    """Top-k items for ``user_id`` with P(level) of every level and, when trained, P[Love].

    The order is the deepest level's logit l_T, or with ``weights`` the blend
    ``w_rel·l_T + w_love·logit(P[Love])`` over the top ``N_CANDIDATES`` by relevance (the score is
    then the blend). Unknown users get the most popular items (``fallback="popular"``, score =
    −rank, no probabilities), since nothing personal is known about them.
    """
    if weights is not None and weights.love > 0 and bundle.plove is None:
        raise ValueError("a love weight needs the P[Love] model, which this bundle does not have")
    levels = bundle.levels
    user = bundle.user_index.get(user_id)
    if user is None:
        top = bundle.popular[:k]
        items = [
            Recommendation(str(bundle.item_ids[i]), float(-rank)) for rank, i in enumerate(top)
        ]
        return RecommendResult(items, bundle.model_version, fallback="popular")
    exclude = [bundle.seen[user]] if exclude_seen else None
    query = bundle.embeddings.user_vectors(np.array([user]))
    if weights is None:
        ids, scores = bundle.retriever.search(query, k, exclude=exclude)
        scores = None
    else:
        ids, scores = blended_recommend(
            bundle.retriever,
            query,
            float(bundle.embeddings.thresholds[-1]),
            bundle.plove,
            np.array([user]),
            k,
            weights,
            max(N_CANDIDATES, k),
            exclude,
        )
    keep = ids[0] >= 0
    ids = ids[0][keep]
    logits = bundle.embeddings.logits(np.full(ids.size, user), ids)
    probs = 1.0 / (1.0 + np.exp(-logits))
    love = None if bundle.plove is None else bundle.plove.predict(np.full(ids.size, user), ids, 0)
    items = [
        Recommendation(
            str(bundle.item_ids[i]),
            float(logits[n, -1] if scores is None else scores[0][keep][n]),
            {name: float(probs[n, c]) for c, name in enumerate(levels)},
            None if love is None else float(love[n]),
        )
        for n, i in enumerate(ids)
    ]
    return RecommendResult(items, bundle.model_version)
