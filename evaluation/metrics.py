"""Classification, ranking and correlation metrics on NumPy arrays (no I/O)."""

from __future__ import annotations

import numpy as np


def auc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Area under the ROC curve (Mann–Whitney U), ties counted as one half, optionally weighted.

    AUC = Σ_{i∈P, j∈N} w_i w_j [1(s_i > s_j) + ½·1(s_i = s_j)] / (Σ_P w_i · Σ_N w_j) with w = 1 when
    ``weights`` is None; ``nan`` when one class is absent. With inverse-propensity weights the
    pairs count as if every item had been shown equally often (``ips_auc`` of the evaluation).

    >>> auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
    0.75
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    w = np.ones(scores.size) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != scores.shape or labels.shape != scores.shape:
        raise ValueError("scores, labels and weights must be aligned 1-d arrays")
    if not labels.any() or labels.all():
        return float("nan")
    # One group per distinct score: positive and negative weight in it, negatives strictly below.
    _, group = np.unique(scores, return_inverse=True)
    pos = np.bincount(group, weights=np.where(labels, w, 0.0))
    neg = np.bincount(group, weights=np.where(labels, 0.0, w))
    below = np.cumsum(neg) - neg
    return float((pos * (below + 0.5 * neg)).sum() / (pos.sum() * neg.sum()))


def _discounts(k: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(k) + 2.0)


def hit_matrix(
    top: np.ndarray, users: np.ndarray, rel_users: np.ndarray, rel_items: np.ndarray, n_items: int
) -> np.ndarray:
    """``hits[u, j]`` = whether item ``top[u, j]`` is relevant to ``users[u]``.

    Relevant pairs are given as aligned arrays (rel_users, rel_items). ``top`` may hold −1 padding.
    """
    keys = np.unique(rel_users.astype(np.int64) * n_items + rel_items.astype(np.int64))
    query = users.astype(np.int64)[:, None] * n_items + top.astype(np.int64)
    pos = np.clip(np.searchsorted(keys, query), 0, max(keys.size - 1, 0))
    return (
        (keys.size > 0) & (top >= 0) & (keys[pos] == query)
        if keys.size
        else np.zeros(top.shape, bool)
    )


def recall_ndcg_mrr(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> dict[str, float]:
    """Mean Recall@k, NDCG@k and MRR@k over users with at least one relevant item.

    Recall@k = hits in top-k / |rel|; NDCG@k = Σ_j hit_j / log2(j + 2) divided by the ideal DCG of
    min(|rel|, k) hits; MRR@k = 1 / rank of the first hit (0 without one).
    """
    keep = n_relevant > 0
    hits = hits[keep, :k].astype(np.float64)
    n_rel = n_relevant[keep]
    if hits.shape[0] == 0:
        return {"recall": float("nan"), "ndcg": float("nan"), "mrr": float("nan")}
    disc = _discounts(k)
    dcg = hits @ disc[: hits.shape[1]]
    ideal = np.cumsum(disc)[np.minimum(n_rel, k) - 1]
    first = np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, np.inf)
    return {
        "recall": float((hits.sum(axis=1) / n_rel).mean()),
        "ndcg": float((dcg / ideal).mean()),
        "mrr": float((1.0 / first).mean()),
    }


