"""Calibration of binary probabilities: temperature scaling, isotonic regression and their metrics.

Calibrators map a raw logit z to a probability. :func:`choose_calibrator` fits the candidates
(identity, temperature, isotonic) and keeps the one with the lowest *cross-fitted* validation log
loss — each candidate is scored on folds it was not fitted on, since isotonic regression always
wins on the data it was fitted to. The winner is then refitted on the whole validation set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

from models.metrics import auc

EPS = 1e-7
CalibrationMethod = Literal["auto", "identity", "temperature", "isotonic"]


def sigmoid(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -z))


def logit(p: np.ndarray, eps: float = EPS) -> np.ndarray:
    """log(p / (1 − p)) with p clipped to [eps, 1 − eps], so 0 and 1 stay finite."""
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps)
    return np.log(p) - np.log1p(-p)


class Calibrator(Protocol):
    name: str

    def fit(self, logits: np.ndarray, labels: np.ndarray) -> Calibrator: ...

    def predict(self, logits: np.ndarray) -> np.ndarray: ...

    def to_dict(self) -> dict: ...


@dataclass
class Identity:
    """p = σ(z): no calibration, the baseline every calibrator must beat."""

    name: str = "identity"

    def fit(self, logits: np.ndarray, labels: np.ndarray) -> Identity:
        return self

    def predict(self, logits: np.ndarray) -> np.ndarray:
        return sigmoid(logits)

    def to_dict(self) -> dict:
        return {"method": self.name}


@dataclass
class TemperatureScaling:
    """p = σ(z / T), T > 0 fitted by minimising the log loss (Guo et al., 2017).

    With β = 1/T the loss is a one-feature logistic regression without intercept, convex in β, so
    Newton's method converges: β ← β − Σ(σ(βz) − y)z / Σσ(1−σ)z².
    """

    temperature: float = 1.0
    max_iter: int = 100
    tol: float = 1e-10
    name: str = "temperature"

    def fit(self, logits: np.ndarray, labels: np.ndarray) -> TemperatureScaling:
        z, y = _check(logits, labels)
        if not np.any(z):
            raise ValueError("temperature scaling needs some non-zero logits")
        beta = 1.0
        for _ in range(self.max_iter):
            p = sigmoid(beta * z)
            grad = np.sum((p - y) * z)
            hess = np.sum(p * (1 - p) * z * z) + 1e-12
            step = grad / hess
            beta_new = beta - step
            if beta_new <= 0:  # keep T finite and positive: halve towards zero instead
                beta_new = beta / 2
            if abs(beta_new - beta) < self.tol * max(1.0, abs(beta)):
                beta = beta_new
                break
            beta = beta_new
        self.temperature = float(1.0 / beta)
        return self

    def predict(self, logits: np.ndarray) -> np.ndarray:
        return sigmoid(np.asarray(logits, dtype=np.float64) / self.temperature)

    def to_dict(self) -> dict:
        return {"method": self.name, "temperature": self.temperature}


def pool_adjacent_violators(y: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """The non-decreasing sequence closest to ``y`` in weighted least squares (PAV).

    Scans left to right keeping blocks (mean, weight, length); whenever a new block's mean falls
    below its predecessor's, the two merge into their weighted mean, repeatedly. O(n).

    >>> pool_adjacent_violators(np.array([1.0, 3.0, 2.0, 4.0])).tolist()
    [1.0, 2.5, 2.5, 4.0]
    """
    y = np.asarray(y, dtype=np.float64)
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=np.float64)
    if y.shape != w.shape or y.ndim != 1:
        raise ValueError(f"y and weights must be aligned 1-d arrays, got {y.shape}, {w.shape}")
    if np.any(w <= 0):
        raise ValueError("PAV weights must be positive")
    means: list[float] = []
    wsum: list[float] = []
    sizes: list[int] = []
    for value, weight in zip(y, w, strict=True):
        means.append(float(value))
        wsum.append(float(weight))
        sizes.append(1)
        while len(means) > 1 and means[-2] > means[-1]:
            m, ww, s = means.pop(), wsum.pop(), sizes.pop()
            total = wsum[-1] + ww
            means[-1] = (means[-1] * wsum[-1] + m * ww) / total
            wsum[-1] = total
            sizes[-1] += s
    return np.repeat(means, sizes)


@dataclass
class IsotonicCalibrator:
    """p = f(z) for the non-decreasing f minimising Σ(y − f(z))², fitted by PAV.

    Tied logits are pooled first (their mean label, weight = count); predictions interpolate
    linearly between the fitted knots and are constant beyond the first and last knot.
    """

    knots: np.ndarray = field(default_factory=lambda: np.zeros(0))
    values: np.ndarray = field(default_factory=lambda: np.zeros(0))
    name: str = "isotonic"

    def fit(self, logits: np.ndarray, labels: np.ndarray) -> IsotonicCalibrator:
        z, y = _check(logits, labels)
        knots, inverse, counts = np.unique(z, return_inverse=True, return_counts=True)
        means = np.bincount(inverse, weights=y) / counts
        self.knots = knots
        self.values = pool_adjacent_violators(means, counts.astype(np.float64))
        return self

    def predict(self, logits: np.ndarray) -> np.ndarray:
        if self.knots.size == 0:
            raise ValueError("the isotonic calibrator has not been fitted")
        return np.interp(np.asarray(logits, dtype=np.float64), self.knots, self.values)

    def to_dict(self) -> dict:
        return {"method": self.name, "knots": self.knots.tolist(), "values": self.values.tolist()}


def calibrator_from_dict(data: dict) -> Calibrator:
    """Rebuild a calibrator written by ``to_dict``."""
    method = data.get("method")
    if method == "identity":
        return Identity()
    if method == "temperature":
        return TemperatureScaling(temperature=float(data["temperature"]))
    if method == "isotonic":
        return IsotonicCalibrator(np.asarray(data["knots"]), np.asarray(data["values"]))
    raise ValueError(f"unknown calibration method {method!r}")


def _new(method: str) -> Calibrator:
    return {
        "identity": Identity,
        "temperature": TemperatureScaling,
        "isotonic": IsotonicCalibrator,
    }[method]()


def _check(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z = np.asarray(logits, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=np.float64).ravel()
    if z.shape != y.shape or z.size == 0:
        raise ValueError(
            f"logits and labels must be aligned and non-empty, got {z.shape}, {y.shape}"
        )
    if not np.all(np.isfinite(z)):
        raise ValueError("logits must be finite")
    if np.any((y != 0) & (y != 1)):
        raise ValueError("labels must be 0 or 1")
    return z, y


def choose_calibrator(
    logits: np.ndarray,
    labels: np.ndarray,
    method: CalibrationMethod = "auto",
    folds: int = 5,
    seed: int = 0,
) -> tuple[Calibrator, dict[str, float]]:
    """The calibrator with the lowest cross-fitted log loss, refitted on all of ``logits``.

    Returns ``(calibrator, {method: cross-fitted log loss})``; with a fixed ``method`` only that one
    is fitted and scored. Folds are random (seeded) so each holds a share of the rare positives.
    """
    z, y = _check(logits, labels)
    candidates = ["identity", "temperature", "isotonic"] if method == "auto" else [method]
    fold = np.random.default_rng(seed).permutation(z.size) % folds
    scores: dict[str, float] = {}
    for name in candidates:
        pred = np.empty_like(z)
        for f in range(folds):
            held = fold == f
            pred[held] = _new(name).fit(z[~held], y[~held]).predict(z[held])
        scores[name] = log_loss(pred, y)
    best = min(scores, key=scores.get)
    return _new(best).fit(z, y), scores


# ---- metrics ---------------------------------------------------------------------------------


def log_loss(p: np.ndarray, y: np.ndarray, eps: float = EPS) -> float:
    """−mean[y log p + (1 − y) log(1 − p)], p clipped to [eps, 1 − eps]."""
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps)
    y = np.asarray(y, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


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
