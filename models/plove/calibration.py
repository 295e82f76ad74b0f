"""Calibration of binary probabilities: temperature scaling and isotonic regression.

Calibrators map a raw logit z to a probability. :func:`choose_calibrator` fits the candidates
(identity, temperature, isotonic) and keeps the one with the lowest *cross-fitted* validation log
loss — each candidate is scored on folds it was not fitted on, since isotonic regression always
wins on the data it was fitted to. The winner is then refitted on the whole validation set. The
log loss, the objective of that choice, lives here; the calibration metrics (ECE, reliability,
NE) are in evaluation/calibration.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

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
    """p = f(z) for the non-decreasing f minimising Σ(y − f(z))², fitted by PAV, kept inside (0, 1).

    Tied logits are pooled first (their mean label, weight = count). A PAV block b of n_b pairs
    with s_b positives would predict s_b / n_b, which is exactly 0 (or 1) for a block without
    positives (or negatives): −∞ log loss, and ties at zero in a blended ranking. Each block's
    value is therefore shrunk by one pseudo-observation at the base rate p̄,
    v_b = (s_b + p̄) / (n_b + 1), strictly inside (0, 1), and PAV is rerun on (v_b, n_b + 1) so the
    map stays non-decreasing (its values are weighted means of the v_b, still inside (0, 1)).
    Predictions interpolate linearly between knots and are constant beyond the first and last.
    """

    knots: np.ndarray = field(default_factory=lambda: np.zeros(0))
    values: np.ndarray = field(default_factory=lambda: np.zeros(0))
    name: str = "isotonic"

    def fit(self, logits: np.ndarray, labels: np.ndarray) -> IsotonicCalibrator:
        z, y = _check(logits, labels)
        knots, inverse, counts = np.unique(z, return_inverse=True, return_counts=True)
        n = counts.astype(np.float64)
        fitted = pool_adjacent_violators(np.bincount(inverse, weights=y) / n, n)
        starts = np.r_[0, np.flatnonzero(np.diff(fitted)) + 1]  # first knot of each PAV block
        n_b = np.add.reduceat(n, starts)
        s_b = np.add.reduceat(fitted * n, starts)
        prior = float(np.clip(y.mean(), 0.5 / (y.size + 1), 1 - 0.5 / (y.size + 1)))
        shrunk = pool_adjacent_violators((s_b + prior) / (n_b + 1), n_b + 1)
        self.knots = knots
        self.values = np.repeat(shrunk, np.diff(np.r_[starts, knots.size]))
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


def log_loss(p: np.ndarray, y: np.ndarray, eps: float = EPS) -> float:
    """−mean[y log p + (1 − y) log(1 − p)], p clipped to [eps, 1 − eps]."""
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps)
    y = np.asarray(y, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))
