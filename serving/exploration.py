"""Exploration: a slate sampled from a softmax over candidate scores, with exact propensities.

With temperature τ > 0 the slate is drawn from the N candidates without replacement, position by
position (the Plackett-Luce model): the item at position p is candidate i with probability

    π_p(i) = exp(s_i/τ) / Σ_{j ∉ placed before p} exp(s_j/τ),

and that step probability is the item's logged ``propensity`` — P(item at position p | the items
placed at positions < p). Their product over the slate is the probability of the whole slate.
τ = 0 is the deterministic top-k by score (ties keep the candidate order), propensity 1.0.

Sampling uses the Gumbel-top-k trick (argsort of s/τ + Gumbel noise is exactly a Plackett-Luce
draw). The denominators are accumulated in log space from positive terms only — the unplaced
candidates' mass plus the suffix sums of the placed ones — so there is no cancellation, no overflow
and no 0/0 for extreme scores: propensities are exact to rounding. The logits are shifted so the
largest is 0 (the softmax is unchanged) and floored at −1e300, so any τ > 0, however tiny
(5e-324), gives finite logits: a vanishing τ is then the top-k with propensities 1, as its limit.
"""

from __future__ import annotations

import numpy as np

MIN_PROPENSITY = float(np.finfo(np.float64).tiny)  # keeps a logged propensity inside (0, 1]
LOGIT_FLOOR = -1e300  # exp() of it is 0, yet every sum and difference of it stays finite


def sample_slate(
    scores: np.ndarray, k: int, temperature: float, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Positions into ``scores`` for a slate of min(k, N) items, and each position's propensity."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1 or not np.all(np.isfinite(scores)):
        raise ValueError("scores must be a 1-d array of finite numbers")
    if k < 1:
        raise ValueError("k must be at least 1")
    if not np.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be a finite number ≥ 0, got {temperature}")
    k = min(k, scores.size)
    if temperature == 0:
        order = np.argsort(-scores, kind="stable")[:k]
        return order, np.ones(k)
    rng = rng if rng is not None else np.random.default_rng()
    with np.errstate(over="ignore"):  # (s - max) / τ may overflow to -inf for a tiny τ
        logits = np.maximum((scores - scores.max()) / temperature, LOGIT_FLOOR)
    # ties (only among floored logits) go to the higher score, as the τ → 0 limit does
    order = np.lexsort((-scores, -(logits + rng.gumbel(size=logits.size))))[:k]
    placed = logits[order]
    rest = np.delete(logits, order)
    rest_lse = rest.max() + np.log(np.exp(rest - rest.max()).sum()) if rest.size else -np.inf
    # log Σ_{j not placed before p} exp(l_j): the unplaced mass plus the suffix of placed ones
    remaining = np.logaddexp(np.logaddexp.accumulate(placed[::-1])[::-1], rest_lse)
    return order, np.clip(np.exp(placed - remaining), MIN_PROPENSITY, 1.0)


def slate_probability(propensities: np.ndarray) -> float:
    """P(the whole slate) = Π_p π_p (Plackett-Luce)."""
    return float(np.prod(propensities))
