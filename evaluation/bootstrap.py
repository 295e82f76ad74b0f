"""The one bootstrap of the project: resample units (rounds, users) with replacement, take percentiles.

A replicate is a vector of counts ``c`` (n,): how often each unit was drawn (``c`` ~ Multinomial(n,
1/n)). A statistic that is a ratio of sums over units, ``Σ_u c_u num_u / Σ_u c_u den_u``, is then a
matrix product over all replicates at once; sharing one count matrix across policies pairs their
replicates, as differences and correlations across policies need.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

CHUNK = 64  # replicates drawn at a time (bounds the memory of a (chunk, n) count matrix)


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


Seed = int | np.random.Generator  # a seed, or a generator to draw from (consumed in order)


def check_bootstrap(n_bootstrap: int, alpha: float, seed: Seed) -> None:
    """Fail loudly on a bootstrap setting that cannot give an interval."""
    if not isinstance(n_bootstrap, int | np.integer) or n_bootstrap < 2:
        raise ValueError(f"n_bootstrap must be an integer ≥ 2, got {n_bootstrap!r}")
    if not isinstance(alpha, float | int) or not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
    if not isinstance(seed, int | np.integer | np.random.Generator):
        raise ValueError(f"seed must be an integer or a numpy Generator, got {seed!r}")


def count_chunks(n: int, n_bootstrap: int, seed: Seed) -> Iterator[np.ndarray]:
    """The replicates' count vectors, (≤ CHUNK, n) float arrays at a time, from one seeded stream."""
    check_bootstrap(n_bootstrap, 0.05, seed)
    if n < 1:
        raise ValueError("the bootstrap needs at least one unit")
    rng = np.random.default_rng(seed)
    for start in range(0, n_bootstrap, CHUNK):
        b = min(CHUNK, n_bootstrap - start)
        yield np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(b)]).astype(
            np.float64
        )


def bootstrap_counts(n: int, n_bootstrap: int, seed: Seed) -> np.ndarray:
    """(n_bootstrap, n) counts: how often each unit (round, user) is drawn per replicate."""
    return np.concatenate(list(count_chunks(n, n_bootstrap, seed)))


def ratio_replicates(
    num: np.ndarray, den: np.ndarray | None, n_bootstrap: int, seed: Seed
) -> np.ndarray:
    """Replicates of Σ num / Σ den (Σ num / n without ``den``) over resampled units."""
    n = num.size
    parts = [
        (c @ num) / (n if den is None else c @ den) for c in count_chunks(n, n_bootstrap, seed)
    ]
    return np.concatenate(parts)


def percentile_interval(
    estimate: float, replicates: np.ndarray, alpha: float, n_rounds: int
) -> Interval:
    """The α/2 and 1 − α/2 percentiles of the (finite) replicates around ``estimate``."""
    if np.all(np.isnan(replicates)):
        return Interval(estimate, math.nan, math.nan, float(alpha), n_rounds)
    lo, hi = np.nanquantile(replicates, [alpha / 2, 1 - alpha / 2])
    return Interval(estimate, float(lo), float(hi), float(alpha), n_rounds)


def mean_interval(
    values: np.ndarray, n_bootstrap: int, seed: Seed, alpha: float = 0.05
) -> Interval:
    """The mean of ``values`` (n,) with its percentile interval over resampled units."""
    values = np.asarray(values, dtype=np.float64)
    reps = ratio_replicates(values, None, n_bootstrap, seed)
    return percentile_interval(float(values.mean()), reps, alpha, values.size)


def paired_difference(
    a: np.ndarray, b: np.ndarray, n_bootstrap: int, seed: Seed, alpha: float = 0.05
) -> Interval:
    """mean(a − b) over the same units (users) with its paired percentile interval: each replicate
    resamples the users once for both, so what the two share cancels."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError("paired values must be aligned over the same units")
    return mean_interval(a - b, n_bootstrap, seed, alpha)


def grouped_replicates(statistic, groups: np.ndarray, n_bootstrap: int, seed: Seed) -> np.ndarray:
    """Replicates of ``statistic(weights)`` when whole groups (users) are resampled: a replicate's
    row weights are the draw counts of each row's group (``groups`` (n,) integer group codes).
    Statistics that take row weights (e.g. :func:`evaluation.metrics.auc`) then see the resampled
    data exactly."""
    _, codes = np.unique(groups, return_inverse=True)
    n_groups = int(codes.max()) + 1 if codes.size else 0
    out = []
    for chunk in count_chunks(n_groups, n_bootstrap, seed):
        out.extend(statistic(c[codes]) for c in chunk)
    return np.asarray(out, dtype=np.float64)