def topn_per_user(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Per-user NDCG@k, Precision@k, Recall@k and MAP@k of binary relevance, as Microsoft
    Recommenders' ``python_evaluation`` computes them (checked equal to 1e-15 on its own code).

    ``hits`` (U, ≥k) says whether each ranked item is relevant; ``n_relevant`` (U,) ≥ 1 counts the
    user's relevant items. NDCG = Σ_{r≤k} hit_r/log2(r+1) over the ideal DCG of min(|T_u|, k) hits;
    P = hits/k; R = hits/|T_u|; MAP = Σ_{r≤k} hit_r·(hits up to r)/r divided by min(|T_u|, k)
    (``map_at_k`` of recommenders ≥ 1.2; up to 1.1.1 it divided by |T_u|).

    >>> h = np.array([[True, False, True]])
    >>> {m: round(float(v[0]), 4) for m, v in topn_per_user(h, np.array([2]), 3).items()}
    {'ndcg': 0.9197, 'precision': 0.6667, 'recall': 1.0, 'map': 0.8333}
    """
    hits = np.asarray(hits, dtype=np.float64)[:, :k]
    n_rel = np.asarray(n_relevant, dtype=np.float64)
    if np.any(n_rel < 1):
        raise ValueError("every user needs at least one relevant item")
    disc = _discounts(k)[: hits.shape[1]]
    ideal = np.cumsum(_discounts(k))[np.minimum(n_rel, k).astype(np.int64) - 1]
    n_hits = hits.sum(axis=1)
    precision_at = np.cumsum(hits, axis=1) / np.arange(1, hits.shape[1] + 1)
    return {
        "ndcg": (hits @ disc) / ideal,
        "precision": n_hits / k,
        "recall": n_hits / n_rel,
        "map": (precision_at * hits).sum(axis=1) / np.minimum(n_rel, k),
    }


def graded_ndcg_per_user(top_gains: np.ndarray, all_gains: np.ndarray, k: int) -> np.ndarray:
    """Per-user NDCG@k with real-valued gains (see :func:`graded_ndcg`); NaN where the ideal DCG
    is 0."""
    disc = _discounts(k)
    dcg = top_gains[:, :k] @ disc[: min(k, top_gains.shape[1])]
    best = -np.partition(-all_gains, min(k, all_gains.shape[1]) - 1, axis=1)[:, :k]
    ideal = -np.sort(-best, axis=1) @ disc[: best.shape[1]]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ideal > 0, dcg / np.where(ideal > 0, ideal, 1.0), np.nan)


def graded_ndcg(top_gains: np.ndarray, all_gains: np.ndarray, k: int) -> float:
    """Mean NDCG@k with real-valued gains: Σ_j g(top_j)/log2(j+2) over the ideal top-k of g.

    ``top_gains`` (U, ≥k) are the gains of the ranked items; ``all_gains`` (U, n_items) the gains of
    every candidate (excluded items set to 0). Users whose ideal DCG is 0 are skipped.
    """
    disc = _discounts(k)
    dcg = top_gains[:, :k] @ disc[: min(k, top_gains.shape[1])]
    best = -np.partition(-all_gains, min(k, all_gains.shape[1]) - 1, axis=1)[:, :k]
    ideal = -np.sort(-best, axis=1) @ disc[: best.shape[1]]
    keep = ideal > 0
    return float((dcg[keep] / ideal[keep]).mean()) if keep.any() else float("nan")


def gauc(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> float:
    """Group AUC: per-group AUC averaged with weights = group size, over groups with both classes.

    GAUC = Σ_g n_g·AUC_g / Σ_g n_g (groups are users); ``nan`` when no group has both classes.
    """
    order = np.argsort(groups, kind="stable")
    groups, scores, labels = groups[order], scores[order], np.asarray(labels)[order].astype(bool)
    bounds = np.r_[0, np.flatnonzero(np.diff(groups)) + 1, groups.size]
    total, weight = 0.0, 0
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        y = labels[lo:hi]
        if y.all() or not y.any():
            continue
        total += auc(scores[lo:hi], y) * (hi - lo)
        weight += hi - lo
    return total / weight if weight else float("nan")


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two aligned vectors."""
    return float(np.corrcoef(x, y)[0, 1])


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman correlation: Pearson correlation of the ranks (average ranks for ties)."""

    def ranks(v: np.ndarray) -> np.ndarray:
        order = np.argsort(v, kind="stable")
        r = np.empty(v.size)
        r[order] = np.arange(v.size)
        for value in np.unique(v):
            tie = v == value
            r[tie] = r[tie].mean()
        return r

    return pearson(ranks(np.asarray(x)), ranks(np.asarray(y)))
