"""Switch-DR, DR-OS, the λ selection rules, the cross-fitted reward model, range-respecting
estimates and exact zero-event bounds: hand-computed cases, equivalences (λ = ∞ → DR, λ = 0 → DM,
vectorised = scalar, suite = classes), guarantees (estimates and intervals inside [0, 1], the
zero-event bound), reproducibility and invalid inputs."""

import math

import numpy as np
import pytest
from scipy import stats

from evaluation.binomial import (
    clopper_pearson,
    effective_binomial_interval,
    kish_effective_size,
    zero_event_upper_bound,
)
from evaluation.doubly_robust import (
    DEFAULT_LAMBDAS,
    AdaptiveDoublyRobust,
    BoundedDoublyRobust,
    DoublyRobustWithShrinkage,
    SwitchDoublyRobust,
    dr_candidates,
    modified_weight_matrix,
    modify_weights,
    recommended_estimator,
)
from evaluation.estimators import DoublyRobust
from evaluation.ope_suite import RECOMMENDED, model_estimators, run_suite
from evaluation.reward_model import CrossFittedRewardModel
from evaluation.selectors import EstimatedMSE, Slope
from experiments.bandit_simulator import SimConfig, simulate_log

# The four-round log of tests/test_ope.py: w = π_e/π_0 = [0.5, 2, 2, 0.25], r − q̂ = [.5, −.1, .7, −.2].
REWARD = np.array([1.0, 0.0, 1.0, 0.0])
PSCORE = np.array([0.5, 0.25, 0.2, 0.8])
EVAL = np.array([0.25, 0.5, 0.4, 0.2])
Q_LOGGED = np.array([0.5, 0.1, 0.3, 0.2])
Q_POLICY = np.array([0.4, 0.2, 0.3, 0.1])
ARGS = (REWARD, PSCORE, EVAL, Q_LOGGED, Q_POLICY)


# ---- fixed-λ estimators: closed forms ----------------------------------------------------------


def test_switch_dr_matches_hand_computation():
    # λ = 1 keeps w ≤ 1 only: ŵ = [0.5, 0, 0, 0.25] → terms [0.65, 0.2, 0.3, 0.05].
    assert SwitchDoublyRobust(lambda_=1.0).estimate_policy_value(*ARGS) == pytest.approx(1.2 / 4)


def test_dr_os_matches_hand_computation():
    # λ = 1: ŵ = w / (w² + 1) = [0.4, 0.4, 0.4, 0.25/1.0625] → terms [0.6, 0.16, 0.58, 0.0529…].
    expected = (0.6 + 0.16 + 0.58 + 0.1 - 0.2 * 0.25 / 1.0625) / 4
    assert DoublyRobustWithShrinkage(lambda_=1.0).estimate_policy_value(*ARGS) == pytest.approx(
        expected
    )


def test_every_modifier_is_dr_at_infinity_and_dm_at_zero():
    dr = DoublyRobust().estimate_policy_value(*ARGS)
    assert SwitchDoublyRobust().estimate_policy_value(*ARGS) == pytest.approx(dr)
    assert DoublyRobustWithShrinkage().estimate_policy_value(*ARGS) == pytest.approx(dr)
    dm = DoublyRobustWithShrinkage(lambda_=0.0).estimate_policy_value(*ARGS)
    assert dm == pytest.approx(Q_POLICY.mean())
    w = EVAL / PSCORE
    for modifier in ("clipping", "switch", "shrinkage"):
        np.testing.assert_allclose(modify_weights(w, modifier, math.inf), w)
        np.testing.assert_allclose(modify_weights(w, modifier, 0.0), 0.0)


def test_weight_matrix_matches_the_scalar_rule_on_every_grid():
    w = np.random.default_rng(0).exponential(3.0, 500)
    for modifier, grid in DEFAULT_LAMBDAS.items():
        matrix = modified_weight_matrix(w, modifier, (*grid, 0.0))
        for row, lam in zip(matrix, (*grid, 0.0), strict=True):
            np.testing.assert_allclose(row, modify_weights(w, modifier, lam))


