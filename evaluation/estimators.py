"""Off-policy estimators of a policy's value from logged data with logged propensities.

A log holds n rounds t = 1..n: context x_t, the logged action a_t (an item, at a position k_t when
the logger fills slates), its reward r_t and the logger's probability ``pscore`` π_0(a_t | x_t, k_t).
The value of an evaluation policy π_e is ``V(π_e) = E_x E_{a∼π_e}[r]``, the expected reward per
round (a click rate when r is a click). Slates are handled position-wise: π(a | x, k) is the
marginal probability of showing a at position k, and each position is one round ("independent"
IPS); this is unbiased when the reward of a slot does not depend on the other slots. Deterministic
top-K slates (one per user) are valued in evaluation/slate.py; IPS-weighted ranking metrics are in
evaluation/ips.py.

Estimators (``w_t = π_e(a_t | x_t, k_t) / π_0(a_t | x_t, k_t)``, clipped at λ where noted):

    naive:  V̂ = (1/n) Σ r_t                                             (the logger's own value)
    IPW:    V̂ = (1/n) Σ min(w_t, λ) r_t
    SNIPW:  V̂ = Σ w_t r_t / Σ w_t
    DR:     V̂ = (1/n) Σ [ q̂_π(x_t) + min(w_t, λ) (r_t − q̂(x_t, a_t)) ]

with a reward model q̂(x, a) and ``q̂_π(x_t) = Σ_a π_e(a | x_t, k_t) q̂(x_t, a)``. Array arguments
are 1-d, shape (n_rounds,). Bootstrap intervals (evaluation/bootstrap.py) resample rounds with
replacement and recompute the estimator (the ratio too, for SNIPW), then take the α/2 and 1 − α/2
percentiles.

References: Horvitz & Thompson (1952); Swaminathan & Joachims, "The Self-Normalized Estimator for
Counterfactual Learning", NeurIPS 2015; Dudík et al., "Doubly Robust Policy Evaluation and
Learning", ICML 2011; Saito et al., Open Bandit Pipeline (st-tech/zr-obp), NeurIPS 2021 D&B.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from evaluation.bootstrap import Interval, check_bootstrap, percentile_interval, ratio_replicates


def vector(name: str, value, n: int | None = None) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-d (n_rounds,), got shape {arr.shape}")
    if n is not None and arr.size != n:
        raise ValueError(f"{name} has {arr.size} rounds, expected {n}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} holds NaN or infinite values")
    return arr


def check_unit(name: str, arr: np.ndarray, open_zero: bool) -> None:
    low_ok = arr > 0 if open_zero else arr >= 0
    if not np.all(low_ok & (arr <= 1)):
        bound = "(0, 1]" if open_zero else "[0, 1]"
        raise ValueError(
            f"{name} must lie in {bound}, found e.g. {arr[~(low_ok & (arr <= 1))][:3]}"
        )


def check_threshold(name: str, value, allow_zero: bool = False) -> None:
    """Fail loudly unless ``value`` is a number in (0, ∞] (or [0, ∞] with ``allow_zero``)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ValueError(f"{name} must be a number or inf, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'≥ 0' if allow_zero else 'positive'}, got {value}")


@dataclass(frozen=True)
class BaseOffPolicyEstimator:
    """An estimator ``V̂ = Σ_t num_t / Σ_t den_t`` of per-round terms (den = 1 for mean estimators).

    Subclasses turn their validated arrays into (num, den) and expose ``estimate_policy_value`` and
    ``estimate_interval`` with explicit signatures; the arithmetic lives here.
    """

    @staticmethod
    def _value(num: np.ndarray, den: np.ndarray | None) -> float:
        return float(num.mean() if den is None else num.sum() / den.sum())

    @staticmethod
    def _interval(
        num: np.ndarray, den: np.ndarray | None, n_bootstrap: int, alpha: float, seed: int
    ) -> Interval:
        """Percentile bootstrap over rounds: resample, recompute Σ num / Σ den, take quantiles."""
        check_bootstrap(n_bootstrap, alpha, seed)
        replicates = ratio_replicates(num, den, n_bootstrap, seed)
        value = BaseOffPolicyEstimator._value(num, den)
        return percentile_interval(value, replicates, alpha, num.size)


