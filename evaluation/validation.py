"""Validation metrics that choose a model's training epoch (early stopping), one per family.

Each is a callable the family's LightningModule calls after every validation pass (models/*/module.py
says with what), plus the ``monitor`` name and ``mode`` early stopping watches. :class:`RankingNDCG`
ranks with the model's own :meth:`models.recommender.Recommender.recommend` (``kind = "ranking"``),
so the epoch is chosen by the top-k quality users get.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from evaluation.ips import IPSRankingMetrics
from evaluation.metrics import auc, hit_matrix, topn_per_user
from models.data import Pairs
from models.recommender import Recommender


@dataclass(frozen=True)
class LevelAUC:
    """GNOLR's criterion (methods.md §1): the AUC of P(level ≥ c) against ``level ≥ c`` for each
    level, and their product — the monitor. A level without both classes counts as 0.5."""

    names: Sequence[str]
    monitor: str = "valid/auc_product"
    mode: Literal["max", "min"] = "max"

    def for_level(self, level: int) -> LevelAUC:
        """The criterion of a single-level model of 1-based ``level`` (per-level baselines)."""
        return LevelAUC([self.names[level - 1]], self.monitor, self.mode)

    def __call__(self, logits: np.ndarray, levels: np.ndarray) -> dict[str, float]:
        aucs = [
            float(np.nan_to_num(auc(logits[:, c], levels >= c + 1), nan=0.5))
            for c in range(logits.shape[1])
        ]
        out = {f"auc/{name}": value for name, value in zip(self.names, aucs, strict=True)}
        out["auc_product"] = float(np.prod(aucs))
        return out


@dataclass(frozen=True)
class IPSDCG:
    """Rel-MF's criterion: the IPS-DCG@k (:class:`evaluation.ips.IPSRankingMetrics`) of the
    validation positives ``valid``, whose users are ranked each epoch; ``propensity`` θ is
    (n_items,) or (n_users, n_items)."""

    valid: Pairs
    propensity: np.ndarray
    k: int = 5
    floor: float = 0.01
    mode: Literal["max", "min"] = "max"
    users: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "users", np.unique(self.valid.users))

    @property
    def monitor(self) -> str:
        return f"valid/ips_dcg_at_{self.k}"

    def __call__(self, users: np.ndarray, top: np.ndarray) -> dict[str, float]:
        theta = self.propensity
        pos = (
            theta[self.valid.users, self.valid.items]
            if theta.ndim == 2
            else theta[self.valid.items]
        )
        metric = IPSRankingMetrics(self.k, self.floor)
        value = metric.evaluate(top, users, self.valid.users, self.valid.items, pos)
        return {f"ips_dcg_at_{self.k}": value[f"ips_dcg_at_{self.k}"]}


@dataclass(frozen=True)
class LoveAUC:
    """P[Love]'s extra validation metric: the AUC of the corrected logits against the loves (the
    monitor is the module's own validation log loss)."""

    monitor: str = "valid/love_log_loss"
    mode: Literal["max", "min"] = "min"

    def __call__(self, logits: np.ndarray, loves: np.ndarray) -> dict[str, float]:
        return {"love_auc": float(np.nan_to_num(auc(logits, loves), nan=0.5))}


@dataclass(frozen=True)
class RankingNDCG:
    """NDCG@k (the monitor), Recall@k, Precision@k and MAP@k of held-out positives ``truth``, from
    the model's own exact top-k with each user's training positives excluded.

    Users are those with at least one held-out positive (binary relevance, distinct items);
    ``items`` (indices), when given, restricts the candidates (the MS protocol ranks only items
    present in train). The same object scores test sets: :meth:`per_user` gives the per-user values
    a bootstrap over users needs.
    """

    truth: Pairs
    k: int = 10
    items: np.ndarray | None = None
    kind: Literal["ranking"] = "ranking"
    mode: Literal["max", "min"] = "max"
    users: np.ndarray = field(init=False)
    n_relevant: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        keys = np.unique(np.stack([self.truth.users, self.truth.items], axis=1), axis=0)
        users, counts = np.unique(keys[:, 0], return_counts=True)
        object.__setattr__(self, "users", users)
        object.__setattr__(self, "n_relevant", counts)

    @property
    def monitor(self) -> str:
        return f"valid/ndcg_at_{self.k}"

    def per_user(self, model: Recommender) -> dict[str, np.ndarray]:
        """Per-user ``ndcg``, ``precision``, ``recall`` and ``map`` at k, aligned with ``users``."""
        top, _ = model.recommend(self.users, self.k, filter_seen=True, items=self.items)
        hits = hit_matrix(top, self.users, self.truth.users, self.truth.items, model.n_items)
        return topn_per_user(hits, self.n_relevant, self.k)

    def __call__(self, model: Recommender) -> dict[str, float]:
        return {
            f"{name}_at_{self.k}": float(values.mean())
            for name, values in self.per_user(model).items()
        }


@dataclass(frozen=True)
class LevelsNDCG:
    """Graded feedback: the mean over levels c of NDCG@k of the held-out rows of level ≥ c, each
    ranked by the model at level c (``rank_level``; models without levels rank alike). Rows of
    level 0 are ignored. The monitor is the mean; each level's value is logged too."""

    users: np.ndarray
    items: np.ndarray
    levels: np.ndarray
    names: Sequence[str]
    k: int = 10
    kind: Literal["ranking"] = "ranking"
    mode: Literal["max", "min"] = "max"

    @property
    def monitor(self) -> str:
        return f"valid/ndcg_at_{self.k}"

    def for_level(self, level: int) -> RankingNDCG:
        rows = self.levels >= level
        return RankingNDCG(Pairs(self.users[rows], self.items[rows]), self.k)

    def __call__(self, model: Recommender) -> dict[str, float]:
        out = {}
        before = model.rank_level
        try:
            for c, name in enumerate(self.names, start=1):
                model.rank_level = c - 1
                value = self.for_level(c)(model)[f"ndcg_at_{self.k}"]
                out[f"ndcg_at_{self.k}/{name}"] = value
        finally:
            model.rank_level = before
        out[f"ndcg_at_{self.k}"] = float(np.mean(list(out.values())))
        return out
