"""Doubly robust estimators that choose their own settings and keep a click rate inside [0, 1].

Notation of :mod:`evaluation.estimators`: a log of n rounds with context x_t, logged item a_t at slot
k_t, reward r_t ∈ [0, 1], logger propensity π_0(a_t | x_t, k_t), target propensity
π_e(a_t | x_t, k_t), weight ``w_t = π_e / π_0``, reward model q̂(x, a, k) and
``q̂_π(x_t, k_t) = Σ_a π_e(a | x_t, k_t) q̂(x_t, a, k_t)``.

**One DR family, three weight modifiers** ŵ_λ(w), λ = ∞ giving plain DR and λ → 0 the direct
method (DM) ``(1/n) Σ_t q̂_π``:

    V̂_λ = (1/n) Σ_t [ q̂_π(x_t, k_t) + ŵ_λ(w_t) (r_t − q̂(x_t, a_t, k_t)) ]

    clipping  (DR-λ):                                    ŵ = min(w, λ)
    switch    (Switch-DR; Wang, Agarwal & Dudík, ICML 2017):  ŵ = w · 1{w ≤ λ}
    shrinkage (DR-OS; Su, Dimakopoulou, Krishnamurthy & Dudík, ICML 2020):  ŵ = λ w / (w² + λ)

The bias of V̂_λ is ``−E[(w − ŵ)(r − q)]`` (zero at λ = ∞ with true propensities); its variance
grows with λ. :class:`AdaptiveDoublyRobust` evaluates every λ of a grid and chooses one with a rule
of :mod:`evaluation.selectors` (SLOPE, SLOPE++, estimated MSE) from the log alone; its reward model
(:mod:`evaluation.reward_model`) is cross-fitted and its prior strength chosen from the log too.

**Range.** A click rate lies in [0, 1], but DR terms can leave it (a huge w on an unclicked round
makes the estimate negative). Estimates are projected onto ``value_range``: since the truth lies in
the range, projection never increases the error of any single estimate (so never the MSE); its
bias on top of the estimator's own is ``E[(lo − V̂)⁺] − E[(V̂ − hi)⁺]``. Intervals are projected
the same way, and with no event in the log the upper end is at least the exact binomial bound for
no event in the Kish effective size of the weights, ``1 − (α/2)^{1/n_eff}``
(:mod:`evaluation.binomial`; exact when w ≡ 1, an on-policy log). The interval of the adaptive
estimator is a percentile bootstrap of the *whole procedure* (reward model refitted, s and λ
re-chosen per resample), or Korn–Graubard's effective-binomial interval at the replicates' variance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from evaluation.binomial import (
    effective_binomial_interval,
    kish_effective_size,
    zero_event_upper_bound,
)
from evaluation.bootstrap import Interval, check_bootstrap
from evaluation.estimators import DoublyRobust, check_threshold, check_unit, vector
from evaluation.reward_model import CrossFittedRewardModel, RewardFit, target_mass
from evaluation.selectors import EstimatedMSE, Selector, Slope

Modifier = Literal["clipping", "switch", "shrinkage"]
IntervalMethod = Literal["percentile", "korn-graubard"]
ValueRange = tuple[float, float] | None

# Clipping / switch thresholds ∞, 1024, 512, …, 0.25; DR-OS uses λ = 4c², so that its largest
# modified weight √λ / 2 equals the clipping threshold c.
_CLIP_GRID = (math.inf, *(2.0**j for j in range(10, -3, -1)))
DEFAULT_LAMBDAS: dict[str, tuple[float, ...]] = {
    "clipping": _CLIP_GRID,
    "switch": _CLIP_GRID,
    "shrinkage": tuple(4.0 * c * c for c in _CLIP_GRID),
}


def modify_weights(w: np.ndarray, modifier: Modifier, lambda_: float) -> np.ndarray:
    """ŵ_λ(w) of one modifier, shape of ``w``; λ = ∞ returns w, λ = 0 returns zeros."""
    if modifier not in DEFAULT_LAMBDAS:
        raise ValueError(f"modifier must be clipping, switch or shrinkage, got {modifier!r}")
    if math.isinf(lambda_):
        return w.copy()
    if modifier == "clipping":
        return np.minimum(w, lambda_)
    if modifier == "switch":
        return np.where(w <= lambda_, w, 0.0)
    return lambda_ * w / (w * w + lambda_) if lambda_ > 0 else np.zeros_like(w)


def modified_weight_matrix(
    weights: np.ndarray, modifier: Modifier, lambdas: tuple[float, ...]
) -> np.ndarray:
    """ŵ_λ(w) for every λ at once, shape (L, n_rounds); row j equals ``modify_weights(w, λ_j)``."""
    if modifier not in DEFAULT_LAMBDAS:
        raise ValueError(f"modifier must be clipping, switch or shrinkage, got {modifier!r}")
    w = weights[None, :]
    lam = np.asarray(lambdas, dtype=np.float64)[:, None]
    inf = np.isinf(lam)
    finite = np.where(inf, 1.0, lam)
    if modifier == "clipping":
        out = np.minimum(w, finite)
    elif modifier == "switch":
        out = np.where(w <= finite, w, 0.0)
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.where(finite > 0, finite * w / (w * w + finite), 0.0)
    return np.where(inf, w, out)


# ---- range -------------------------------------------------------------------------------------


def check_range(value_range) -> None:
    """Fail loudly unless ``value_range`` is None or a finite (low, high) tuple with low < high."""
    if value_range is None:
        return
    ok = isinstance(value_range, tuple) and len(value_range) == 2
    if not ok or not all(
        not isinstance(v, bool) and isinstance(v, int | float) and math.isfinite(v)
        for v in value_range
    ):
        raise ValueError(f"value_range must be a (low, high) tuple of numbers, got {value_range!r}")
    if not value_range[0] < value_range[1]:
        raise ValueError(f"value_range needs low < high, got {value_range!r}")


def project(value: float, value_range: ValueRange) -> float:
    """``value`` clipped to ``value_range`` (unchanged when it is None)."""
    if value_range is None:
        return float(value)
    return float(min(max(value, value_range[0]), value_range[1]))


def finish_interval(
    estimate: float,
    lower: float,
    upper: float,
    alpha: float,
    reward: np.ndarray,
    weights: np.ndarray,
    value_range: ValueRange,
) -> Interval:
    """Project an estimate and interval onto the range; with no event in ``reward`` (n,), set the
    lower end to the range's low and raise the upper end to the exact zero-event bound at the Kish
    effective size of ``weights`` (n,)."""
    est, lo, hi = (project(v, value_range) for v in (estimate, lower, upper))
    if value_range is not None and not np.any(reward > value_range[0]):
        n_eff = kish_effective_size(weights)
        if n_eff > 0:
            width = value_range[1] - value_range[0]
            bound = value_range[0] + width * zero_event_upper_bound(n_eff, alpha)
            lo, hi = value_range[0], max(hi, bound)
    return Interval(est, lo, hi, float(alpha), int(reward.size))


def interval_from_replicates(
    estimate: float,
    replicates: np.ndarray,
    alpha: float,
    method: IntervalMethod,
    value_range: ValueRange,
    n_rounds: int,
) -> tuple[float, float]:
    """(lower, upper) from unprojected bootstrap replicates (B,), by ``method``.

    ``percentile``: the α/2 and 1 − α/2 quantiles, projected. ``korn-graubard``:
    :func:`evaluation.binomial.effective_binomial_interval` at the replicates' variance (needs
    ``value_range`` (0, 1)); where that is undefined, the percentiles of the projected replicates.
    """
    reps = replicates[np.isfinite(replicates)]
    if reps.size == 0:
        return math.nan, math.nan
    if method == "percentile":
        lo, hi = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
        return project(lo, value_range), project(hi, value_range)
    if method == "korn-graubard":
        if value_range != (0.0, 1.0):
            raise ValueError("the Korn–Graubard interval needs value_range (0.0, 1.0)")
        lo, hi = effective_binomial_interval(estimate, float(reps.var(ddof=1)), n_rounds, alpha)
        if math.isnan(lo):
            lo, hi = np.quantile(np.clip(reps, 0.0, 1.0), [alpha / 2, 1 - alpha / 2])
        return float(lo), float(hi)
    raise ValueError(f"method must be 'percentile' or 'korn-graubard', got {method!r}")


# ---- fixed-λ estimators ------------------------------------------------------------------------


@dataclass(frozen=True)
class BoundedDoublyRobust(DoublyRobust):
    """DR with clipped weights, estimate and interval projected onto ``value_range``:

    ``V̂ = Π_[lo,hi]( (1/n) Σ_t [ q̂_π(x_t) + min(w_t, λ) (r_t − q̂(x_t, a_t)) ] )``.

    Arguments as for :class:`evaluation.estimators.DoublyRobust`, each of shape (n_rounds,). The
    interval holds q̂ fixed across resamples; with no event it gets the zero-event upper bound.
    """

    value_range: ValueRange = (0.0, 1.0)
    estimator_name: str = "dr-bounded"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(self.value_range)

    def estimate_policy_value(  # type: ignore[override]
        self,
        reward: np.ndarray,
        pscore: np.ndarray,
        evaluation_pscore: np.ndarray,
        estimated_reward: np.ndarray,
        estimated_policy_reward: np.ndarray,
    ) -> float:
        """V̂(π_e), projected onto ``value_range``."""
        raw = super().estimate_policy_value(
            reward, pscore, evaluation_pscore, estimated_reward, estimated_policy_reward
        )
        return project(raw, self.value_range)

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
        """V̂(π_e) and its projected bootstrap interval (zero-event bound when Σ r = 0)."""
        iv = super().estimate_interval(
            reward, pscore, evaluation_pscore, estimated_reward, estimated_policy_reward,
            n_bootstrap, alpha, seed,
        )  # fmt: skip
        r = vector("reward", reward)
        w = vector("evaluation_pscore", evaluation_pscore) / vector("pscore", pscore)
        return finish_interval(iv.estimate, iv.lower, iv.upper, alpha, r, w, self.value_range)


@dataclass(frozen=True)
class SwitchDoublyRobust(BoundedDoublyRobust):
    """Switch-DR: ``V̂ = Π( (1/n) Σ_t [ q̂_π(x_t) + w_t 1{w_t ≤ λ} (r_t − q̂(x_t, a_t)) ] )``.

    Rounds whose weight exceeds the threshold λ fall back to the reward model alone; λ = ∞ is DR.
    Arguments as for :class:`evaluation.estimators.DoublyRobust`, each of shape (n_rounds,).
    Reference: Wang, Agarwal & Dudík, "Optimal and Adaptive Off-policy Evaluation in Contextual
    Bandits", ICML 2017.
    """

    estimator_name: str = "switch-dr"

    def importance_weights(self, pscore: np.ndarray, evaluation_pscore: np.ndarray) -> np.ndarray:
        return modify_weights(evaluation_pscore / pscore, "switch", self.lambda_)


@dataclass(frozen=True)
class DoublyRobustWithShrinkage(BoundedDoublyRobust):
    """DR-OS: ``V̂ = Π( (1/n) Σ_t [ q̂_π(x_t) + λ w_t / (w_t² + λ) (r_t − q̂(x_t, a_t)) ] )``.

    The shrunk weight minimises a bound on each term's squared error; it never exceeds √λ / 2 and
    goes to 0 for huge w. λ = ∞ is DR, λ = 0 the direct method. Arguments as for
    :class:`evaluation.estimators.DoublyRobust`, each of shape (n_rounds,). Reference: Su,
    Dimakopoulou, Krishnamurthy & Dudík, "Doubly Robust Off-Policy Evaluation with Shrinkage",
    ICML 2020.
    """

    estimator_name: str = "dr-os"

    def __post_init__(self) -> None:
        check_threshold("lambda_", self.lambda_, allow_zero=True)
        check_range(self.value_range)

    def importance_weights(self, pscore: np.ndarray, evaluation_pscore: np.ndarray) -> np.ndarray:
        return modify_weights(evaluation_pscore / pscore, "shrinkage", self.lambda_)


# ---- every λ at once ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidates:
    """Every candidate λ's estimate and standard error, with the direct bias estimates.

    Arrays of shape (L,), ordered like ``lambdas`` (decreasing): ``values`` V̂_λ (unprojected),
    ``std_errors`` sd(terms) / √n, ``bias`` the mean of (w − ŵ)(r − q̂), ``bias_se`` its standard
    error.
    """

    lambdas: tuple[float, ...]
    values: np.ndarray
    std_errors: np.ndarray
    bias: np.ndarray
    bias_se: np.ndarray


def candidates_from_weights(
    lambdas: tuple[float, ...],
    w_hat: np.ndarray,
    w_hat_sq: np.ndarray,
    reward: np.ndarray,
    weights: np.ndarray,
    estimated_reward: np.ndarray,
    estimated_policy_reward: np.ndarray,
) -> Candidates:
    """The DR family on every λ from precomputed ŵ and ŵ², shape (L, n_rounds); ``reward``,
    unmodified ``weights`` w, ``estimated_reward`` q̂ and ``estimated_policy_reward`` q̂_π of shape
    (n_rounds,). A bootstrap resample gathers the columns of ŵ instead of recomputing them.

    Moments by matrix-vector products: with e = r − q̂, terms t = q̂_π + ŵ e and gaps
    d = (w − ŵ) e, ``E[t²] = E[q̂_π²] + 2 ŵ·(q̂_π e)/n + ŵ²·e²/n`` and
    ``E[d²] = E[w² e²] − 2 ŵ·(w e²)/n + ŵ²·e²/n``.
    """
    n = reward.size
    e = reward - estimated_reward
    e2 = e * e
    q_pi = estimated_policy_reward
    we = w_hat @ e / n
    w2e2 = w_hat_sq @ e2 / n
    values = q_pi.mean() + we
    second = (q_pi * q_pi).mean() + 2 * (w_hat @ (q_pi * e)) / n + w2e2
    bias = (weights * e).mean() - we
    bias_second = (weights * weights * e2).mean() - 2 * (w_hat @ (weights * e2)) / n + w2e2
    root_n = math.sqrt(n)
    ses = np.sqrt(np.maximum(second - values**2, 0.0)) / root_n
    bias_se = np.sqrt(np.maximum(bias_second - bias**2, 0.0)) / root_n
    return Candidates(tuple(lambdas), values, ses, bias, bias_se)


def dr_candidates(
    modifier: Modifier,
    lambdas: tuple[float, ...],
    reward: np.ndarray,
    weights: np.ndarray,
    estimated_reward: np.ndarray,
    estimated_policy_reward: np.ndarray,
) -> Candidates:
    """The DR family of ``modifier`` on every λ; arrays of shape (n_rounds,), w = π_e / π_0."""
    w_hat = modified_weight_matrix(weights, modifier, tuple(lambdas))
    return candidates_from_weights(
        tuple(lambdas), w_hat, w_hat * w_hat, reward, weights, estimated_reward,
        estimated_policy_reward,
    )  # fmt: skip


# ---- λ and s chosen from the log ---------------------------------------------------------------


@dataclass(frozen=True)
class AdaptiveFit:
    """One run of :class:`AdaptiveDoublyRobust`: the projected ``value``, the unprojected
    ``raw_value``, the chosen ``lambda_`` and reward-model ``prior_strength``, every candidate."""

    value: float
    raw_value: float
    lambda_: float
    prior_strength: float
    candidates: Candidates


@dataclass(frozen=True)
class LogArrays:
    """A validated log: ``reward`` (0/1), ``pscore``, ``item``, ``position`` of shape (n_rounds,)
    and the context-free ``evaluation_policy`` π_e(a | k) of shape (n_items, n_positions)."""

    reward: np.ndarray
    pscore: np.ndarray
    item: np.ndarray
    position: np.ndarray
    evaluation_policy: np.ndarray

    @property
    def weights(self) -> np.ndarray:
        """w_t = π_e(a_t | k_t) / π_0(a_t | k_t), shape (n_rounds,)."""
        return self.evaluation_policy[self.item, self.position] / self.pscore


def log_arrays(reward, pscore, item, position, evaluation_policy) -> LogArrays:
    """Validate a bandit log (see :class:`LogArrays`); fails with a message naming the argument."""
    r = vector("reward", reward)
    if r.size == 0:
        raise ValueError("the log holds no rounds")
    if not np.all((r == 0) | (r == 1)):
        raise ValueError("reward must be 0/1 clicks (the reward model's log loss needs them)")
    p0 = vector("pscore", pscore, r.size)
    check_unit("pscore", p0, open_zero=True)
    pie = np.asarray(evaluation_policy, dtype=np.float64)
    if pie.ndim != 2 or not np.all(np.isfinite(pie)):
        raise ValueError(
            f"evaluation_policy must be finite (n_items, n_positions), got {pie.shape}"
        )
    check_unit("evaluation_policy", pie.ravel(), open_zero=False)
    if not np.allclose(pie.sum(axis=0), 1.0, atol=1e-6):
        raise ValueError("evaluation_policy must sum to 1 over items at every position")
    arrays = {}
    for name, value, size in (("item", item, pie.shape[0]), ("position", position, pie.shape[1])):
        arr = np.asarray(value)
        if arr.shape != r.shape or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{name} must be integers of shape {r.shape}")
        if arr.min() < 0 or arr.max() >= size:
            raise ValueError(f"{name} out of range [0, {size})")
        arrays[name] = arr.astype(np.int64)
    return LogArrays(r, p0, arrays["item"], arrays["position"], pie)


@dataclass(frozen=True)
class AdaptiveDoublyRobust:
    """DR / Switch-DR / DR-OS with λ chosen from the log and a cross-fitted reward model:

    ``V̂ = Π_[lo,hi]( (1/n) Σ_t [ q̂^{(−f_t)}_π(k_t) + ŵ_λ̂(w_t) (r_t − q̂^{(−f_t)}(a_t)) ] )``

    with q̂^{(−f)} the item click-rate table fitted without fold f (prior strength s chosen by the
    reward model's rule, :class:`evaluation.reward_model.CrossFittedRewardModel`) and λ̂ chosen by
    ``selector`` (:class:`evaluation.selectors.Slope` or ``EstimatedMSE``) from ``lambdas``
    (default :data:`DEFAULT_LAMBDAS` of the modifier). A one-element grid fixes λ (``(inf,)``:
    cross-fitted DR; ``(0.0,)``: the direct method).

    Arguments of the estimate methods: ``reward`` r_t ∈ {0, 1}, ``pscore`` π_0(a_t | x_t, k_t),
    ``item`` a_t ∈ [0, n_items) and ``position`` k_t ∈ [0, n_positions), each of shape (n_rounds,);
    ``evaluation_policy`` π_e(a | k) of shape (n_items, n_positions), context-free, each column
    summing to 1 (the uniform random policy: ``np.full((n_items, K), 1 / n_items)``).
    """

    modifier: Modifier = "switch"
    selector: Selector = field(default_factory=lambda: Slope(variant="slope++"))
    lambdas: tuple[float, ...] | None = None
    reward_model: CrossFittedRewardModel = field(
        default_factory=lambda: CrossFittedRewardModel(rule="slope++")
    )
    value_range: ValueRange = (0.0, 1.0)
    estimator_name: str = "adaptive-dr"

    def __post_init__(self) -> None:
        if self.modifier not in DEFAULT_LAMBDAS:
            raise ValueError(
                f"modifier must be one of {sorted(DEFAULT_LAMBDAS)}, got {self.modifier!r}"
            )
        if not isinstance(self.selector, Slope | EstimatedMSE):
            raise ValueError(f"selector must be Slope or EstimatedMSE, got {self.selector!r}")
        if self.lambdas is not None:
            if not isinstance(self.lambdas, tuple) or not self.lambdas:
                raise ValueError("lambdas must be a non-empty tuple")
            for lam in self.lambdas:
                check_threshold("an element of lambdas", lam, allow_zero=True)
            if len(set(self.lambdas)) != len(self.lambdas):
                raise ValueError("lambdas must be distinct")
        if not isinstance(self.reward_model, CrossFittedRewardModel):
            raise ValueError("reward_model must be a CrossFittedRewardModel")
        check_range(self.value_range)

    @property
    def grid(self) -> tuple[float, ...]:
        """Candidate λ in decreasing order (the order the selection rules assume)."""
        lams = DEFAULT_LAMBDAS[self.modifier] if self.lambdas is None else self.lambdas
        return tuple(sorted(lams, reverse=True))

    def fit_reward_model(self, log: LogArrays, fold: np.ndarray) -> RewardFit:
        """The cross-fitted reward model of ``log`` with ``fold`` labels (n_rounds,)."""
        mass = target_mass(log.evaluation_policy, log.position)
        return self.reward_model.fit(
            log.item, log.reward, log.evaluation_policy.shape[0], fold, mass
        )

    def fit_log(self, log: LogArrays, fold: np.ndarray) -> AdaptiveFit:
        """The estimate of a validated log with the reward model's ``fold`` labels (n_rounds,)."""
        reward_fit = self.fit_reward_model(log, fold)
        q, q_pi = reward_fit.predict(log.item, log.position, fold, log.evaluation_policy)
        cands = dr_candidates(self.modifier, self.grid, log.reward, log.weights, q, q_pi)
        return self.select(cands, reward_fit.prior_strength)

    def select(self, cands: Candidates, prior_strength: float = math.nan) -> AdaptiveFit:
        """Apply the selection rule to evaluated candidates (of this estimator's grid)."""
        j = self.selector.choose(
            cands.values, cands.std_errors, bias=cands.bias, bias_se=cands.bias_se
        )
        raw = float(cands.values[j])
        return AdaptiveFit(
            project(raw, self.value_range), raw, cands.lambdas[j], prior_strength, cands
        )

    def fit(
        self,
        reward: np.ndarray,
        pscore: np.ndarray,
        item: np.ndarray,
        position: np.ndarray,
        evaluation_policy: np.ndarray,
    ) -> AdaptiveFit:
        """The estimate with its chosen λ and s and every candidate (:class:`AdaptiveFit`)."""
        log = log_arrays(reward, pscore, item, position, evaluation_policy)
        return self.fit_log(log, self.reward_model.folds(log.reward.size))

    def estimate_policy_value(
        self,
        reward: np.ndarray,
        pscore: np.ndarray,
        item: np.ndarray,
        position: np.ndarray,
        evaluation_policy: np.ndarray,
    ) -> float:
        """V̂(π_e), projected onto ``value_range``."""
        return self.fit(reward, pscore, item, position, evaluation_policy).value

    def bootstrap(
        self,
        reward: np.ndarray,
        pscore: np.ndarray,
        item: np.ndarray,
        position: np.ndarray,
        evaluation_policy: np.ndarray,
        n_bootstrap: int = 1000,
        seed: int = 0,
    ) -> tuple[AdaptiveFit, np.ndarray]:
        """The fit and ``n_bootstrap`` unprojected replicates of the whole procedure, shape (B,).

        Each replicate resamples rounds with replacement (their fold labels travel with them),
        re-chooses s, refits the reward model and re-selects λ.
        """
        check_bootstrap(n_bootstrap, 0.05, seed)
        log = log_arrays(reward, pscore, item, position, evaluation_policy)
        fold = self.reward_model.folds(log.reward.size)
        full = self.fit_log(log, fold)
        rng = np.random.default_rng(seed)
        reps = np.empty(n_bootstrap)
        pie = log.evaluation_policy
        for b in range(n_bootstrap):
            idx = rng.integers(0, log.reward.size, log.reward.size)
            resample = LogArrays(
                log.reward[idx], log.pscore[idx], log.item[idx], log.position[idx], pie
            )
            reps[b] = self.fit_log(resample, fold[idx]).raw_value
        return full, reps

    def estimate_interval(
        self,
        reward: np.ndarray,
        pscore: np.ndarray,
        item: np.ndarray,
        position: np.ndarray,
        evaluation_policy: np.ndarray,
        n_bootstrap: int = 1000,
        alpha: float = 0.05,
        seed: int = 0,
        method: IntervalMethod = "percentile",
    ) -> Interval:
        """V̂(π_e) and a (1 − α) interval inside ``value_range``.

        ``percentile``: the α/2 and 1 − α/2 quantiles of the whole-procedure replicates, projected.
        ``korn-graubard``: :func:`evaluation.binomial.effective_binomial_interval` at the
        replicates' variance (needs value_range (0, 1)). With no click in the log the upper end is
        at least the zero-event bound.
        """
        check_bootstrap(n_bootstrap, alpha, seed)
        if method not in ("percentile", "korn-graubard"):
            raise ValueError(f"method must be 'percentile' or 'korn-graubard', got {method!r}")
        full, reps = self.bootstrap(
            reward, pscore, item, position, evaluation_policy, n_bootstrap, seed
        )
        log = log_arrays(reward, pscore, item, position, evaluation_policy)
        lo, hi = interval_from_replicates(
            full.value, reps, alpha, method, self.value_range, log.reward.size
        )
        return finish_interval(full.value, lo, hi, alpha, log.reward, log.weights, self.value_range)


def recommended_estimator() -> AdaptiveDoublyRobust:
    """The estimator the simulation study recommends for OBD-sized logs (≈ 10 000 rounds, ≈ 40
    clicks): Switch-DR, λ by SLOPE++, the reward model's s by SLOPE++ on the direct-method path,
    5-fold cross-fitting, estimate projected onto [0, 1] (``python -m experiments.ope_selection``;
    docs/off-policy-evaluation.md says at which log sizes to trust it)."""
    return AdaptiveDoublyRobust(
        "switch", Slope(variant="slope++"), reward_model=CrossFittedRewardModel(rule="slope++")
    )
