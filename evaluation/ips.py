"""IPS-weighted ranking metrics of top-K lists against logged positives (MNAR feedback).

References: Yang et al., "Unbiased Offline Recommender Evaluation for Missing-Not-At-Random Implicit
Feedback", RecSys 2018; Saito et al., WSDM 2020 (arXiv 1909.03601).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from evaluation.estimators import check_unit, vector


@dataclass(frozen=True)
class IPSRankingMetrics:
    """IPS-weighted DCG@K and Recall@K of rankings against logged positives (MNAR feedback).

    Logged positives Y_ui = 1 get weights ``v_ui = 1 / max(θ_ui, floor)``; over the evaluated users
    U (those with at least one positive) and their top-K lists (j 1-based):

        IPS-DCG@K    = (1/|U|) Σ_u Σ_{j ≤ K} Y_{u,top_j} v_{u,top_j} / log2(j + 1)
        IPS-Recall@K = Σ_u Σ_{j ≤ K} Y_{u,top_j} v_{u,top_j}  /  Σ_u Σ_i Y_ui v_ui

    Since E[Y/θ] = γ, IPS-DCG@K is unbiased (floor → 0, true θ) for the DCG@K with gain γ = P(R = 1)
    — the ground-truth DCG — up to the constant share of positives held out for the test; |U| is
    the same for every model, so model comparisons stay unbiased. IPS-Recall@K is a ratio of two
    unbiased sums (micro-averaged), consistent for the recall of the relevant set. A per-user ratio
    (Saito et al. 2020's normalisation) is avoided on purpose: with one test positive per user it
    cancels the weights and falls back to the naive recall. The floor caps a positive's weight
    at 1/floor (less variance, some bias for θ < floor).
    """

    k: int = 10
    floor: float = 0.01

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int | np.integer) or self.k < 1:
            raise ValueError(f"k must be a positive integer, got {self.k!r}")
        f = self.floor
        if not isinstance(f, int | float) or not math.isfinite(f) or not 0 < f <= 1:
            raise ValueError(f"floor must lie in (0, 1], got {f!r}")

    def evaluate_recommender(
        self,
        recommend: Callable[[np.ndarray, int], np.ndarray],
        pos_users: np.ndarray,
        pos_items: np.ndarray,
        pos_propensity: np.ndarray,
    ) -> dict[str, float]:
        """The metrics of any model given as ``recommend(users, k) -> top items (U, k)``.

        Ranks for every user with a logged positive; ``recommend`` should exclude what the user
        must not be shown again (e.g. training positives), as the service does.
        """
        users = np.unique(np.asarray(pos_users, dtype=np.int64))
        if users.size == 0:
            return self.evaluate(np.zeros((0, self.k), np.int64), users, [], [], [])
        return self.evaluate(recommend(users, self.k), users, pos_users, pos_items, pos_propensity)

    def evaluate(
        self,
        top: np.ndarray,
        users: np.ndarray,
        pos_users: np.ndarray,
        pos_items: np.ndarray,
        pos_propensity: np.ndarray,
    ) -> dict[str, float]:
        """Mean IPS-DCG@K and IPS-Recall@K, keys ``ips_dcg_at_<k>`` and ``ips_recall_at_<k>``.

        ``top`` (U, ≥ K) ranked item indices per user of ``users`` (U,), best first, −1 padded;
        ``pos_users``, ``pos_items``, ``pos_propensity`` (P,) the logged positive pairs and their
        propensities θ ∈ (0, 1] (a duplicated pair counts once, with its first propensity). Users
        of ``users`` without positives are skipped; ``nan`` when none has one.
        """
        top = np.asarray(top, dtype=np.int64)
        users = np.asarray(users, dtype=np.int64)
        if top.ndim != 2 or top.shape[0] != users.size or top.shape[1] < self.k:
            raise ValueError(f"top must be (len(users), ≥ {self.k}), got {top.shape}")
        theta = vector("pos_propensity", pos_propensity)
        pu = np.asarray(pos_users, dtype=np.int64)
        pi = np.asarray(pos_items, dtype=np.int64)
        if pu.shape != theta.shape or pi.shape != theta.shape:
            raise ValueError("pos_users, pos_items and pos_propensity must be aligned")
        check_unit("pos_propensity", theta, open_zero=True)
        names = (f"ips_dcg_at_{self.k}", f"ips_recall_at_{self.k}")
        if pu.size == 0:
            return dict.fromkeys(names, float("nan"))
        n_items = int(max(pi.max(), top.max(initial=0))) + 1
        keys, first = np.unique(pu * n_items + pi, return_index=True)
        weight = 1.0 / np.maximum(theta[first], self.floor)
        has = np.isin(users, keys // n_items)
        if not has.any():
            return dict.fromkeys(names, float("nan"))
        total = weight[np.isin(keys // n_items, users[has])].sum()
        query = users[has, None] * n_items + top[has, : self.k]
        pos = np.clip(np.searchsorted(keys, query), 0, keys.size - 1)
        hit = (top[has, : self.k] >= 0) & (keys[pos] == query)
        gained = np.where(hit, weight[pos], 0.0)
        disc = 1.0 / np.log2(np.arange(self.k) + 2.0)
        return {names[0]: float((gained @ disc).mean()), names[1]: float(gained.sum() / total)}
