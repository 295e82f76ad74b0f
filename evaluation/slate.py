"""Deterministic top-K slates valued on logged slates: item-level SNIPS / SN-DR with a position model.

Target "a uniform slot of the slate", logged rewards moved to the target slot by the position-based
model, users weighted equally; intervals by the bootstrap over users (evaluation/bootstrap.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from evaluation.bootstrap import Interval, percentile_interval
from evaluation.estimators import check_unit, vector


@dataclass(frozen=True)
class TopKSlateTerms:
    """Per-user sums of a deterministic top-K target evaluated on logged slates (see
    :func:`topk_slate_terms`); every array has shape (U,), one entry per user (slate row).

    With ρ_t the user-normalised weight of round t, r̃_t its position-corrected reward and q̃_t the
    reward model at the target position, over users u and their rounds t ∈ u:

        SNIPS:  V̂ = Σ_u Σ_t ρ_t r̃_t / Σ_u Σ_t ρ_t
        SN-DR:  V̂ = (1/U) Σ_u q̂_π(u) + Σ_u Σ_t ρ_t (r̃_t − q̃_t) / Σ_u Σ_t ρ_t

    ``counts`` (B, U) evaluates B bootstrap replicates at once (users drawn ``counts`` times);
    ``None`` is the point estimate. SNIPS is ``nan`` where the target matches no logged round; SN-DR
    then falls back to the direct method.
    """

    weight: np.ndarray  # Σ_t ρ_t
    weighted_reward: np.ndarray  # Σ_t ρ_t r̃_t
    weighted_residual: np.ndarray  # Σ_t ρ_t (r̃_t − q̃_t); zeros without a reward model
    direct: np.ndarray  # q̂_π(u) = (1/K) Σ_j q̂(u, slate_uj, j); zeros without a reward model
    n_matched: int  # logged rounds whose item is in the user's target slate
    matched_reward: float  # Σ r_t over those rounds (unweighted)
    n_rounds: int

    def _sums(self, counts: np.ndarray | None, values: np.ndarray) -> np.ndarray:
        return values.sum() if counts is None else counts @ values

    def snips(self, counts: np.ndarray | None = None) -> np.ndarray:
        num, den = self._sums(counts, self.weighted_reward), self._sums(counts, self.weight)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)

    def dr(self, counts: np.ndarray | None = None) -> np.ndarray:
        n = self.direct.size if counts is None else counts.sum(axis=1)
        den = self._sums(counts, self.weight)
        res = self._sums(counts, self.weighted_residual)
        correction = np.where(den > 0, res / np.where(den > 0, den, 1.0), 0.0)
        return self._sums(counts, self.direct) / n + correction

    def interval(self, estimator: str, counts: np.ndarray, alpha: float = 0.05) -> Interval:
        """Point estimate and (1 − α) percentile interval over the replicates of ``counts``."""
        fn = {"snips": self.snips, "dr": self.dr}.get(estimator)
        if fn is None:
            raise ValueError(f"estimator must be 'snips' or 'dr', got {estimator!r}")
        return percentile_interval(float(fn()), fn(counts), alpha, self.n_rounds)


def topk_slate_terms(
    slates: np.ndarray,
    round_user: np.ndarray,
    round_item: np.ndarray,
    round_position: np.ndarray,
    reward: np.ndarray,
    pscore: np.ndarray,
    examination: np.ndarray,
    slate_estimated_reward: np.ndarray | None = None,
) -> TopKSlateTerms:
    """Off-policy terms of top-K slates, one per user, from logged slate impressions.

    Target: user u is shown ``slates[u]`` (K distinct items, slot j = 0..K−1); its value is
    ``V(π) = (1/U) Σ_u (1/K) Σ_j e(j) θ(u, slate_uj)`` with θ the reward probability at the top and
    e(j) the examination of slot j (position-based model, PBM: P(r = 1 | u, i, k) = e(k) θ(u, i)).

    Log: round t is an impression of item a_t to user u_t at slot k_t with reward r_t and ``pscore``
    π_0(a_t | u_t, k_t), the logger's probability of drawing a_t in that slot (for a slate filled by
    sequential sampling, the logged conditional probability given the items above it). Each round
    is item-level IPS towards the target "a uniform slot of the slate", π_e(a | u) = 1/K on the
    slate, with the logged reward moved to the target slot j_t by the PBM:

        w_t = 1[a_t ∈ slate_u] / (K π_0),   r̃_t = r_t e(j_t) / e(k_t),   ρ_t = w_t / n_u,

    n_u the user's logged rounds, so that each user weighs the same as in V(π). E[w_t r̃_t | u] is
    V_u restricted to slate items not already above slot k_t in the logged slate, and
    E[w_t | u] = the share of slate items left; self-normalising cancels most of that loss.
    ``slate_estimated_reward`` (U, K), the reward model q̂(u, slate_uj, j), adds the SN-DR terms.

    ``round_user`` indexes rows of ``slates`` and every row needs a logged round; ``examination``
    e(0..) > 0 covers every logged and target slot.
    """
    slates = np.asarray(slates, dtype=np.int64)
    if slates.ndim != 2 or slates.shape[1] < 1:
        raise ValueError(f"slates must be (n_users, K), got {slates.shape}")
    n_users, k = slates.shape
    r = vector("reward", reward)
    p0 = vector("pscore", pscore, r.size)
    check_unit("pscore", p0, open_zero=True)
    users = np.asarray(round_user, dtype=np.int64)
    items = np.asarray(round_item, dtype=np.int64)
    positions = np.asarray(round_position, dtype=np.int64)
    if users.shape != r.shape or items.shape != r.shape or positions.shape != r.shape:
        raise ValueError("round_user, round_item, round_position and reward must be aligned")
    if r.size == 0:
        raise ValueError("the log holds no rounds")
    if users.min() < 0 or users.max() >= n_users:
        raise ValueError(f"round_user must index the {n_users} rows of slates")
    n_u = np.bincount(users, minlength=n_users).astype(np.float64)
    if np.any(n_u == 0):
        raise ValueError(f"{int((n_u == 0).sum())} slate rows (users) have no logged round")
    e = vector("examination", examination)
    if e.size < max(k, int(positions.max()) + 1) or positions.min() < 0 or np.any(e <= 0):
        raise ValueError("examination must be positive for every logged and target slot")
    ordered = np.sort(slates, axis=1)
    if np.any(slates < 0) or np.any(ordered[:, 1:] == ordered[:, :-1]):
        raise ValueError("each slate needs K distinct non-negative item indices")
    # Target slot of each round's item: look (user, item) up among the slates' keys.
    n_items = int(max(slates.max(), items.max())) + 1
    keys = (np.arange(n_users)[:, None] * n_items + slates).ravel()
    order = np.argsort(keys)
    query = users * n_items + items
    found = np.clip(np.searchsorted(keys[order], query), 0, keys.size - 1)
    hit = keys[order][found] == query
    slot = np.where(hit, order[found] % k, 0)
    rho = np.where(hit, 1.0 / (k * p0), 0.0) / n_u[users]
    r_tilde = np.where(hit, r * e[slot] / e[positions], 0.0)
    direct = np.zeros(n_users)
    residual = np.zeros(r.size)
    if slate_estimated_reward is not None:
        q = np.asarray(slate_estimated_reward, dtype=np.float64)
        if q.shape != slates.shape or not np.all(np.isfinite(q)):
            raise ValueError(f"slate_estimated_reward must be finite, shaped {slates.shape}")
        direct = q.mean(axis=1)
        residual = np.where(hit, r_tilde - q[users, slot], 0.0)
    return TopKSlateTerms(
        weight=np.bincount(users, rho, n_users),
        weighted_reward=np.bincount(users, rho * r_tilde, n_users),
        weighted_residual=np.bincount(users, rho * residual, n_users),
        direct=direct,
        n_matched=int(hit.sum()),
        matched_reward=float(r[hit].sum()),
        n_rounds=int(r.size),
    )