def test_shrunk_weight_never_exceeds_half_root_lambda():
    w = np.geomspace(1e-3, 1e6, 200)
    for lam in (0.25, 4.0, 400.0):
        assert modify_weights(w, "shrinkage", lam).max() <= math.sqrt(lam) / 2 + 1e-12


def test_candidates_match_a_direct_computation():
    rng = np.random.default_rng(1)
    n = 3000
    w, q, q_pi = rng.exponential(3.0, n), rng.uniform(0, 0.1, n), rng.uniform(0, 0.1, n)
    r = (rng.random(n) < 0.05).astype(float)
    for modifier, grid in DEFAULT_LAMBDAS.items():
        c = dr_candidates(modifier, grid, r, w, q, q_pi)
        for j, lam in enumerate(grid):
            w_hat = modify_weights(w, modifier, lam)
            terms, gap = q_pi + w_hat * (r - q), (w - w_hat) * (r - q)
            assert c.values[j] == pytest.approx(terms.mean())
            assert c.std_errors[j] == pytest.approx(terms.std() / math.sqrt(n), rel=1e-6)
            assert c.bias[j] == pytest.approx(gap.mean())
            assert c.bias_se[j] == pytest.approx(gap.std() / math.sqrt(n), rel=1e-6, abs=1e-12)


# ---- range -------------------------------------------------------------------------------------


def _no_click_log(n=50):
    """No click, one huge weight: raw DR = 0.01 − (1/n)·Σ ŵ·0.5 < 0."""
    reward = np.zeros(n)
    pscore = np.full(n, 0.5)
    pscore[0] = 1e-6
    evaluation = np.full(n, 0.5)
    return reward, pscore, evaluation, np.full(n, 0.5), np.full(n, 0.01)


def test_bounded_estimates_stay_in_the_unit_interval_and_zero_events_get_an_exact_bound():
    args = _no_click_log()
    assert DoublyRobust().estimate_policy_value(*args) < 0  # the problem
    w = args[2] / args[1]
    n_eff = kish_effective_size(w)
    for est in (BoundedDoublyRobust(), SwitchDoublyRobust(), DoublyRobustWithShrinkage(1.0)):
        assert est.estimate_policy_value(*args) >= 0
        iv = est.estimate_interval(*args, n_bootstrap=50)
        assert 0 <= iv.lower <= iv.estimate <= iv.upper <= 1
        assert iv.upper >= zero_event_upper_bound(n_eff) - 1e-12


def test_projection_never_increases_the_error():
    for raw in (-0.3, 0.2, 1.7):
        for truth in (0.0, 0.1, 1.0):
            assert abs(min(max(raw, 0), 1) - truth) <= abs(raw - truth)


def test_clopper_pearson_matches_the_beta_quantiles_and_the_rule_of_three():
    lo, hi = clopper_pearson(5, 10, 0.05)
    assert lo == pytest.approx(0.187086, abs=1e-5) and hi == pytest.approx(0.812914, abs=1e-5)
    assert clopper_pearson(0, 10) == (0.0, pytest.approx(1 - 0.025**0.1))
    assert clopper_pearson(10, 10)[1] == 1.0
    # one-sided 95 % with no event: 1 − 0.05^{1/n} ≈ 3/n (the rule of three)
    assert zero_event_upper_bound(1000, 0.05, one_sided=True) == pytest.approx(3 / 1000, rel=0.01)
    assert zero_event_upper_bound(20) == pytest.approx(clopper_pearson(0, 20)[1])
    with pytest.raises(ValueError, match="events"):
        clopper_pearson(11, 10)
    with pytest.raises(ValueError, match="n_eff"):
        zero_event_upper_bound(0)


