"""Off-policy evaluation from logged data with logged propensities, and IPS-weighted ranking metrics.

A log holds n rounds t = 1..n: context x_t, the logged action a_t (an item, at a position k_t when
the logger fills slates), its reward r_t and the logger's probability ``pscore`` π_0(a_t | x_t, k_t).
The value of an evaluation policy π_e is ``V(π_e) = E_x E_{a∼π_e}[r]``, the expected reward per
round (a click rate when r is a click). Slates are handled position-wise: π(a | x, k) is the
marginal probability of showing a at position k, and each position is one round ("independent"
IPS); this is unbiased when the reward of a slot does not depend on the other slots. Deterministic
top-K slates (one per user) are valued by :func:`topk_slate_terms`: item-level SNIPS / SN-DR
towards "a uniform slot of the slate", logged rewards moved to the target slot by the
position-based model, users weighted equally, bootstrap over users (:func:`bootstrap_counts`).

Estimators (``w_t = π_e(a_t | x_t, k_t) / π_0(a_t | x_t, k_t)``, clipped at λ where noted):

    naive:  V̂ = (1/n) Σ r_t                                             (the logger's own value)
    IPW:    V̂ = (1/n) Σ min(w_t, λ) r_t
    SNIPW:  V̂ = Σ w_t r_t / Σ w_t
    DR:     V̂ = (1/n) Σ [ q̂_π(x_t) + min(w_t, λ) (r_t − q̂(x_t, a_t)) ]

with a reward model q̂(x, a) and ``q̂_π(x_t) = Σ_a π_e(a | x_t, k_t) q̂(x_t, a)``. Array arguments
are 1-d, shape (n_rounds,). Bootstrap intervals resample rounds with replacement and recompute the
estimator (the ratio too, for SNIPW), then take the α/2 and 1 − α/2 percentiles.

References: Horvitz & Thompson (1952); Swaminathan & Joachims, "The Self-Normalized Estimator for
Counterfactual Learning", NeurIPS 2015; Dudík et al., "Doubly Robust Policy Evaluation and
Learning", ICML 2011; Saito et al., Open Bandit Pipeline (st-tech/zr-obp), NeurIPS 2021 D&B.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

_BOOTSTRAP_CHUNK = 64


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided (1 − α) bootstrap percentile interval."""

    estimate: float
    lower: float
    upper: float
    alpha: float
    n_rounds: int

    def as_dict(self) -> dict[str, float]:
        return {
            "estimate": self.estimate,
            "lower": self.lower,
            "upper": self.upper,
            "alpha": self.alpha,
            "n_rounds": self.n_rounds,
        }


def _vector(name: str, value, n: int | None = None) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-d (n_rounds,), got shape {arr.shape}")
    if n is not None and arr.size != n:
        raise ValueError(f"{name} has {arr.size} rounds, expected {n}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} holds NaN or infinite values")
    return arr


def _check_unit(name: str, arr: np.ndarray, open_zero: bool) -> None:
    low_ok = arr > 0 if open_zero else arr >= 0
    if not np.all(low_ok & (arr <= 1)):
        bound = "(0, 1]" if open_zero else "[0, 1]"
        raise ValueError(
            f"{name} must lie in {bound}, found e.g. {arr[~(low_ok & (arr <= 1))][:3]}"
        )


def _check_bootstrap(n_bootstrap: int, alpha: float, seed: int) -> None:
    if not isinstance(n_bootstrap, int | np.integer) or n_bootstrap < 2:
        raise ValueError(f"n_bootstrap must be an integer ≥ 2, got {n_bootstrap!r}")
    if not isinstance(alpha, float | int) or not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
    if not isinstance(seed, int | np.integer):
        raise ValueError(f"seed must be an integer, got {seed!r}")


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
        _check_bootstrap(n_bootstrap, alpha, seed)
        n = num.size
        rng = np.random.default_rng(seed)
        stats = np.empty(n_bootstrap)
        for start in range(0, n_bootstrap, _BOOTSTRAP_CHUNK):
            b = min(_BOOTSTRAP_CHUNK, n_bootstrap - start)
            idx = rng.integers(0, n, size=(b, n))
            total = num[idx].sum(axis=1)
            stats[start : start + b] = total / (n if den is None else den[idx].sum(axis=1))
        lo, hi = np.nanquantile(stats, [alpha / 2, 1 - alpha / 2])
        value = BaseOffPolicyEstimator._value(num, den)
        return Interval(value, float(lo), float(hi), float(alpha), n)