@dataclass(frozen=True)
class NaiveAverage(BaseOffPolicyEstimator):
    """``V̂ = (1/n) Σ r_t``: the logger's own value, biased for any other policy (a baseline)."""

    estimator_name: str = "naive"

    @staticmethod
    def _terms(reward) -> tuple[np.ndarray, None]:
        r = vector("reward", reward)
        if r.size == 0:
            raise ValueError("the log holds no rounds")
        return r, None

    def estimate_policy_value(self, reward: np.ndarray) -> float:
        return self._value(*self._terms(reward))

    def estimate_interval(
        self, reward: np.ndarray, n_bootstrap: int = 1000, alpha: float = 0.05, seed: int = 0
    ) -> Interval:
        return self._interval(*self._terms(reward), n_bootstrap, alpha, seed)


@dataclass(frozen=True)
class InverseProbabilityWeighting(BaseOffPolicyEstimator):
    """IPW: ``V̂ = (1/n) Σ_t min(w_t, λ) r_t``, ``w_t = π_e(a_t|x_t) / π_0(a_t|x_t)``.

    Unbiased for λ = ∞ when π_0 > 0 wherever π_e > 0; a finite λ trades a downward bias for lower
    variance. Arguments: ``reward`` r_t, ``pscore`` π_0(a_t | x_t, k_t) ∈ (0, 1],
    ``evaluation_pscore`` π_e(a_t | x_t, k_t) ∈ [0, 1], each of shape (n_rounds,).
    """

    lambda_: float = math.inf
    estimator_name: str = "ipw"

    def __post_init__(self) -> None:
        check_threshold("lambda_", self.lambda_)

    def importance_weights(self, pscore: np.ndarray, evaluation_pscore: np.ndarray) -> np.ndarray:
        """min(π_e / π_0, λ) per round."""
        return np.minimum(evaluation_pscore / pscore, self.lambda_)

    def _weighted(self, reward, pscore, evaluation_pscore) -> tuple[np.ndarray, np.ndarray]:
        """Validated rewards and clipped importance weights."""
        r = vector("reward", reward)
        p0 = vector("pscore", pscore, r.size)
        pe = vector("evaluation_pscore", evaluation_pscore, r.size)
        if r.size == 0:
            raise ValueError("the log holds no rounds")
        check_unit("pscore", p0, open_zero=True)
        check_unit("evaluation_pscore", pe, open_zero=False)
        return r, self.importance_weights(p0, pe)

    def _terms(self, reward, pscore, evaluation_pscore) -> tuple[np.ndarray, np.ndarray | None]:
        r, w = self._weighted(reward, pscore, evaluation_pscore)
        return w * r, None

    def estimate_policy_value(
        self, reward: np.ndarray, pscore: np.ndarray, evaluation_pscore: np.ndarray
    ) -> float:
        """V̂(π_e) from the whole log."""
        return self._value(*self._terms(reward, pscore, evaluation_pscore))

    def estimate_interval(
        self,
        reward: np.ndarray,
        pscore: np.ndarray,
        evaluation_pscore: np.ndarray,
        n_bootstrap: int = 1000,
        alpha: float = 0.05,
        seed: int = 0,
    ) -> Interval:
        """V̂(π_e) and its (1 − α) bootstrap percentile interval over ``n_bootstrap`` resamples."""
        terms = self._terms(reward, pscore, evaluation_pscore)
        return self._interval(*terms, n_bootstrap, alpha, seed)


@dataclass(frozen=True)
class SelfNormalizedInverseProbabilityWeighting(InverseProbabilityWeighting):
    """SNIPW: ``V̂ = Σ_t w_t r_t / Σ_t w_t`` (weights clipped at λ too, λ = ∞ by default).

    Biased but consistent; bounded by the reward range and much less variable than IPW when the
    weights are large. Arguments as for :class:`InverseProbabilityWeighting`.
    """

    estimator_name: str = "snipw"

    def _terms(self, reward, pscore, evaluation_pscore) -> tuple[np.ndarray, np.ndarray]:
        r, w = self._weighted(reward, pscore, evaluation_pscore)
        if not w.sum() > 0:
            raise ValueError(
                "SNIPW is undefined: the evaluation policy gives no logged action mass"
            )
        return w * r, w