def test_effective_binomial_interval_is_clopper_pearson_at_the_binomial_variance():
    p, n = 0.2, 400
    lo, hi = effective_binomial_interval(p, p * (1 - p) / n, n)
    assert (lo, hi) == pytest.approx(clopper_pearson(80, 400))
    # more variance than binomial → fewer effective trials → wider interval, still in [0, 1]
    lo2, hi2 = effective_binomial_interval(p, 4 * p * (1 - p) / n, n)
    assert 0 <= lo2 < lo and hi < hi2 <= 1
    assert all(math.isnan(v) for v in effective_binomial_interval(0.0, 1e-4, n))


def test_kish_effective_size():
    assert kish_effective_size(np.ones(4)) == 4
    assert kish_effective_size(np.array([1.0, 0, 0, 0])) == 1
    assert kish_effective_size(np.zeros(3)) == 0


# ---- selection rules ---------------------------------------------------------------------------


def test_slope_stops_at_the_first_candidate_that_breaks_an_earlier_interval():
    values, ses = np.array([0.0, 0.05, 0.30]), np.array([0.05, 0.02, 0.01])
    # z = 1.96: |0.05 − 0| ≤ 2·1.96·(0.02 + 0.05) holds; |0.30 − 0| ≤ 2·1.96·(0.01 + 0.05) fails.
    assert Slope(0.05).choose(values, ses) == 1
    assert Slope(0.05).choose(np.array([0.0, 0.01, 0.02]), ses) == 2
    z = stats.norm.ppf(0.95)  # SLOPE++: |v_i − v_j| ≤ z·se_i + (√6 − 1)·z·se_j
    tight = np.array([0.0, z * 0.02 + (math.sqrt(6) - 1) * z * 0.05 + 1e-9])
    assert Slope(0.05, "slope++").choose(tight, ses[:2]) == 0


def test_estimated_mse_trades_variance_against_the_bias_bound():
    ses, bias = np.array([0.1, 0.01]), np.array([0.0, 0.05])
    assert EstimatedMSE().choose(np.zeros(2), ses, bias=bias, bias_se=np.zeros(2)) == 1
    assert EstimatedMSE().choose(np.zeros(2), ses, bias=10 * bias, bias_se=np.zeros(2)) == 0


# ---- reward model ------------------------------------------------------------------------------


def test_shrunk_click_rate_table_by_hand():
    clicks, shows = np.array([2.0, 0.0, 1.0, 0.0]), np.array([10.0, 5.0, 5.0, 0.0])
    # p̄ = 3/20; s = 5: (c + 0.75)/(n + 5); the unseen item gets p̄
    expected = [2.75 / 15, 0.75 / 10, 1.75 / 10, 0.15]
    np.testing.assert_allclose(CrossFittedRewardModel.table(clicks, shows, 5.0), expected)
    np.testing.assert_allclose(CrossFittedRewardModel.table(clicks, shows, math.inf), 0.15)
    np.testing.assert_allclose(
        CrossFittedRewardModel.table(clicks, shows, 0.0), [0.2, 0, 0.2, 0.15]
    )


def test_cross_fitted_tables_never_see_their_own_fold():
    item = np.array([0, 0, 1, 1, 0, 1])
    reward = np.array([1.0, 0, 0, 1, 0, 0])
    fold = np.array([0, 1, 0, 1, 0, 1])
    fit = CrossFittedRewardModel(prior_strengths=(0.0,), n_folds=2).fit(item, reward, 2, fold)
    # fold 0's table is fitted on fold 1 only: item 0 → 0/1, item 1 → 1/2
    np.testing.assert_allclose(fit.tables[0], [0.0, 0.5])
    np.testing.assert_allclose(fit.tables[1], [0.5, 0.0])