@dataclass(frozen=True)
class NaiveAverage(BaseOffPolicyEstimator):
    """``V̂ = (1/n) Σ r_t``: the logger's own value, biased for any other policy (a baseline)."""

    estimator_name: str = "naive"

    @staticmethod
    def _terms(reward) -> tuple[np.ndarray, None]:
        r = _vector("reward", reward)
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
        lam = self.lambda_
        if isinstance(lam, bool) or not isinstance(lam, int | float) or math.isnan(lam):
            raise ValueError(f"lambda_ must be a positive number or inf, got {lam!r}")
        if lam <= 0:
            raise ValueError(f"lambda_ must be positive, got {lam}")

    def importance_weights(self, pscore: np.ndarray, evaluation_pscore: np.ndarray) -> np.ndarray:
        """min(π_e / π_0, λ) per round."""
        return np.minimum(evaluation_pscore / pscore, self.lambda_)

    def _weighted(self, reward, pscore, evaluation_pscore) -> tuple[np.ndarray, np.ndarray]:
        """Validated rewards and clipped importance weights."""
        r = _vector("reward", reward)
        p0 = _vector("pscore", pscore, r.size)
        pe = _vector("evaluation_pscore", evaluation_pscore, r.size)
        if r.size == 0:
            raise ValueError("the log holds no rounds")
        _check_unit("pscore", p0, open_zero=True)
        _check_unit("evaluation_pscore", pe, open_zero=False)
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
        q = _vector("estimated_reward", estimated_reward, r.size)
        q_pi = _vector("estimated_policy_reward", estimated_policy_reward, r.size)
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
        theta = _vector("pos_propensity", pos_propensity)
        pu = np.asarray(pos_users, dtype=np.int64)
        pi = np.asarray(pos_items, dtype=np.int64)
        if pu.shape != theta.shape or pi.shape != theta.shape:
            raise ValueError("pos_users, pos_items and pos_propensity must be aligned")
        _check_unit("pos_propensity", theta, open_zero=True)
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


# ---- top-K slate policies on logged slates (position-based model) -----------------------------


def bootstrap_counts(n_groups: int, n_bootstrap: int, seed: int) -> np.ndarray:
    """(n_bootstrap, n_groups) multinomial counts: how often each group (user) is drawn per replicate.

    Sharing one matrix across policies pairs their replicates, as a correlation across policies
    needs.
    """
    _check_bootstrap(n_bootstrap, 0.05, seed)
    if n_groups < 1:
        raise ValueError("bootstrap_counts needs at least one group")
    rng = np.random.default_rng(seed)
    return np.stack(
        [
            np.bincount(rng.integers(0, n_groups, n_groups), minlength=n_groups)
            for _ in range(n_bootstrap)
        ]
    ).astype(np.float64)


def _percentile_interval(
    value: float, replicates: np.ndarray, alpha: float, n_rounds: int
) -> Interval:
    if np.all(np.isnan(replicates)):
        return Interval(value, math.nan, math.nan, float(alpha), n_rounds)
    lo, hi = np.nanquantile(replicates, [alpha / 2, 1 - alpha / 2])
    return Interval(value, float(lo), float(hi), float(alpha), n_rounds)


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
        return _percentile_interval(float(fn()), fn(counts), alpha, self.n_rounds)


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
    r = _vector("reward", reward)
    p0 = _vector("pscore", pscore, r.size)
    _check_unit("pscore", p0, open_zero=True)
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
    e = _vector("examination", examination)
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