@dataclass(frozen=True)
class DoublyRobust(InverseProbabilityWeighting):
    """DR: ``V̂ = (1/n) Σ_t [ q̂_π(x_t) + min(w_t, λ) (r_t − q̂(x_t, a_t)) ]``.

    Unbiased when either the propensities or the reward model are right (λ = ∞). Besides the IPW
    arguments: ``estimated_reward`` q̂(x_t, a_t, k_t) of the logged action and
    ``estimated_policy_reward`` q̂_π(x_t) = Σ_a π_e(a | x_t, k_t) q̂(x_t, a, k_t), shape (n_rounds,)
    (:func:`policy_arrays` builds both from OBP-style arrays).
    """

    estimator_name: str = "dr"

    def _dr_terms(
        self, reward, pscore, evaluation_pscore, estimated_reward, estimated_policy_reward
    ) -> tuple[np.ndarray, None]:
        r, w = self._weighted(reward, pscore, evaluation_pscore)
        q = vector("estimated_reward", estimated_reward, r.size)
        q_pi = vector("estimated_policy_reward", estimated_policy_reward, r.size)
        return q_pi + w * (r - q), None

    def estimate_policy_value(  # type: ignore[override]
        self,
        reward: np.ndarray,
        pscore: np.ndarray,
        evaluation_pscore: np.ndarray,
        estimated_reward: np.ndarray,
        estimated_policy_reward: np.ndarray,
    ) -> float:
        """V̂(π_e) from the whole log and the reward model's predictions."""
        terms = self._dr_terms(
            reward, pscore, evaluation_pscore, estimated_reward, estimated_policy_reward
        )
        return self._value(*terms)

    def estimate_interval(  # type: ignore[override]
        self,
        reward: np.ndarray,
        pscore: np.ndarray,
        evaluation_pscore: np.ndarray,
        estimated_reward: np.ndarray,
        estimated_policy_reward: np.ndarray,
        n_bootstrap: int = 1000,
        alpha: float = 0.05,
        seed: int = 0,
    ) -> Interval:
        """V̂(π_e) and its bootstrap interval (the reward model is held fixed across resamples)."""
        terms = self._dr_terms(
            reward, pscore, evaluation_pscore, estimated_reward, estimated_policy_reward
        )
        return self._interval(*terms, n_bootstrap, alpha, seed)


def policy_arrays(
    action_dist: np.ndarray,
    action: np.ndarray,
    position: np.ndarray | None = None,
    estimated_rewards: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Per-round inputs of the estimators from OBP-style arrays.

    ``action_dist`` π_e(a | x_t, k), shape (n_rounds, n_actions, len_list); ``action`` a_t and
    ``position`` k_t (0-based, default 0), shape (n_rounds,); ``estimated_rewards`` q̂(x_t, a, k),
    shaped like ``action_dist``. Returns ``evaluation_pscore`` and, with a reward model,
    ``estimated_reward`` and ``estimated_policy_reward``.
    """
    dist = np.asarray(action_dist, dtype=np.float64)
    if dist.ndim != 3:
        raise ValueError(f"action_dist must be (n_rounds, n_actions, len_list), got {dist.shape}")
    n = dist.shape[0]
    a = np.asarray(action, dtype=np.int64)
    k = np.zeros(n, np.int64) if position is None else np.asarray(position, dtype=np.int64)
    if a.shape != (n,) or k.shape != (n,):
        raise ValueError("action and position need one entry per round")
    if np.any((a < 0) | (a >= dist.shape[1])) or np.any((k < 0) | (k >= dist.shape[2])):
        raise ValueError("action or position out of range of action_dist")
    if not np.allclose(dist.sum(axis=1), 1.0, atol=1e-6):
        raise ValueError("action_dist must sum to 1 over actions at every (round, position)")
    rows = np.arange(n)
    out = {"evaluation_pscore": dist[rows, a, k]}
    if estimated_rewards is not None:
        q = np.asarray(estimated_rewards, dtype=np.float64)
        if q.shape != dist.shape:
            raise ValueError(f"estimated_rewards {q.shape} must match action_dist {dist.shape}")
        out["estimated_reward"] = q[rows, a, k]
        out["estimated_policy_reward"] = (dist[rows, :, k] * q[rows, :, k]).sum(axis=1)
    return out
