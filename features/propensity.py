"""Exposure propensities: estimated from item popularity (methods.md §2), and their distribution."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class PropensityConfig(BaseModel):
    """θ_i = max((n_i / max_j n_j)^η, floor), n_i = training positives of item i."""

    model_config = ConfigDict(extra="forbid")

    eta: float = Field(0.5, ge=0, description="η, the power of the popularity ratio")
    floor: float = Field(1e-3, gt=0, le=1, description="θ of items with too few positives")


def estimate_item_propensity(positives: np.ndarray, cfg: PropensityConfig) -> np.ndarray:
    """θ over the full item index: ``positives[i]`` counts item i's training positives.

    The vector has one entry per item of the catalogue, so items without positives keep their
    place (and get the floor) instead of shifting the others.
    """
    positives = np.asarray(positives, dtype=np.float64)
    if positives.ndim != 1 or positives.size == 0:
        raise ValueError("positives must be a non-empty 1-d array over the item index")
    top = positives.max()
    if top <= 0:
        return np.full(positives.shape, cfg.floor)
    return np.maximum((positives / top) ** cfg.eta, cfg.floor)


def propensity_report(theta: np.ndarray, clip: float) -> dict[str, float]:
    """Summary of propensities: count, min, quantiles (1, 10, 50, 90 %), max, and
    ``fraction_below_clip``, the share with θ < M (the pairs whose weight the clipped estimator caps).
    """
    theta = np.asarray(theta, dtype=np.float64).reshape(-1)
    if theta.size == 0:
        raise ValueError("no propensities to report")
    q = np.quantile(theta, [0.01, 0.1, 0.5, 0.9])
    return {
        "count": int(theta.size),
        "min": float(theta.min()),
        "q01": float(q[0]),
        "q10": float(q[1]),
        "median": float(q[2]),
        "q90": float(q[3]),
        "max": float(theta.max()),
        "clip": float(clip),
        "fraction_below_clip": float(np.mean(theta < clip)),
    }


def propensity_histogram(series: dict[str, np.ndarray], n_bins: int = 24) -> list[dict[str, float]]:
    """Rows ``{log10_theta, <name>: fraction, ...}`` of log10-binned propensities, shared bins.

    One row per bin (its centre), one fraction column per named series: a table for a DVC plot
    with ``x: log10_theta`` and ``y: [<names>]``.
    """
    logs = {
        k: np.log10(np.clip(np.asarray(v, np.float64).reshape(-1), 1e-12, 1.0))
        for k, v in series.items()
    }
    if not logs or any(v.size == 0 for v in logs.values()):
        raise ValueError("every series needs at least one propensity")
    lo = min(-1.0, *(float(np.floor(v.min())) for v in logs.values()))
    edges = np.linspace(lo, 0.0, n_bins + 1)
    rows = [{"log10_theta": round(float(c), 4)} for c in 0.5 * (edges[:-1] + edges[1:])]
    for name, v in logs.items():
        counts, _ = np.histogram(v, bins=edges)
        for row, n in zip(rows, counts, strict=True):
            row[name] = float(n) / v.size
    return rows
