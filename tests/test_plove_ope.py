"""Off-policy value of top-K slates from logged slates (models.ope.topk_slate_terms).

A hand-built log checks SNIPS and SN-DR against values worked out by hand; a seeded simulation with
a known stochastic logger (sequential sampling, conditional propensities, position-based clicks)
checks that the bootstrap interval covers a target policy's true value.
"""

import math

import numpy as np
import pytest

from evaluation.bootstrap import bootstrap_counts
from evaluation.estimators import (
    InverseProbabilityWeighting,
    SelfNormalizedInverseProbabilityWeighting,
)
from evaluation.selectors import Slope
from evaluation.slate import topk_slate_terms

# Two users, target slates of K = 2; examination e = [1, 0.5, 0.25].
SLATES = np.array([[3, 1], [0, 2]])
EXAM = np.array([1.0, 0.5, 0.25])
# round: user, item, logged slot, reward, logged propensity
LOG = np.array(
    [
        [0, 1, 0, 1, 0.5],  # hit slot 1: w = 1/(2·0.5) = 1, r̃ = 1·e(1)/e(0) = 0.5
        [0, 4, 1, 1, 0.2],  # item 4 is not in the slate: w = 0
        [0, 3, 2, 0, 0.25],  # hit slot 0: w = 2, r̃ = 0
        [1, 2, 1, 1, 0.1],  # hit slot 1: w = 5, r̃ = 1·e(1)/e(1) = 1
        [1, 0, 2, 0, 0.5],  # hit slot 0: w = 1, r̃ = 0
    ]
)
Q = np.array([[0.2, 0.4], [0.1, 0.3]])  # q̂(u, slate_uj, j)


def terms(q=None, slates=SLATES):
    u, i, k, r, p = LOG.T
    return topk_slate_terms(slates, u.astype(int), i.astype(int), k.astype(int), r, p, EXAM, q)


def test_snips_and_dr_match_hand_computed_values():
    # n_u = (3, 2): ρ = w / n_u = [1/3, 0, 2/3, 5/2, 1/2]; Σρ = 4.
    t = terms(Q)
    assert t.weight == pytest.approx([1.0, 3.0])
    assert t.n_matched == 4 and t.matched_reward == 2.0
    # SNIPS = (1/3·0.5 + 5/2·1) / 4 = (8/3) / 4
    assert float(t.snips()) == pytest.approx(2 / 3)
    # direct = mean(0.3, 0.2) = 0.25; residuals r̃ − q̃ = [0.1, −0.2, 0.7, −0.1]
    # Σρ·res = 1/30 − 2/15 + 7/4 − 1/20 = 1.6 → SN-DR = 0.25 + 1.6/4
    assert float(t.dr()) == pytest.approx(0.65)


def test_bootstrap_counts_reweight_users():
    t = terms(Q)
    counts = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    # user 0 alone: (1/6)/1; user 1 alone: 2.5/3; both: the point estimate
    assert t.snips(counts) == pytest.approx([1 / 6, 5 / 6, 2 / 3])
    # user 0 alone: 0.3 + (1/30 − 2/15)/1; user 1 alone: 0.2 + (7/4 − 1/20)/3
    assert t.dr(counts) == pytest.approx([0.2, 0.2 + 1.7 / 3, 0.65])
    draws = bootstrap_counts(5, 200, seed=1)
    assert draws.shape == (200, 5) and np.all(draws.sum(axis=1) == 5)
    assert np.array_equal(draws, bootstrap_counts(5, 200, seed=1))


def test_reduces_to_snipw_for_one_user_without_position_effects():
    # User 0's first two rounds: w = [1, 0], so Σw = 1 ≠ n = 2 and the self-normalisation shows:
    # SNIPW = 1·1 / 1 = 1 where IPW = 1·1 / 2 = 0.5.
    u, i, k, r, p = LOG[:2].T
    t = topk_slate_terms(SLATES[:1], u.astype(int), i.astype(int), k.astype(int), r, p, np.ones(3))
    hit = np.isin(i, SLATES[0]) / SLATES.shape[1]
    expected = SelfNormalizedInverseProbabilityWeighting().estimate_policy_value(r, p, hit)
    assert float(t.snips()) == pytest.approx(expected) == 1.0
    assert InverseProbabilityWeighting().estimate_policy_value(r, p, hit) == pytest.approx(0.5)


