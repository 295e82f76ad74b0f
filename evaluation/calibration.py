"""Metrics of probabilities: log loss, normalised entropy, reliability curve and ECE, per group, and
calibration on the pairs the logger rarely shows."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from evaluation.binomial import clopper_pearson
from evaluation.metrics import auc
from models.plove.calibration import log_loss

__all__ = [
    "binary_metrics",
    "expected_calibration_error",
    "log_loss",
    "low_propensity_calibration",
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


def low_propensity_calibration(
    p: np.ndarray,
    y: np.ndarray,
    propensity: np.ndarray,
    share: float = 0.1,
    n_bins: int = 10,
    alpha: float = 0.05,
) -> dict[str, float]:
    """Calibration where the logger rarely shows: :func:`binary_metrics` of the rows whose logged
    propensity is at or below its ``share`` quantile (the lowest decile by default), with

    * ``propensity_threshold`` (that quantile) and ``ece_to_overall`` (ECE there / ECE of all rows);
    * ``observed_lo``, ``observed_hi``: the exact Clopper–Pearson (1 − α) interval of the observed
      rate there (with no event, its upper end is the zero-event bound ≈ 3.7 / n);
    * ``ratio``, ``ratio_lo``, ``ratio_hi``: observed / mean predicted and its interval — how far
      the model's predictions there must be scaled to be right (1 = calibrated).

    ``p``, ``y``, ``propensity`` of shape (n,); rows without a propensity (nan) are left out.
    """
    p, y = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=np.float64)
    prop = np.asarray(propensity, dtype=np.float64)
    if not (p.shape == y.shape == prop.shape):
        raise ValueError(
            f"p, y and propensity must be aligned, got {p.shape}, {y.shape}, {prop.shape}"
        )
    if not 0 < share < 1:
        raise ValueError(f"share must lie in (0, 1), got {share}")
    known = np.isfinite(prop)
    if not known.any():
        raise ValueError("no row has a logged propensity")
    threshold = float(np.quantile(prop[known], share))
    low = known & (prop <= threshold)
    out = binary_metrics(p[low], y[low], n_bins)
    overall = expected_calibration_error(p[known], y[known], n_bins)
    lo, hi = clopper_pearson(float(y[low].sum()), float(low.sum()), alpha)
    mean_p = out["mean_predicted"]
    out |= {
        "share": float(share),
        "propensity_threshold": threshold,
        "ece_to_overall": out["ece"] / overall if overall > 0 else float("nan"),
        "observed_lo": lo,
        "observed_hi": hi,
        "ratio": out["observed_rate"] / mean_p if mean_p > 0 else float("nan"),
        "ratio_lo": lo / mean_p if mean_p > 0 else float("nan"),
        "ratio_hi": hi / mean_p if mean_p > 0 else float("nan"),
    }
    return out
