"""Metrics of probabilities: log loss, normalised entropy, reliability curve and ECE, per group."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from evaluation.metrics import auc
from models.plove.calibration import log_loss

__all__ = [
    "binary_metrics",
    "expected_calibration_error",
    "log_loss",
    "metrics_by_group",
    "normalized_entropy",
    "reliability_curve",
]


def normalized_entropy(p: np.ndarray, y: np.ndarray, base_rate: float | None = None) -> float:
    """NE = log loss / H(p̄), H(p̄) = −p̄ log p̄ − (1 − p̄) log(1 − p̄) (He et al., 2014).

    p̄ is ``base_rate`` when given (e.g. the training rate), else the mean label of ``y``. NE < 1
    means the model beats always predicting the base rate; ``nan`` when p̄ is 0 or 1.
    """
    rate = float(np.mean(y)) if base_rate is None else float(base_rate)
    if not 0 < rate < 1:
        return float("nan")
    entropy = -(rate * np.log(rate) + (1 - rate) * np.log1p(-rate))
    return log_loss(p, y) / entropy


def _bin_index(p: np.ndarray, n_bins: int, strategy: str) -> np.ndarray:
    if strategy == "uniform":
        return np.clip((p * n_bins).astype(np.int64), 0, n_bins - 1)
    if strategy == "quantile":  # equal-mass bins: rare-event probabilities crowd one uniform bin
        order = np.argsort(p, kind="stable")
        idx = np.empty(p.size, dtype=np.int64)
        idx[order] = np.arange(p.size) * n_bins // max(p.size, 1)
        return idx
    raise ValueError(f"unknown binning strategy {strategy!r}; use 'uniform' or 'quantile'")


def reliability_curve(
    p: np.ndarray, y: np.ndarray, n_bins: int = 10, strategy: str = "quantile"
) -> list[dict[str, float]]:
    """Per non-empty bin: ``bin, count, predicted`` (mean p), ``observed`` (mean y), ``lower`` and
    ``upper`` (95 % Wilson interval of ``observed``). ``uniform`` bins split [0, 1] evenly;
    ``quantile`` bins hold equal numbers of rows."""
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if p.shape != y.shape:
        raise ValueError(f"p and y must be aligned, got {p.shape}, {y.shape}")
    idx = _bin_index(p, n_bins, strategy)
    rows = []
    for b in range(n_bins):
        mask = idx == b
        n = int(mask.sum())
        if n == 0:
            continue
        rate = float(y[mask].mean())
        lo, hi = _wilson(rate, n)
        rows.append(
            {
                "bin": b,
                "count": n,
                "predicted": float(p[mask].mean()),
                "observed": rate,
                "lower": lo,
                "upper": hi,
            }
        )
    return rows


def _wilson(rate: float, n: int, z: float = 1.96) -> tuple[float, float]:
    centre = (rate + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, float(centre - half)), min(1.0, float(centre + half))


def expected_calibration_error(
    p: np.ndarray, y: np.ndarray, n_bins: int = 10, strategy: str = "quantile"
) -> float:
    """ECE = Σ_b (n_b / n)·|mean_b(p) − mean_b(y)| over the bins of :func:`reliability_curve`."""
    rows = reliability_curve(p, y, n_bins, strategy)
    n = sum(r["count"] for r in rows)
    return float(sum(r["count"] / n * abs(r["predicted"] - r["observed"]) for r in rows))


def binary_metrics(
    p: np.ndarray, y: np.ndarray, n_bins: int = 10, base_rate: float | None = None
) -> dict[str, float]:
    """AUC, log loss, NE, ECE (quantile bins; ``ece_uniform`` on even bins), ECE relative to the
    observed rate, mean prediction, observed rate, rows and positives."""
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    rate = float(y.mean()) if y.size else float("nan")
    ece = expected_calibration_error(p, y, n_bins) if y.size else float("nan")
    return {
        "auc": auc(p, y),
        "log_loss": log_loss(p, y),
        "normalized_entropy": normalized_entropy(p, y, base_rate),
        "ece": ece,
        "ece_uniform": expected_calibration_error(p, y, n_bins, "uniform") if y.size else ece,
        "ece_relative": ece / rate if rate > 0 else float("nan"),
        "mean_predicted": float(p.mean()),
        "observed_rate": rate,
        "n": int(y.size),
        "positives": int(y.sum()),
    }


def metrics_by_group(
    p: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    names: Sequence[str] | None = None,
    n_bins: int = 10,
    base_rate: float | None = None,
) -> dict[str, dict[str, float]]:
    """:func:`binary_metrics` overall (key ``all``) and per group value (key = its name)."""
    out = {"all": binary_metrics(p, y, n_bins, base_rate)}
    for g in np.unique(groups):
        mask = groups == g
        key = names[int(g)] if names is not None else str(g)
        out[key] = binary_metrics(p[mask], y[mask], n_bins, base_rate)
    return out
