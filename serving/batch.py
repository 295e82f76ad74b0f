"""Batch recommendations: top-k for many users through the service's own recommend path.

Known users are ranked by :func:`serving.recommend.ranked_by_relevance` (the function behind one
request's relevance ranking), a batch of users per retrieval call; users unknown to the bundle get the
service's popularity fallback (:func:`serving.recommend.popular_items`). The score is the deepest
level's logit ``l_T = γ_T·s_T − a_T``, or −rank for the fallback, as ``/recommend`` reports it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from features.contract import Col
from serving.bundle import Bundle
from serving.recommend import popular_items, ranked_by_relevance

SCHEMA = {
    Col.USER: pl.String,
    "rank": pl.Int32,
    Col.ITEM: pl.String,
    "score": pl.Float64,
    "model_version": pl.String,
}


def _table(users: np.ndarray, ids: np.ndarray, scores: np.ndarray, bundle: Bundle) -> pl.DataFrame:
    """Long rows of (U, k) item indices and scores; −1 padding dropped."""
    valid = ids >= 0
    k = ids.shape[1]
    return pl.DataFrame(
        {
            Col.USER: np.repeat(users, k).reshape(ids.shape)[valid],
            "rank": np.tile(np.arange(k, dtype=np.int32), (len(users), 1))[valid],
            Col.ITEM: bundle.item_ids[ids[valid]],
            "score": scores[valid],
            "model_version": np.full(int(valid.sum()), bundle.model_version, dtype=object),
        },
        schema=SCHEMA,
    )


def batch_recommend(
    bundle: Bundle,
    user_ids: Sequence[str] | None = None,
    k: int = 20,
    exclude_seen: bool = True,
    batch_size: int = 4096,
) -> pl.DataFrame:
    """Recommendations for ``user_ids`` (default: every user of the bundle) as a long table with
    columns ``user_id, rank (0-based), item_id, score, model_version``."""
    if user_ids is None:
        user_ids = sorted(bundle.user_index, key=bundle.user_index.__getitem__)
    k = min(k, len(bundle.item_ids))
    known = np.array([u for u in user_ids if u in bundle.user_index], dtype=object)
    frames = []
    for start in range(0, len(known), batch_size):
        chunk = known[start : start + batch_size]
        users = np.array([bundle.user_index[u] for u in chunk], dtype=np.int64)
        exclude = [bundle.seen[u] for u in users] if exclude_seen else None
        ids, logits = ranked_by_relevance(bundle, users, k, exclude)
        frames.append(_table(chunk, ids, logits[..., -1], bundle))
    unknown = np.array([u for u in user_ids if u not in bundle.user_index], dtype=object)
    if unknown.size:
        popular = popular_items(bundle, k)
        ids = np.tile(popular, (unknown.size, 1))
        scores = np.tile(-np.arange(popular.size, dtype=np.float64), (unknown.size, 1))
        frames.append(_table(unknown, ids, scores, bundle))
    return pl.concat(frames) if frames else pl.DataFrame(schema=SCHEMA)