def test_direct_path_equals_the_mean_of_each_table():
    log = simulate_log(SimConfig(n_rounds=3000), 0)
    model = CrossFittedRewardModel(rule="slope++")
    mass = np.full(80, 1 / 80)
    strengths, values, ses = model.direct_path(log.item, log.reward, mass)
    clicks = np.bincount(log.item, log.reward, 80)
    shows = np.bincount(log.item, minlength=80).astype(float)
    for s, v in zip(strengths, values, strict=True):
        assert v == pytest.approx(CrossFittedRewardModel.table(clicks, shows, s).mean())
    assert list(strengths) == sorted(strengths) and np.all(ses > 0)


# ---- adaptive DR -------------------------------------------------------------------------------


def _small_log(seed=0, n=3000):
    log = simulate_log(SimConfig(n_rounds=n), seed)
    return (log.reward, log.pscore, log.item, log.position, np.full((80, 3), 1 / 80)), log


def test_one_element_grids_are_cross_fitted_dr_and_the_direct_method():
    args, log = _small_log()
    model = CrossFittedRewardModel()
    fit = model.fit(log.item, log.reward, 80)
    fold = model.folds(log.reward.size)
    q, q_pi = fit.predict(log.item, log.position, fold, args[4])
    evaluation = np.full(log.reward.size, 1 / 80)
    dr = AdaptiveDoublyRobust("clipping", lambdas=(math.inf,), reward_model=model, value_range=None)
    expected = DoublyRobust().estimate_policy_value(log.reward, log.pscore, evaluation, q, q_pi)
    assert dr.estimate_policy_value(*args) == pytest.approx(expected)
    dm = AdaptiveDoublyRobust("shrinkage", lambdas=(0.0,), reward_model=model)
    assert dm.estimate_policy_value(*args) == pytest.approx(q_pi.mean())


@pytest.mark.parametrize("modifier", ["clipping", "switch", "shrinkage"])
def test_adaptive_estimates_and_intervals_stay_in_the_unit_interval(modifier):
    args, _ = _small_log(1)
    r, p0, a, k, pie = args
    p0 = p0.copy()
    p0[np.flatnonzero(r == 0)[0]] = 1e-6  # one absurd weight on an unclicked round
    for selector in (Slope(), Slope(variant="slope++"), EstimatedMSE()):
        est = AdaptiveDoublyRobust(modifier, selector)
        iv = est.estimate_interval(r, p0, a, k, pie, n_bootstrap=30)
        assert 0 <= iv.lower <= iv.upper <= 1 and 0 <= iv.estimate <= 1
        kg = est.estimate_interval(r, p0, a, k, pie, n_bootstrap=30, method="korn-graubard")
        assert 0 <= kg.lower <= kg.upper <= 1
        assert est.fit(r, p0, a, k, pie).lambda_ in est.grid


def test_no_clicks_give_zero_estimate_range_and_the_exact_upper_bound():
    args, _ = _small_log(2)
    r, p0, a, k, pie = args
    zero = np.zeros_like(r)
    iv = AdaptiveDoublyRobust().estimate_interval(zero, p0, a, k, pie, n_bootstrap=20)
    n_eff = kish_effective_size(pie[a, k] / p0)
    assert iv.estimate == 0 and iv.lower == 0
    assert iv.upper == pytest.approx(max(zero_event_upper_bound(n_eff), iv.upper))
    assert iv.upper >= zero_event_upper_bound(n_eff)


def test_intervals_are_reproducible():
    args, _ = _small_log(3)
    est = AdaptiveDoublyRobust("switch", Slope(variant="slope++"))
    assert est.estimate_interval(*args, n_bootstrap=20, seed=4) == est.estimate_interval(
        *args, n_bootstrap=20, seed=4
    )


def test_suite_shares_work_without_changing_any_estimate():
    args, _ = _small_log(4)
    records = run_suite(*args, n_bootstrap=2)
    for name, est in model_estimators().items():
        fit = est.fit(*args)
        assert records[name].estimate == pytest.approx(fit.value), name
        assert records[name].lambda_ == fit.lambda_ and records[name].prior_strength == (
            fit.prior_strength
        )


