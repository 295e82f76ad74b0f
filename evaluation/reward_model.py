"""The reward model of the doubly robust estimators: item click rates shrunk to the log's mean,
cross-fitted, with the prior strength chosen from the log.

With c_a clicks in n_a logged impressions of item a and p̄ the log's click rate,

    q̂_s(a) = (c_a + s p̄) / (n_a + s)

is the Beta-binomial posterior mean with a prior of strength s impressions (s = 0: the raw rate,
s = ∞: p̄ everywhere; an item never shown gets p̄). Cross-fitting: rounds are split into K seeded
folds and round t is scored by the table fitted without its fold, so a round's own click never
enters its prediction (Chernozhukov et al., "Double/debiased machine learning", 2018; Narita, Yasui
& Yata, "Debiased Off-Policy Evaluation for Recommendation Systems", RecSys 2021).

s is chosen from ``prior_strengths`` by ``rule``:

* ``"cv"``: the K-fold cross-validated Bernoulli log loss on the *logged* rounds (the largest s on
  ties). It measures prediction where the logger looked.
* ``"slope"`` / ``"slope++"``: Lepski's method (:class:`evaluation.selectors.Slope`) along the
  direct-method path ``DM_s = Σ_a ρ_a q̂_s(a)``, ρ_a the target policy's item mass, s increasing
  (variance falls; the pull towards p̄, a bias when the logger favours good items, grows). DM_s is
  linear in the clicks, ``DM_s = (1/n) Σ_t φ_t`` with
  ``φ_t = n r_t [ρ_{a_t} / (n_{a_t} + s) + (s / n) Σ_a ρ_a / (n_a + s)]`` (counts n_a held fixed),
  whose standard deviation gives SE_s. This targets the policy value rather than the logged loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from evaluation.estimators import check_threshold
from evaluation.selectors import Slope

DEFAULT_PRIOR_STRENGTHS = (0.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0, math.inf)
LOG_EPS = 1e-12

RewardRule = Literal["cv", "slope", "slope++"]


def target_mass(evaluation_policy: np.ndarray, position: np.ndarray) -> np.ndarray:
    """ρ_a = Σ_k π_e(a | k) · (share of logged rounds at slot k), shape (n_items,).

    ``evaluation_policy`` π_e(a | k) of shape (n_items, n_positions); ``position`` k_t (n_rounds,).
    """
    share = np.bincount(position, minlength=evaluation_policy.shape[1]) / position.size
    return evaluation_policy @ share


@dataclass(frozen=True)
class RewardFit:
    """A fitted, cross-fitted item click-rate model.

    ``tables`` (n_folds, n_items): fold f's q̂ fitted without fold f; ``prior_strength`` the chosen
    s; ``scores`` per candidate s: the mean held-out log loss (rule ``cv``, the candidates' order)
    or the direct-method path DM_s (SLOPE rules, s ascending).
    """

    tables: np.ndarray
    prior_strength: float
    scores: tuple[float, ...]

    def predict(
        self,
        item: np.ndarray,
        position: np.ndarray,
        fold: np.ndarray,
        evaluation_policy: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-round ``q̂(a_t)`` and ``q̂_π(k_t) = Σ_a π_e(a | k_t) q̂(a)``, each (n_rounds,).

        ``item``, ``position``, ``fold`` (n_rounds,); ``evaluation_policy`` π_e(a | k), shape
        (n_items, n_positions), columns summing to 1.
        """
        policy_value = self.tables @ evaluation_policy  # (n_folds, n_positions)
        return self.tables[fold, item], policy_value[fold, position]


@dataclass(frozen=True)
class CrossFittedRewardModel:
    """``q̂_s(a) = (c_a + s p̄) / (n_a + s)``, cross-fitted over ``n_folds``, s chosen by ``rule``.

    ``n_folds = 1`` fits in-sample (then give one strength or a SLOPE rule). Folds are a seeded
    random partition of the rounds (``seed``).
    """

    prior_strengths: tuple[float, ...] = DEFAULT_PRIOR_STRENGTHS
    n_folds: int = 5
    seed: int = 0
    rule: RewardRule = "cv"

    def __post_init__(self) -> None:
        if not isinstance(self.prior_strengths, tuple) or not self.prior_strengths:
            raise ValueError("prior_strengths must be a non-empty tuple")
        for s in self.prior_strengths:
            check_threshold("a prior strength", s, allow_zero=True)
        k = self.n_folds
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"n_folds must be a positive integer, got {k!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int | np.integer):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        if self.rule not in ("cv", "slope", "slope++"):
            raise ValueError(f"rule must be 'cv', 'slope' or 'slope++', got {self.rule!r}")

    def folds(self, n_rounds: int) -> np.ndarray:
        """Fold label of every round, shape (n_rounds,): a seeded permutation, sizes within 1."""
        perm = np.random.default_rng(self.seed).permutation(n_rounds)
        fold = np.empty(n_rounds, np.int64)
        fold[perm] = np.arange(n_rounds) % self.n_folds
        return fold

    @staticmethod
    def table(clicks: np.ndarray, shows: np.ndarray, strength: float) -> np.ndarray:
        """q̂_s per item from click and impression counts of shape (..., n_items)."""
        total = shows.sum(axis=-1, keepdims=True)
        mean = np.where(total > 0, clicks.sum(axis=-1, keepdims=True) / np.maximum(total, 1), 0.0)
        if math.isinf(strength):
            return np.broadcast_to(mean, shows.shape).copy()
        with np.errstate(invalid="ignore", divide="ignore"):
            q = (clicks + strength * mean) / (shows + strength)
        return np.where(shows + strength > 0, q, mean)

    def direct_path(
        self, item: np.ndarray, reward: np.ndarray, target_item_mass: np.ndarray
    ) -> tuple[tuple[float, ...], np.ndarray, np.ndarray]:
        """(strengths ascending, DM_s, SE_s) along the in-sample direct-method path.

        ``item``, ``reward`` (n_rounds,); ``target_item_mass`` ρ_a ≥ 0, shape (n_items,), summing to
        1 (for the uniform policy 1/A). See the module docstring for φ_t.
        """
        rho = np.asarray(target_item_mass, dtype=np.float64)
        n = item.size
        shows = np.bincount(item, minlength=rho.size).astype(np.float64)
        strengths = tuple(sorted(self.prior_strengths))
        values, ses = np.empty(len(strengths)), np.empty(len(strengths))
        empty = shows == 0
        for j, s in enumerate(strengths):
            if math.isinf(s):
                coef, const = np.zeros_like(rho), rho.sum() / n
            elif s == 0:
                coef = np.where(empty, 0.0, rho / np.where(empty, 1.0, shows))
                const = rho[empty].sum() / n
            else:
                coef, const = rho / (shows + s), s / n * float((rho / (shows + s)).sum())
            phi = n * reward * (coef[item] + const)
            values[j], ses[j] = phi.mean(), phi.std() / math.sqrt(n)
        return strengths, values, ses

    def _cv_strength(self, clicks, shows, train_clicks, train_shows, n) -> tuple[float, list]:
        """The s with the lowest held-out log loss (the largest among ties) and every loss."""
        scores = []
        for s in self.prior_strengths:
            q = np.clip(self.table(train_clicks, train_shows, s), LOG_EPS, 1 - LOG_EPS)
            nll = -(clicks * np.log(q) + (shows - clicks) * np.log1p(-q)).sum()
            scores.append(float(nll / max(n, 1)))
        loss = np.asarray(scores)
        ties = np.flatnonzero(loss <= loss.min() + 1e-15)
        best = max(ties, key=lambda j: self.prior_strengths[j])
        return self.prior_strengths[best], scores

    def fit(
        self,
        item: np.ndarray,
        reward: np.ndarray,
        n_items: int,
        fold: np.ndarray | None = None,
        target_item_mass: np.ndarray | None = None,
    ) -> RewardFit:
        """Choose s by ``rule`` and return the cross-fitted tables; arrays of shape (n_rounds,).

        ``item`` a_t ∈ [0, n_items) (integers), ``reward`` 0/1 clicks (the log loss needs them);
        ``fold`` defaults to :meth:`folds`; ``target_item_mass`` (n_items,) is what the SLOPE rules
        aim at (default uniform).
        """
        fold = self.folds(item.size) if fold is None else fold
        k = self.n_folds
        cell = fold * n_items + item
        shows = np.bincount(cell, minlength=k * n_items).reshape(k, n_items).astype(np.float64)
        clicks = np.bincount(cell, reward, minlength=k * n_items).reshape(k, n_items)
        train_shows = shows.sum(axis=0) - shows if k > 1 else shows
        train_clicks = clicks.sum(axis=0) - clicks if k > 1 else clicks
        if self.rule == "cv":
            strength, scores = self._cv_strength(
                clicks, shows, train_clicks, train_shows, item.size
            )
        else:
            mass = np.full(n_items, 1.0 / n_items) if target_item_mass is None else target_item_mass
            strengths, values, ses = self.direct_path(item, reward, mass)
            strength = strengths[Slope(variant=self.rule).choose(values, ses)]
            scores = [float(v) for v in values]
        return RewardFit(self.table(train_clicks, train_shows, strength), strength, tuple(scores))
