"""One metric set for every model: AUC per level, full-catalogue ranking metrics, ground truth.

Metric names follow one scheme, ``<metric>_at_<k>/<level>`` and ``auc/<level>``, so runs of every
model compare side by side.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from models.metrics import auc, graded_ndcg, hit_matrix, recall_ndcg_mrr

# (users (U,), k) -> top-k item indices (U, k), best first, −1 padded.
RecommendFn = Callable[[np.ndarray, int], np.ndarray]


def auc_by_level(scores: np.ndarray, levels: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """AUC of ``scores[:, c]`` against ``level ≥ c + 1`` for each level; ``scores`` (n, T)."""
    return {f"auc/{name}": auc(scores[:, c], levels >= c + 1) for c, name in enumerate(names)}


def ranking_metrics(
    recommend: RecommendFn,
    test_users: np.ndarray,
    test_items: np.ndarray,
    test_levels: np.ndarray,
    level: int,
    name: str,
    n_items: int,
    ks: Sequence[int],
) -> dict[str, float]:
    """Recall@k, NDCG@k and MRR@k of one level over the full catalogue.

    For level c (1-based), a user's relevant items are its test items with level ≥ c; users without
    any are skipped. ``recommend`` must already exclude each user's training items.
    """
    rel = test_levels >= level
    users = np.unique(test_users[rel])
    if users.size == 0:
        return {}
    top = recommend(users, max(ks))
    hits = hit_matrix(top, users, test_users[rel], test_items[rel], n_items)
    n_rel = _count_distinct_per_user(users, test_users[rel], test_items[rel])
    out: dict[str, float] = {f"n_users/{name}": float(users.size)}
    for k in ks:
        for metric, value in recall_ndcg_mrr(hits, n_rel, k).items():
            out[f"{metric}_at_{k}/{name}"] = value
    return out


def _count_distinct_per_user(
    users: np.ndarray, rel_users: np.ndarray, rel_items: np.ndarray
) -> np.ndarray:
    pairs = (
        np.unique(np.stack([rel_users, rel_items], axis=1), axis=0)
        if rel_users.size
        else np.zeros((0, 2))
    )
    counts = np.zeros(users.size, dtype=np.int64)
    if pairs.size:
        where = np.searchsorted(users, pairs[:, 0])
        ok = (where < users.size) & (users[np.minimum(where, users.size - 1)] == pairs[:, 0])
        np.add.at(counts, where[ok], 1)
    return counts


def ground_truth_ndcg(
    recommend: RecommendFn,
    users: np.ndarray,
    true_gain: Callable[[np.ndarray], dict],
    exclude: Sequence[np.ndarray],
    names: Sequence[str],
    ks: Sequence[int],
    batch: int = 512,
) -> dict[str, float]:
    """NDCG@k against the true probabilities of each level (simulated data only).

    ``true_gain(users)`` returns, per level name, the true P(level) of every catalogue item for those
    users, shape (len(users), n_items); ``exclude[u]`` are the items removed from ranking for
    ``users[u]`` (their gain is zeroed for the ideal ranking too).
    """
    kmax = max(ks)
    sums = {f"gt_ndcg_at_{k}/{n}": 0.0 for k in ks for n in names}
    count = 0
    for start in range(0, users.size, batch):
        chunk = users[start : start + batch]
        top = recommend(chunk, kmax)
        gains = true_gain(chunk)
        for name in names:
            g = gains[name].copy()
            for row in range(chunk.size):
                g[row, exclude[start + row]] = 0.0
            top_g = np.where(top >= 0, np.take_along_axis(g, np.maximum(top, 0), axis=1), 0.0)
            for k in ks:
                sums[f"gt_ndcg_at_{k}/{name}"] += graded_ndcg(top_g, g, k) * chunk.size
        count += chunk.size
    return {key: value / count for key, value in sums.items()}
