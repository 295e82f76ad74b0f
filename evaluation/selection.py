"""Model selection and comparison: the search budget, and results with intervals that call ties.

``TuneConfig`` is params.yaml's ``tune`` section (the budget of ``python -m experiments.tune``).
:func:`summarise` turns per-user values into a mean with a bootstrap interval and a paired
difference against a reference; :func:`verdict` calls a difference whose interval holds 0 a tie.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy import special

from evaluation.bootstrap import Interval, grouped_replicates, mean_interval, percentile_interval
from evaluation.metrics import auc


class TuneConfig(BaseModel):
    """params.yaml → ``tune``: the budget and sampler of every hyper-parameter search."""

    model_config = ConfigDict(extra="forbid")

    trials: int = Field(25, ge=1, description="trials per study (one study per model and protocol)")
    timeout_minutes: float | None = Field(
        None, gt=0, description="stop a study after this long, whatever the trial count"
    )
    sampler: Literal["tpe", "random"] = Field("tpe", description="Optuna's sampler")
    seed: int = Field(0, description="seed of the sampler")
    storage: str = Field(
        "data/tune/optuna.db", description="sqlite file of the studies (a rerun resumes them)"
    )


def verdict(diff: Interval) -> str:
    """``better`` / ``worse`` when the interval of a difference excludes 0, else ``tie``."""
    if not (math.isfinite(diff.lower) and math.isfinite(diff.upper)):
        return "tie"
    if diff.lower > 0:
        return "better"
    if diff.upper < 0:
        return "worse"
    return "tie"


def _finite(*arrays: np.ndarray) -> np.ndarray:
    keep = np.ones(arrays[0].shape, bool)
    for a in arrays:
        keep &= np.isfinite(a)
    return keep


def summarise(
    values: np.ndarray,
    reference: np.ndarray | None,
    n_bootstrap: int,
    seed: int,
) -> dict:
    """Mean of per-user ``values`` with its 95 % interval and, given the reference model's values
    over the same users, the paired difference with its interval and verdict. Users where either is
    undefined (NaN) are left out of both."""
    values = np.asarray(values, dtype=np.float64)
    keep = _finite(values) if reference is None else _finite(values, reference)
    own = mean_interval(values[_finite(values)], n_bootstrap, seed)
    out = {"mean": own.estimate, "lower": own.lower, "upper": own.upper, "n": int(own.n_rounds)}
    if reference is not None:
        diff = mean_interval(values[keep] - reference[keep], n_bootstrap, seed)
        out["diff"] = {"mean": diff.estimate, "lower": diff.lower, "upper": diff.upper}
        out["verdict"] = verdict(diff)
    return out


def summarise_auc(
    rows: tuple[np.ndarray, np.ndarray, np.ndarray],
    reference: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
    n_bootstrap: int,
    seed: int,
) -> dict:
    """AUC of (scores, labels, users) rows with an interval from resampling users, and the paired
    difference to the reference's scores on the same rows."""
    scores, labels, users = rows
    point = auc(scores, labels)
    reps = grouped_replicates(lambda w: auc(scores, labels, w), users, n_bootstrap, seed)
    own = percentile_interval(point, reps, 0.05, int(np.unique(users).size))
    out = {"mean": own.estimate, "lower": own.lower, "upper": own.upper, "n": own.n_rounds}
    if reference is not None:
        ref_scores = reference[0]
        d_point = point - auc(ref_scores, labels)
        d_reps = grouped_replicates(
            lambda w: auc(scores, labels, w) - auc(ref_scores, labels, w),
            users,
            n_bootstrap,
            seed,
        )
        diff = percentile_interval(d_point, d_reps, 0.05, own.n_rounds)
        out["diff"] = {"mean": diff.estimate, "lower": diff.lower, "upper": diff.upper}
        out["verdict"] = verdict(diff)
    return out


def over_seeds(values: Sequence[float]) -> dict:
    """Mean over seeds with a 95 % Student-t interval (n − 1 degrees of freedom)."""
    v = np.asarray(values, dtype=np.float64)
    n = v.size
    mean = float(v.mean())
    if n < 2:
        return {"mean": mean, "lower": math.nan, "upper": math.nan, "n": n}
    half = float(special.stdtrit(n - 1, 0.975)) * float(v.std(ddof=1)) / math.sqrt(n)
    return {"mean": mean, "lower": mean - half, "upper": mean + half, "n": n}
