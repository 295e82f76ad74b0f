"""Offline evaluation of any scorer through the service's own retrieval path.

One protocol for every model: AUC and GAUC per level on the test impressions, and the IPS-weighted
AUC (each impression weighted by 1/max(propensity, floor), so the pairs count as if every item had
been shown equally often: what the promotion gate compares, as the logger's bias cannot fool it);
Recall/NDCG/MRR@K per level over the full catalogue, excluding each user's training positives, ranked by
:class:`serving.retrieval.Retriever` on the level's vectors; and, when the truth is known
(simulated data), NDCG@K against the true probability of each level.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from models.baselines import Scorer
from models.evaluation import auc_by_level, ground_truth_ndcg, ranking_metrics
from models.metrics import auc, gauc
from serving.retrieval import Retriever, SeenItems

TrueGain = Callable[[np.ndarray], dict[str, np.ndarray]]


@dataclass
class TestData:
    """The test impressions and what ranking must exclude."""

    users: np.ndarray
    items: np.ndarray
    levels: np.ndarray
    seen: SeenItems  # training positives per user
    names: Sequence[str]
    n_items: int
    propensity: np.ndarray | None = None  # per test row: logged, else estimated (features stage)
    ips_floor: float = 0.01


def recommender(retriever: Retriever, user_vectors: np.ndarray, seen: SeenItems, batch: int = 1024):
    """A ``(users, k) -> top items`` function over ``retriever`` that excludes seen items."""

    def recommend(users: np.ndarray, k: int) -> np.ndarray:
        out = []
        for start in range(0, users.size, batch):
            chunk = users[start : start + batch]
            ids, _ = retriever.search(user_vectors[chunk], k, exclude=[seen[u] for u in chunk])
            out.append(ids)
        return np.concatenate(out) if out else np.zeros((0, k), np.int64)

    return recommend


def evaluate_scorer(
    scorer: Scorer, data: TestData, ks: Sequence[int], true_gain: TrueGain | None = None
) -> dict[str, float]:
    """Every metric of the protocol for one scorer, named ``<metric>[_at_<k>]/<level>``."""
    names = list(data.names)
    scores = scorer.logits(data.users, data.items)
    out = auc_by_level(scores, data.levels, names)
    for c, name in enumerate(names):
        out[f"gauc/{name}"] = gauc(scores[:, c], data.levels >= c + 1, data.users)
    if data.propensity is not None:
        weights = 1.0 / np.maximum(data.propensity, data.ips_floor)
        for c, name in enumerate(names):
            out[f"ips_auc/{name}"] = auc(scores[:, c], data.levels >= c + 1, weights)
    eval_users = np.unique(data.users)
    for c, name in enumerate(names):
        user_vecs, item_vecs = scorer.level_vectors(c)
        recommend = recommender(Retriever(item_vecs), user_vecs, data.seen)
        out.update(
            ranking_metrics(
                recommend, data.users, data.items, data.levels, c + 1, name, data.n_items, ks
            )
        )
        if true_gain is not None:
            exclude = [data.seen[u] for u in eval_users]
            out.update(ground_truth_ndcg(recommend, eval_users, true_gain, exclude, [name], ks))
    return out