def test_no_match_gives_nan_snips_and_the_direct_method():
    t = terms(Q, slates=np.array([[7, 8], [9, 10]]))
    assert t.n_matched == 0 and np.isnan(t.snips())
    assert float(t.dr()) == pytest.approx(0.25)
    interval = t.interval("snips", bootstrap_counts(2, 50, seed=0))
    assert np.isnan(interval.lower) and np.isnan(interval.upper)


def test_invalid_inputs_are_rejected():
    u, i, k, r, p = LOG.T
    args = (u.astype(int), i.astype(int), k.astype(int), r, p)
    with pytest.raises(ValueError, match="distinct"):
        topk_slate_terms(np.array([[1, 1], [0, 2]]), *args, EXAM)
    with pytest.raises(ValueError, match="no logged round"):
        topk_slate_terms(np.array([[3, 1], [0, 2], [5, 6]]), *args, EXAM)
    with pytest.raises(ValueError, match="examination"):
        topk_slate_terms(SLATES, *args, EXAM[:2])
    with pytest.raises(ValueError, match="pscore"):
        topk_slate_terms(SLATES, *args[:4], np.zeros(5), EXAM)
    with pytest.raises(ValueError, match="estimator"):
        terms().interval("ips", bootstrap_counts(2, 10, seed=0))


# ---- simulation: a known logger, a known truth ---------------------------------------------------


def examination(k: np.ndarray) -> np.ndarray:
    return 1.0 / np.log2(np.asarray(k) + 2.0)


def simulate_log(rng, n_users=400, n_items=60, slate=5, slates_per_user=10):
    """θ(u, i) = love probability at the top; the logger samples slates sequentially without
    replacement from softmax(popularity + 0.5 · affinity) and logs each slot's conditional
    propensity; a slot at position k is loved with probability e(k)·θ."""
    x, y = rng.normal(size=(n_users, 3)), rng.normal(size=(n_items, 3))
    affinity = x @ y.T
    theta = 1 / (1 + np.exp(-(affinity - 1.5)))
    logits = np.log(1.0 / np.arange(1, n_items + 1))[rng.permutation(n_items)] + 0.5 * affinity
    rows = []
    for u in range(n_users):
        probs = np.exp(logits[u] - logits[u].max())
        probs /= probs.sum()
        for _ in range(slates_per_user):
            left = probs.copy()
            for k in range(slate):
                cond = left / left.sum()
                item = rng.choice(n_items, p=cond)
                loved = rng.random() < examination(k) * theta[u, item]
                rows.append((u, item, k, float(loved), cond[item]))
                left[item] = 0.0
    return theta, affinity, np.array(rows)


def test_interval_covers_the_true_value_of_a_target_policy():
    rng = np.random.default_rng(7)
    theta, affinity, log = simulate_log(rng)
    u, i, k, r, p = log.T
    u, i, k = u.astype(int), i.astype(int), k.astype(int)
    n_users, K = theta.shape[0], 4
    # target: top-4 of a noisy relevance score, a policy the logger rarely follows exactly
    score = affinity + rng.normal(0, 1.0, affinity.shape)
    slates = np.argsort(-score, axis=1)[:, :K]
    rows = np.arange(n_users)[:, None]
    truth = float((examination(np.arange(K)) * theta[rows, slates]).mean())
    # a reward model that is right up to a factor 2: DR must still cover the truth
    q = 0.5 * examination(np.arange(K)) * theta[rows, slates]
    t = topk_slate_terms(slates, u, i, k, r, p, examination(np.arange(5)), q)
    counts = bootstrap_counts(n_users, 500, seed=3)
    snips, dr = t.interval("snips", counts), t.interval("dr", counts)
    assert t.n_matched > 1000
    assert snips.lower <= truth <= snips.upper, (truth, snips)
    assert dr.lower <= truth <= dr.upper, (truth, dr)
    # Switch-SN-DR: SLOPE++ keeps λ = 16 with this reward model; the whole-procedure bootstrap
    # alone ends just below the truth (the bias SLOPE accepts), the hull with SN-DR's covers it
    switch = t.interval("switch_dr", counts)
    assert t.switch_fit()[1] == 16.0
    assert np.quantile(t.switch_dr(counts), 0.975) < truth
    assert switch.lower <= truth <= switch.upper, (truth, switch)
    assert 0 <= switch.lower <= switch.estimate <= switch.upper <= 1
    assert snips.estimate == pytest.approx(truth, rel=0.1)
    # the logger's own love rate and the biased direct method both miss the interval
    assert not snips.lower <= r.mean() <= snips.upper
    assert not snips.lower <= q.mean() <= snips.upper


