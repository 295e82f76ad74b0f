"""Rules that choose an estimator's setting from the log alone, never from the truth.

The candidates are one estimator family over a grid of a setting (a clipping or switch threshold
λ, a reward model's prior strength s), ordered so that variance falls and bias grows along the list
(λ decreasing; s increasing). Per candidate i the rule sees its value V̂_i and standard error SE_i
(and, for the estimated MSE, a direct bias estimate b̂_i with its standard error), shapes (L,).

* SLOPE (Su, Srinath & Krishnamurthy, "Adaptive Estimator Selection for Off-Policy Evaluation",
  ICML 2020; Lepski's method): ``cnf_i = z_{1−δ/2} SE_i``; walk down the list while the intervals
  [V̂_i ± 2 cnf_i] of every candidate so far share a point, i.e. ``|V̂_i − V̂_j| ≤ 2 cnf_i + 2 cnf_j``
  for all j < i; return the last candidate accepted.
* SLOPE++ (Tucker & Lee, "Improved Estimator Selection for Off-Policy Evaluation", 2021):
  ``cnf_i = z_{1−δ} SE_i`` and the test ``|V̂_i − V̂_j| ≤ cnf_i + (√6 − 1) cnf_j`` (tighter widths,
  the same guarantee up to a constant).
* Estimated MSE (the tuning of Su, Dimakopoulou, Krishnamurthy & Dudík, "Doubly Robust Off-Policy
  Evaluation with Shrinkage", ICML 2020, and of OBP's ``*Tuning`` estimators):
  ``MSE_i = SE_i² + (|b̂_i| + z_{1−δ/2} SE(b̂_i))²``, the arg-min (first on ties).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist
from typing import Literal

import numpy as np


@lru_cache(maxsize=64)
def normal_quantile(p: float) -> float:
    """Standard normal quantile (cached: a bootstrap calls the rules once per replicate)."""
    return NormalDist().inv_cdf(p)


def _check_delta(delta) -> None:
    if isinstance(delta, bool) or not isinstance(delta, float | int) or not 0 < delta < 1:
        raise ValueError(f"delta must lie in (0, 1), got {delta!r}")


def _check_candidates(values: np.ndarray, std_errors: np.ndarray) -> None:
    if values.ndim != 1 or values.shape != std_errors.shape or values.size == 0:
        raise ValueError(
            f"values and std_errors must be non-empty (L,) arrays, got {values.shape}, "
            f"{std_errors.shape}"
        )


@dataclass(frozen=True)
class Slope:
    """SLOPE (``variant="slope"``) or SLOPE++ over candidates ordered by growing bias.

    ``delta`` is the failure probability of each candidate's confidence width.
    """

    delta: float = 0.05
    variant: Literal["slope", "slope++"] = "slope"

    def __post_init__(self) -> None:
        _check_delta(self.delta)
        if self.variant not in ("slope", "slope++"):
            raise ValueError(f"variant must be 'slope' or 'slope++', got {self.variant!r}")

    @property
    def name(self) -> str:
        return "SLOPE++" if self.variant == "slope++" else "SLOPE"

    def choose(self, values: np.ndarray, std_errors: np.ndarray, **_) -> int:
        """Index of the chosen candidate; ``values`` V̂_i and ``std_errors`` SE_i of shape (L,)."""
        _check_candidates(values, std_errors)
        if self.variant == "slope":
            cnf = normal_quantile(1 - self.delta / 2) * std_errors
            own, earlier = 2.0, 2.0
        else:
            cnf = normal_quantile(1 - self.delta) * std_errors
            own, earlier = 1.0, math.sqrt(6.0) - 1.0
        # ok[i, j]: candidate i's interval meets candidate j's; only j < i counts.
        ok = (
            np.abs(values[:, None] - values[None, :]) <= own * cnf[:, None] + earlier * cnf[None, :]
        )
        ok |= ~np.tri(values.size, k=-1, dtype=bool)
        accepted = ok.all(axis=1)  # accepted[0] is always True
        return int(values.size - 1 if accepted.all() else np.argmin(accepted) - 1)


@dataclass(frozen=True)
class EstimatedMSE:
    """Arg-min over the candidates of ``SE² + (|b̂| + z_{1−δ/2} SE(b̂))²`` (first on ties)."""

    delta: float = 0.05

    def __post_init__(self) -> None:
        _check_delta(self.delta)

    @property
    def name(self) -> str:
        return "MSE"

    def choose(
        self, values: np.ndarray, std_errors: np.ndarray, bias: np.ndarray, bias_se: np.ndarray
    ) -> int:
        """Index of the chosen candidate; every argument of shape (L,)."""
        _check_candidates(values, std_errors)
        z = normal_quantile(1 - self.delta / 2)
        return int(np.argmin(std_errors**2 + (np.abs(bias) + z * bias_se) ** 2))


Selector = Slope | EstimatedMSE
