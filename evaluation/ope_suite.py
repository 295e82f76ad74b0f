"""Every estimator of the estimator-selection study on one log, with paired bootstrap replicates.

Used by ``experiments.ope_selection`` (simulated logs with known truth) and ``experiments.obd`` (the
Open Bandit Dataset), so both report exactly the same estimators with the same settings. The
estimators (display name → definition, :func:`model_estimators` plus the plain ones):

* ``naive`` (the log's click rate), ``IPW``, ``SNIPW`` (:mod:`evaluation.estimators`);
* ``DM`` (λ = 0), ``DR`` (λ = ∞), both with the cross-fitted reward model, s by CV log loss;
* ``DR λ=10 (s=500, issue)``: the fixed settings of issue 13 (in-sample q̂, s = 500), and
  ``DR λ=10`` with the cross-fitted model;
* ``<family> [<λ rule>]`` for family DR-clip / Switch-DR / DR-OS and rule SLOPE / SLOPE++ / MSE,
  s by CV log loss; ``… ; s: SLOPE++]`` the same with s chosen by SLOPE++ on the direct-method path
  (:mod:`evaluation.reward_model`).

Replicate b resamples rounds with replacement, shared by all estimators (paired); the model-based
estimators refit their reward model (re-choosing s) and re-select λ inside every replicate, so the
interval covers the whole procedure. Estimates and interval ends are projected onto [0, 1]; a log
without clicks gets the zero-event upper bound (:func:`evaluation.doubly_robust.finish_interval`).
Every estimate equals the one of the estimator's own class (tested); the suite only shares work.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from evaluation.doubly_robust import (
    AdaptiveDoublyRobust,
    candidates_from_weights,
    finish_interval,
    interval_from_replicates,
    log_arrays,
    modified_weight_matrix,
)
from evaluation.reward_model import CrossFittedRewardModel, target_mass
from evaluation.selectors import EstimatedMSE, Slope

CV_MODEL = CrossFittedRewardModel()  # s by 5-fold CV log loss, seed 0
PATH_MODEL = CrossFittedRewardModel(rule="slope++")  # s by SLOPE++ on the direct-method path
ISSUE_MODEL = CrossFittedRewardModel(prior_strengths=(500.0,), n_folds=1)  # in-sample, s = 500

PLAIN = ("naive", "IPW", "SNIPW")
RECOMMENDED = "Switch-DR [SLOPE++; s: SLOPE++]"  # lowest RMSE at 10 000 rounds (the study)
FAMILIES = {"clipping": "DR-clip", "switch": "Switch-DR", "shrinkage": "DR-OS"}


def model_estimators() -> dict[str, AdaptiveDoublyRobust]:
    """The model-based estimators of the study by display name (all projected onto [0, 1])."""
    out = {
        "DM": AdaptiveDoublyRobust("clipping", lambdas=(0.0,), reward_model=CV_MODEL),
        "DR": AdaptiveDoublyRobust("clipping", lambdas=(math.inf,), reward_model=CV_MODEL),
        "DR λ=10 (s=500, issue)": AdaptiveDoublyRobust(
            "clipping", lambdas=(10.0,), reward_model=ISSUE_MODEL
        ),
        "DR λ=10": AdaptiveDoublyRobust("clipping", lambdas=(10.0,), reward_model=CV_MODEL),
    }
    selectors = (Slope(), Slope(variant="slope++"), EstimatedMSE())
    for modifier, label in FAMILIES.items():
        for sel in selectors:
            out[f"{label} [{sel.name}]"] = AdaptiveDoublyRobust(
                modifier, sel, reward_model=CV_MODEL
            )
    out["DM [s: SLOPE++]"] = AdaptiveDoublyRobust(
        "clipping", lambdas=(0.0,), reward_model=PATH_MODEL
    )
    out["DR [s: SLOPE++]"] = AdaptiveDoublyRobust(
        "clipping", lambdas=(math.inf,), reward_model=PATH_MODEL
    )
    for modifier, label in FAMILIES.items():
        for sel in selectors[:2]:
            out[f"{label} [{sel.name}; s: SLOPE++]"] = AdaptiveDoublyRobust(
                modifier, sel, reward_model=PATH_MODEL
            )
    return out


@dataclass(frozen=True)
class Record:
    """One estimator on one log: the projected ``estimate``, the unprojected ``raw`` one, the
    chosen ``lambda_`` and ``prior_strength`` (nan for the plain estimators) and two 95 %
    intervals: percentile (``pct_low``, ``pct_high``) and Korn–Graubard (``kg_low``, ``kg_high``)."""

    estimate: float
    raw: float
    lambda_: float
    prior_strength: float
    pct_low: float
    pct_high: float
    kg_low: float
    kg_high: float


def plain_values(r: np.ndarray, w: np.ndarray) -> dict[str, float]:
    """naive ``mean r``, IPW ``mean w r``, SNIPW ``Σ w r / Σ w`` (nan when Σ w = 0); (n,) arrays."""
    return {
        "naive": float(r.mean()),
        "IPW": float((w * r).mean()),
        "SNIPW": float((w * r).sum() / w.sum()) if w.sum() > 0 else math.nan,
    }


def _weight_matrices(ests: dict[str, AdaptiveDoublyRobust], w: np.ndarray) -> dict:
    """ŵ and ŵ² of every (modifier, grid) in use on the full log, each (L, n_rounds)."""
    out = {}
    for est in ests.values():
        key = (est.modifier, est.grid)
        if key not in out:
            w_hat = modified_weight_matrix(w, est.modifier, est.grid)
            out[key] = (w_hat, w_hat * w_hat)
    return out


def _model_values(ests, r, a, k, pie, w, folds, mats, idx=None) -> dict[str, tuple]:
    """(raw estimate, λ, s) of every model-based estimator on the rounds ``idx`` (all if None);
    reward fits and candidates are shared by the estimators that can share them."""
    fits, cands, gathered, out = {}, {}, {}, {}
    for name, est in ests.items():
        model = est.reward_model
        if model not in fits:
            fit = model.fit(a, r, pie.shape[0], folds[model], target_mass(pie, k))
            fits[model] = (fit, *fit.predict(a, k, folds[model], pie))
        fit, q, q_pi = fits[model]
        key = (model, est.modifier, est.grid)
        if key not in cands:
            wkey = (est.modifier, est.grid)
            if wkey not in gathered:
                w_hat, w_hat_sq = mats[wkey]
                gathered[wkey] = (
                    (w_hat, w_hat_sq) if idx is None else (w_hat[:, idx], w_hat_sq[:, idx])
                )
            cands[key] = candidates_from_weights(est.grid, *gathered[wkey], r, w, q, q_pi)
        res = est.select(cands[key], fit.prior_strength)
        out[name] = (res.raw_value, res.lambda_, res.prior_strength)
    return out


def run_suite(
    reward: np.ndarray,
    pscore: np.ndarray,
    item: np.ndarray,
    position: np.ndarray,
    evaluation_policy: np.ndarray,
    n_bootstrap: int = 200,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, Record]:
    """Every estimator's :class:`Record` on one log; ``reward`` (0/1), ``pscore``, ``item``,
    ``position`` of shape (n_rounds,), ``evaluation_policy`` π_e(a | k) (n_items, n_positions)."""
    ests = model_estimators()
    log = log_arrays(reward, pscore, item, position, evaluation_policy)
    r, a, k, pie, w = log.reward, log.item, log.position, log.evaluation_policy, log.weights
    n = r.size
    folds = {e.reward_model: e.reward_model.folds(n) for e in ests.values()}
    point_plain = plain_values(r, w)
    mats = _weight_matrices(ests, w)
    point_model = _model_values(ests, r, a, k, pie, w, folds, mats)
    names = [*PLAIN, *ests]
    reps = np.empty((n_bootstrap, len(names)))
    rng = np.random.default_rng(seed)
    for b in range(n_bootstrap):
        idx = np.sort(rng.integers(0, n, n))  # sorted: the same resample, cache-friendly gathers
        plain = plain_values(r[idx], w[idx])
        model = _model_values(
            ests, r[idx], a[idx], k[idx], pie, w[idx], {m: f[idx] for m, f in folds.items()},
            mats, idx,
        )  # fmt: skip
        reps[b] = [plain[nm] if nm in plain else model[nm][0] for nm in names]
    out = {}
    for j, name in enumerate(names):
        raw, lam, s = (
            (point_plain[name], math.nan, math.nan) if name in PLAIN else point_model[name]
        )
        value = min(max(raw, 0.0), 1.0)
        ends = {}
        for method in ("percentile", "korn-graubard"):
            lo, hi = interval_from_replicates(value, reps[:, j], alpha, method, (0.0, 1.0), n)
            iv = finish_interval(value, lo, hi, alpha, r, w, (0.0, 1.0))
            ends[method] = (iv.lower, iv.upper)
        out[name] = Record(value, raw, lam, s, *ends["percentile"], *ends["korn-graubard"])
    return out
