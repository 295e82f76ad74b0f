"""Exact binomial bounds for rates, for logs with few or no events.

A click (or love) rate estimated from n rounds with x events is a binomial proportion; with the
handful of events of a bandit log (about 40 clicks in 10 000 OBD rounds) normal and bootstrap
intervals are unreliable, and with x = 0 a percentile bootstrap collapses to [0, 0]. Exact intervals:

    Clopper–Pearson:  lower = B(α/2; x, n − x + 1),  upper = B(1 − α/2; x + 1, n − x)
    no event (x = 0): upper = 1 − (α/2)^{1/n}   (≈ 3.7 / n two-sided at α = 0.05)
    rule of three:    upper = 1 − α^{1/n} ≈ 3 / n   (its one-sided 95 % form)

with B(q; a, b) the beta quantile. An importance-weighted estimate is not a plain proportion; its
*effective* number of trials takes the place of n: Kish's ``n_eff = (Σ w)² / Σ w²`` for the weights
of a zero-event log, or ``n_eff = p̂(1 − p̂) / Var̂(p̂)`` for an estimate with a variance
(Korn & Graubard's effective-binomial interval).

References: Clopper & Pearson, "The use of confidence or fiducial limits illustrated in the case of
the binomial", Biometrika 1934; Hanley & Lippman-Hand, "If nothing goes wrong, is everything all
right?", JAMA 1983 (rule of three); Korn & Graubard, "Confidence intervals for proportions with
small expected number of positive counts estimated from survey data", Survey Methodology 1998;
Kish, "Survey Sampling", 1965.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special


def _check_alpha(alpha: float) -> None:
    if isinstance(alpha, bool) or not isinstance(alpha, float | int) or not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")


def kish_effective_size(weights: np.ndarray) -> float:
    """Kish's effective sample size ``(Σ w)² / Σ w²`` of non-negative weights, shape (n,).

    ``n`` for equal weights, 1 when one weight carries everything, 0 when all weights are 0.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("weights must be a 1-d array of finite, non-negative numbers")
    total = float((w * w).sum())
    return float(w.sum() ** 2 / total) if total > 0 else 0.0


def clopper_pearson(events: float, n: float, alpha: float = 0.05) -> tuple[float, float]:
    """Exact two-sided (1 − α) interval of a rate with ``events`` successes in ``n`` trials.

    ``lower = B(α/2; x, n − x + 1)`` (0 when x = 0), ``upper = B(1 − α/2; x + 1, n − x)`` (1 when
    x = n). Non-integer x and n (effective counts) are allowed.
    """
    if not (math.isfinite(n) and n > 0):
        raise ValueError(f"n must be a positive number, got {n!r}")
    if not (math.isfinite(events) and 0 <= events <= n):
        raise ValueError(f"events must lie in [0, n], got {events!r}")
    _check_alpha(alpha)
    lower = 0.0 if events == 0 else float(special.betaincinv(events, n - events + 1, alpha / 2))
    upper = 1.0 if events == n else float(special.betaincinv(events + 1, n - events, 1 - alpha / 2))
    return lower, upper


def zero_event_upper_bound(n_eff: float, alpha: float = 0.05, one_sided: bool = False) -> float:
    """Upper (1 − α) bound of a rate with no event in ``n_eff`` trials: ``1 − a^{1/n_eff}``.

    ``a = α/2``, the upper end of the two-sided Clopper–Pearson interval, or ``a = α`` when
    ``one_sided``: at α = 0.05 the exact form of the rule of three, ≈ 3 / n_eff.
    """
    if not (math.isfinite(n_eff) and n_eff > 0):
        raise ValueError(f"n_eff must be a positive number, got {n_eff!r}")
    _check_alpha(alpha)
    a = alpha if one_sided else alpha / 2
    return float(-math.expm1(math.log(a) / n_eff))


def effective_binomial_interval(
    estimate: float, variance: float, n_rounds: int, alpha: float = 0.05
) -> tuple[float, float]:
    """Korn–Graubard interval: Clopper–Pearson at ``n_eff = p(1 − p) / variance`` (capped at
    ``n_rounds``) with ``p · n_eff`` events.

    ``estimate`` p must lie in [0, 1]. Returns (nan, nan) where n_eff is undefined (p ∈ {0, 1} or a
    zero variance): callers then fall back to the zero-event bound or the percentiles.
    """
    p = float(estimate)
    if not 0 <= p <= 1:
        raise ValueError(f"estimate must lie in [0, 1], got {p}")
    if not (variance > 0) or p in (0.0, 1.0):
        return math.nan, math.nan
    n_eff = min(float(n_rounds), p * (1 - p) / variance)
    return clopper_pearson(p * n_eff, n_eff, alpha)
