"""One evaluation protocol for every model: what the evaluate stage and the comparison command run.

AUC and GAUC per level on the test impressions, and the IPS-weighted AUC (each impression weighted by
1/max(propensity, floor), so the pairs count as if every item had been shown equally often: what the
promotion gate compares, as the logger's bias cannot fool it); Recall/NDCG/MRR@K per level over the
full catalogue, excluding each user's training positives; and, when the truth is known (simulated
data), NDCG@K against the true probability of each level.

Rankings come from the caller as ``recommend(users, k) -> top items`` functions — the serving
layer's retrieval path (serving/recommend.py: :func:`serving.recommend.level_ranker`) — so offline
metrics measure what users get. Metric names follow one scheme, ``<metric>_at_<k>/<level>`` and
``auc/<level>``, so runs of every model compare side by side.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from evaluation.metrics import auc, gauc, graded_ndcg, hit_matrix, recall_ndcg_mrr
from features.contract import Col
from features.seen import SeenItems
from features.sources.synthetic import World, parse_index

if TYPE_CHECKING:  # annotations only: params.yaml validation must not load torch
    from models.baselines import Scorer

TrueGain = Callable[[np.ndarray], dict[str, np.ndarray]]


class EvaluateConfig(BaseModel):
    """params.yaml → ``evaluate``: the cut-offs K of the ranking metrics."""

    model_config = ConfigDict(extra="forbid")

    ks: list[int] = Field(default_factory=lambda: [10, 20, 50, 100])
    batch_size: int = Field(1024, ge=1, description="users per retrieval call")


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


# 0-based level c -> the ``recommend`` of level c's vectors (training positives excluded).
LevelRanker = Callable[[int], RecommendFn]


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


def evaluate_scorer(
    scorer: Scorer,
    data: TestData,
    ks: Sequence[int],
    ranker: LevelRanker,
    true_gain: TrueGain | None = None,
) -> dict[str, float]:
    """Every metric of the protocol for one scorer, named ``<metric>[_at_<k>]/<level>``.

    ``ranker(c)`` ranks the catalogue by the scorer's level-c vectors (e.g.
    ``serving.recommend.level_ranker(scorer, data.seen)``).
    """
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
        recommend = ranker(c)
        out.update(
            ranking_metrics(
                recommend, data.users, data.items, data.levels, c + 1, name, data.n_items, ks
            )
        )
        if true_gain is not None:
            exclude = [data.seen[u] for u in eval_users]
            out.update(ground_truth_ndcg(recommend, eval_users, true_gain, exclude, [name], ks))
    return out


def simulator_gain(
    users: pl.DataFrame, items: pl.DataFrame, world: World, names: list[str]
) -> TrueGain:
    """True P(level) of every catalogue item for given users, from the simulator's world.

    ``users``/``items`` are the vocabularies (``user_id, user_idx`` / ``item_id, item_idx``).
    """
    sim_user = parse_index(users.sort(Col.USER_IDX)[Col.USER].to_list())
    sim_item = parse_index(items.sort(Col.ITEM_IDX)[Col.ITEM].to_list())

    def true_gain(batch: np.ndarray) -> dict[str, np.ndarray]:
        aff = world.affinity_matrix(sim_user[batch])[:, :, sim_item]
        probs = world.true_probabilities(aff)
        return {name: probs[name] for name in names}

    return true_gain