# ---- invalid inputs ----------------------------------------------------------------------------


@pytest.mark.parametrize("lam", [-1.0, float("nan"), "1", True])
def test_bad_lambda_fails_at_construction(lam):
    with pytest.raises(ValueError, match="lambda_"):
        DoublyRobustWithShrinkage(lambda_=lam)
    with pytest.raises(ValueError, match="lambda_"):
        SwitchDoublyRobust(lambda_=lam)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"modifier": "ips"}, "modifier"),
        ({"selector": "slope"}, "selector"),
        ({"lambdas": ()}, "lambdas"),
        ({"lambdas": (1.0, 1.0)}, "distinct"),
        ({"lambdas": (-2.0,)}, "lambdas"),
        ({"value_range": (1.0, 0.0)}, "low < high"),
        ({"value_range": (0.0, math.inf)}, "value_range"),
        ({"reward_model": "cv"}, "reward_model"),
    ],
)
def test_bad_adaptive_configuration_fails_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AdaptiveDoublyRobust(**kwargs)


def test_bad_rules_and_models_fail_at_construction():
    with pytest.raises(ValueError, match="delta"):
        Slope(delta=0.0)
    with pytest.raises(ValueError, match="variant"):
        Slope(variant="lepski")
    with pytest.raises(ValueError, match="delta"):
        EstimatedMSE(delta=1.5)
    with pytest.raises(ValueError, match="n_folds"):
        CrossFittedRewardModel(n_folds=0)
    with pytest.raises(ValueError, match="prior strength"):
        CrossFittedRewardModel(prior_strengths=(-1.0,))
    with pytest.raises(ValueError, match="rule"):
        CrossFittedRewardModel(rule="aic")


def test_bad_adaptive_inputs_fail_with_clear_errors():
    args, _ = _small_log(5, n=300)
    r, p0, a, k, pie = args
    est = AdaptiveDoublyRobust()
    with pytest.raises(ValueError, match="0/1"):
        est.fit(r * 0.5 + 0.25, p0, a, k, pie)
    with pytest.raises(ValueError, match=r"pscore must lie in \(0, 1\]"):
        est.fit(r, np.where(np.arange(r.size) == 0, 0.0, p0), a, k, pie)
    with pytest.raises(ValueError, match="sum to 1"):
        est.fit(r, p0, a, k, pie * 2)
    with pytest.raises(ValueError, match="item out of range"):
        est.fit(r, p0, np.where(np.arange(r.size) == 0, 80, a), k, pie)
    with pytest.raises(ValueError, match="position must be integers"):
        est.fit(r, p0, a, k.astype(float), pie)
    with pytest.raises(ValueError, match="no rounds"):
        est.fit(r[:0], p0[:0], a[:0], k[:0], pie)
    with pytest.raises(ValueError, match="method"):
        est.estimate_interval(r, p0, a, k, pie, n_bootstrap=5, method="bca")


def test_simulator_is_seeded_and_validated():
    a = simulate_log(SimConfig(n_rounds=999), 7)
    b = simulate_log(SimConfig(n_rounds=999), 7)
    assert np.array_equal(a.reward, b.reward) and np.array_equal(a.pscore, b.pscore)
    assert a.reward.size == 999 and 0 < a.truth < 1
    with pytest.raises(ValueError, match="n_positions"):
        SimConfig(n_items=2)
    with pytest.raises(ValueError, match="ctr"):
        SimConfig(ctr=0.7)


def test_the_recommended_estimator_is_the_studys_recommended_entry():
    assert model_estimators()[RECOMMENDED] == recommended_estimator()
    est = recommended_estimator()
    assert (est.modifier, est.selector.variant, est.reward_model.rule) == (
        "switch",
        "slope++",
        "slope++",
    )