def test_switch_dr_candidates_match_hand_computed_values():
    # weights w = 1 / (K π_0) of the hit rounds: [1, 2, 5, 1], ρ·res = [1/30, −2/15, 7/4, −1/20]
    u, i, k, r, p = LOG.T
    args = (SLATES, u.astype(int), i.astype(int), k.astype(int), r, p, EXAM, Q)
    t = topk_slate_terms(*args, lambdas=(0.5, 4.0, math.inf, 1.5))
    assert t.lambdas == (math.inf, 4.0, 1.5, 0.5)  # sorted, decreasing
    values, se = t.switch_candidates()
    # λ = ∞: SN-DR; λ = 4 drops the w = 5 round; λ = 1.5 also the w = 2 one; λ = 0.5: direct
    assert values == pytest.approx([0.65, 0.25 - 0.15 / 4, 0.25 - 1 / 240, 0.25])
    assert values[0] == pytest.approx(float(t.dr()))
    # delta method at λ = ∞: a = 0.8 / 2, ψ = d_u + (R_u − a W_u) / 2 = (0.05, 0.45), SE = 0.2 / √2
    assert se[0] == pytest.approx(0.2 / math.sqrt(2))
    assert se[-1] == pytest.approx(0.05 / math.sqrt(2))  # the direct method: sd(0.3, 0.2) / √2
    estimate, lam = t.switch_fit()
    j = Slope(variant="slope++").choose(values, se)
    assert (estimate, lam) == (pytest.approx(values[j]), t.lambdas[j])
    # per replicate λ is chosen again: user 1 alone is the point (0.2 + 1.7 / 3) at λ = ∞
    counts = np.array([[0.0, 2.0], [1.0, 1.0]])
    v2, _ = t.switch_candidates(counts)
    assert v2[:, 0] == pytest.approx([0.2 + 1.7 / 3, 0.65])
    reps, lams = t.switch_fit(counts)
    assert reps.shape == lams.shape == (2,) and reps[1] == pytest.approx(estimate)
    iv = t.interval("switch_dr", bootstrap_counts(2, 50, seed=0))
    assert iv.lower <= iv.upper and iv.estimate == pytest.approx(estimate)
    with pytest.raises(ValueError, match="lambdas"):
        topk_slate_terms(*args, lambdas=(1.0, 1.0))
    with pytest.raises(ValueError, match="lambdas"):
        topk_slate_terms(*args, lambdas=(-1.0,))


def test_switch_dr_stays_in_the_unit_interval():
    # a love at logged slot 2 moved to target slot 0 counts e(0)/e(2) = 4: SN-DR without a reward
    # model is (8/3 + 1/2·4) / 4 = 7/6 > 1, the switch estimate is projected onto 1
    log = LOG.copy()
    log[4, 3] = 1
    u, i, k, r, p = log.T
    t = topk_slate_terms(
        SLATES, u.astype(int), i.astype(int), k.astype(int), r, p, EXAM, np.zeros((2, 2)),
        lambdas=(math.inf,),
    )  # fmt: skip
    assert float(t.dr()) == pytest.approx(7 / 6)
    assert t.switch_fit() == (1.0, math.inf)
    assert np.all(t.switch_dr(bootstrap_counts(2, 30, seed=0)) <= 1.0)
