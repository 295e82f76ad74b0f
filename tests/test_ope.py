"""Off-policy estimators and IPS ranking metrics against closed-form values on hand-built logs."""

import math

import numpy as np
import pytest

from evaluation.estimators import (
    DoublyRobust,
    InverseProbabilityWeighting,
    NaiveAverage,
    SelfNormalizedInverseProbabilityWeighting,
    check_threshold,
    policy_arrays,
)
from evaluation.ips import IPSRankingMetrics

# Four logged rounds: w = π_e/π_0 = [0.5, 2, 2, 0.25].
REWARD = np.array([1.0, 0.0, 1.0, 0.0])
PSCORE = np.array([0.5, 0.25, 0.2, 0.8])
EVAL = np.array([0.25, 0.5, 0.4, 0.2])
Q_LOGGED = np.array([0.5, 0.1, 0.3, 0.2])  # q̂(x_t, a_t)
Q_POLICY = np.array([0.4, 0.2, 0.3, 0.1])  # Σ_a π_e(a|x_t) q̂(x_t, a)


def test_ipw_matches_closed_form():
    ipw = InverseProbabilityWeighting()
    assert ipw.estimate_policy_value(REWARD, PSCORE, EVAL) == pytest.approx((0.5 + 2.0) / 4)
    clipped = InverseProbabilityWeighting(lambda_=1.0)  # w = [0.5, 1, 1, 0.25]
    assert clipped.estimate_policy_value(REWARD, PSCORE, EVAL) == pytest.approx((0.5 + 1.0) / 4)


def test_snipw_matches_closed_form():
    snipw = SelfNormalizedInverseProbabilityWeighting()
    value = snipw.estimate_policy_value(REWARD, PSCORE, EVAL)
    assert value == pytest.approx(2.5 / 4.75)


def test_dr_matches_closed_form_and_reduces_to_ipw_with_a_zero_model():
    dr = DoublyRobust()
    # q̂_π + w (r − q̂) = [0.65, 0.0, 1.7, 0.05]
    value = dr.estimate_policy_value(REWARD, PSCORE, EVAL, Q_LOGGED, Q_POLICY)
    assert value == pytest.approx(2.4 / 4)
    zero = np.zeros(4)
    assert dr.estimate_policy_value(REWARD, PSCORE, EVAL, zero, zero) == pytest.approx(0.625)


def test_naive_average_is_the_logged_mean():
    assert NaiveAverage().estimate_policy_value(REWARD) == 0.5


def test_policy_arrays_from_an_action_distribution():
    # 2 rounds, 3 actions, 2 positions.
    dist = np.zeros((2, 3, 2))
    dist[0, :, 0] = [0.2, 0.3, 0.5]
    dist[0, :, 1] = [1.0, 0.0, 0.0]
    dist[1, :, 0] = [0.0, 0.0, 1.0]
    dist[1, :, 1] = [0.5, 0.5, 0.0]
    q = np.arange(12, dtype=float).reshape(2, 3, 2) / 20
    out = policy_arrays(dist, action=[2, 1], position=[0, 1], estimated_rewards=q)
    np.testing.assert_allclose(out["evaluation_pscore"], [0.5, 0.5])
    np.testing.assert_allclose(out["estimated_reward"], [q[0, 2, 0], q[1, 1, 1]])
    expected = [
        0.2 * q[0, 0, 0] + 0.3 * q[0, 1, 0] + 0.5 * q[0, 2, 0],
        0.5 * (q[1, 0, 1] + q[1, 1, 1]),
    ]
    np.testing.assert_allclose(out["estimated_policy_reward"], expected)
    with pytest.raises(ValueError, match="sum to 1"):
        policy_arrays(dist * 2, action=[0, 0])


def test_bootstrap_interval_brackets_the_estimate_and_is_reproducible():
    rng = np.random.default_rng(0)
    n = 2000
    reward = (rng.random(n) < 0.3).astype(float)
    pscore = rng.uniform(0.1, 1.0, n)
    evaluation = rng.uniform(0.0, 1.0, n)
    for est in (InverseProbabilityWeighting(), SelfNormalizedInverseProbabilityWeighting()):
        a = est.estimate_interval(reward, pscore, evaluation, n_bootstrap=300, alpha=0.1, seed=3)
        b = est.estimate_interval(reward, pscore, evaluation, n_bootstrap=300, alpha=0.1, seed=3)
        assert a == b
        assert a.lower < a.estimate < a.upper
        assert a.estimate == pytest.approx(est.estimate_policy_value(reward, pscore, evaluation))
        assert a.n_rounds == n and a.alpha == 0.1
    dr = DoublyRobust().estimate_interval(
        reward, pscore, evaluation, np.full(n, 0.3), np.full(n, 0.3), n_bootstrap=200
    )
    assert dr.lower < dr.estimate < dr.upper
    constant = NaiveAverage().estimate_interval(np.full(50, 0.2), n_bootstrap=50)
    assert constant.lower == pytest.approx(0.2) and constant.upper == pytest.approx(0.2)


def test_estimators_are_unbiased_on_a_simulated_bandit_while_naive_is_not():
    """Five arms, known reward rates: V(π_e) = Σ π_e q = 0.37; the logger's own value is 0.21.

    Mean over 2000 logs of 500 rounds; tolerance 4 standard errors of that mean.
    """
    rng = np.random.default_rng(1)
    pi0 = np.array([0.5, 0.2, 0.1, 0.1, 0.1])
    pie = np.array([0.1, 0.1, 0.2, 0.2, 0.4])
    q = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    truth = float(pie @ q)
    n_logs, n = 2000, 500
    actions = rng.choice(5, size=(n_logs, n), p=pi0)
    rewards = (rng.random((n_logs, n)) < q[actions]).astype(float)
    q_hat = q + 0.1  # a biased reward model: DR must stay unbiased anyway
    estimates = {"naive": [], "ipw": [], "snipw": [], "dr": []}
    for a, r in zip(actions, rewards, strict=True):
        estimates["naive"].append(NaiveAverage().estimate_policy_value(r))
        estimates["ipw"].append(
            InverseProbabilityWeighting().estimate_policy_value(r, pi0[a], pie[a])
        )
        estimates["snipw"].append(
            SelfNormalizedInverseProbabilityWeighting().estimate_policy_value(r, pi0[a], pie[a])
        )
        estimates["dr"].append(
            DoublyRobust().estimate_policy_value(
                r, pi0[a], pie[a], q_hat[a], np.full(n, float(pie @ q_hat))
            )
        )
    for name, values in estimates.items():
        values = np.asarray(values)
        se = values.std() / math.sqrt(n_logs)
        if name == "naive":
            assert values.mean() == pytest.approx(float(pi0 @ q), abs=4 * se)
            assert abs(values.mean() - truth) > 50 * se
        else:  # SNIPW's O(1/n) bias is far below the tolerance here
            assert abs(values.mean() - truth) < 4 * se, (name, values.mean(), truth, se)


@pytest.mark.parametrize("lam", [0, -1.0, float("nan"), "10", True])
def test_bad_lambda_fails_at_construction(lam):
    with pytest.raises(ValueError, match="lambda_"):
        InverseProbabilityWeighting(lambda_=lam)
    with pytest.raises(ValueError, match="lambda_"):
        DoublyRobust(lambda_=lam)


def test_bad_inputs_fail_with_clear_errors():
    ipw = InverseProbabilityWeighting()
    with pytest.raises(ValueError, match=r"pscore must lie in \(0, 1\]"):
        ipw.estimate_policy_value(REWARD, np.array([0.5, 0.0, 0.2, 0.8]), EVAL)
    with pytest.raises(ValueError, match=r"evaluation_pscore must lie in \[0, 1\]"):
        ipw.estimate_policy_value(REWARD, PSCORE, EVAL + 1)
    with pytest.raises(ValueError, match="NaN"):
        ipw.estimate_policy_value(np.array([1.0, np.nan, 0, 0]), PSCORE, EVAL)
    with pytest.raises(ValueError, match="expected 4"):
        ipw.estimate_policy_value(REWARD, PSCORE[:3], EVAL)
    with pytest.raises(ValueError, match="1-d"):
        ipw.estimate_policy_value(REWARD[None], PSCORE, EVAL)
    with pytest.raises(ValueError, match="no rounds"):
        ipw.estimate_policy_value(np.array([]), np.array([]), np.array([]))
    with pytest.raises(ValueError, match="undefined"):
        SelfNormalizedInverseProbabilityWeighting().estimate_policy_value(
            REWARD, PSCORE, np.zeros(4)
        )
    with pytest.raises(ValueError, match="n_bootstrap"):
        ipw.estimate_interval(REWARD, PSCORE, EVAL, n_bootstrap=1)
    with pytest.raises(ValueError, match="alpha"):
        ipw.estimate_interval(REWARD, PSCORE, EVAL, alpha=1.0)
    with pytest.raises(ValueError, match="estimated_reward"):
        DoublyRobust().estimate_policy_value(REWARD, PSCORE, EVAL, Q_LOGGED[:2], Q_POLICY)


def test_threshold_check_messages_and_its_boundaries():
    for ok in (1, 0.5, math.inf):
        check_threshold("lam", ok)
    check_threshold("lam", 0, allow_zero=True)
    check_threshold("lam", 0.0, allow_zero=True)
    cases = [
        ({"value": "10"}, "^lam must be a number or inf, got '10'$"),
        ({"value": True}, "^lam must be a number or inf, got True$"),
        ({"value": None}, "^lam must be a number or inf, got None$"),
        ({"value": math.nan}, "^lam must be a number or inf, got nan$"),
        ({"value": 0}, "^lam must be positive, got 0$"),
        ({"value": -0.5}, "^lam must be positive, got -0.5$"),
        ({"value": -1, "allow_zero": True}, "^lam must be ≥ 0, got -1$"),
        ({"value": -math.inf, "allow_zero": True}, "^lam must be ≥ 0, got -inf$"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            check_threshold("lam", **kwargs)
    with pytest.raises(ValueError, match="^lambda_ must be positive, got 0$"):
        InverseProbabilityWeighting(lambda_=0)


def test_estimators_name_the_bad_array():
    ipw, dr = InverseProbabilityWeighting(), DoublyRobust()
    nan = np.array([0.5, np.nan, 0.2, 0.8])
    cases = [
        (
            lambda: ipw.estimate_policy_value(REWARD, PSCORE[:3], EVAL),
            "^pscore has 3 rounds, expected 4$",
        ),
        (
            lambda: ipw.estimate_policy_value(REWARD, PSCORE, EVAL[:3]),
            "^evaluation_pscore has 3 rounds, expected 4$",
        ),
        (
            lambda: ipw.estimate_policy_value(REWARD, nan, EVAL),
            "^pscore holds NaN or infinite values$",
        ),
        (
            lambda: ipw.estimate_policy_value(REWARD, PSCORE, nan),
            "^evaluation_pscore holds NaN or infinite values$",
        ),
        (
            lambda: ipw.estimate_policy_value(REWARD[None], PSCORE, EVAL),
            r"^reward must be 1-d \(n_rounds,\), got shape \(1, 4\)$",
        ),
        (lambda: ipw.estimate_policy_value([], [], []), "^the log holds no rounds$"),
        (
            lambda: ipw.estimate_policy_value(REWARD, PSCORE, EVAL - 0.3),
            r"^evaluation_pscore must lie in \[0, 1\], found e.g. \[-0.05 -0.1 \]$",
        ),
        (
            lambda: ipw.estimate_policy_value(REWARD, PSCORE + 0.5, EVAL),
            r"^pscore must lie in \(0, 1\], found e.g. \[1.3\]$",
        ),
        (
            lambda: dr.estimate_policy_value(REWARD, PSCORE, EVAL, Q_LOGGED[:2], Q_POLICY),
            "^estimated_reward has 2 rounds, expected 4$",
        ),
        (
            lambda: dr.estimate_policy_value(REWARD, PSCORE, EVAL, Q_LOGGED, Q_POLICY[:2]),
            "^estimated_policy_reward has 2 rounds, expected 4$",
        ),
        (
            lambda: dr.estimate_interval(REWARD, PSCORE, EVAL, Q_LOGGED, nan),
            "^estimated_policy_reward holds NaN or infinite values$",
        ),
        (
            lambda: dr.estimate_interval(REWARD, PSCORE, EVAL, nan, Q_POLICY),
            "^estimated_reward holds NaN or infinite values$",
        ),
        (lambda: NaiveAverage().estimate_policy_value([]), "^the log holds no rounds$"),
        (lambda: NaiveAverage().estimate_interval([]), "^the log holds no rounds$"),
        (
            lambda: NaiveAverage().estimate_policy_value([[1.0]]),
            r"^reward must be 1-d \(n_rounds,\), got shape \(1, 1\)$",
        ),
        (
            lambda: NaiveAverage().estimate_policy_value([np.inf]),
            "^reward holds NaN or infinite values$",
        ),
        (
            lambda: SelfNormalizedInverseProbabilityWeighting().estimate_interval(
                REWARD, PSCORE, np.zeros(4)
            ),
            "^SNIPW is undefined: the evaluation policy gives no logged action mass$",
        ),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
    # At most three offending values are quoted.
    with pytest.raises(ValueError, match=r"found e.g. \[-1. -2. -3.\]$"):
        ipw.estimate_policy_value(REWARD, PSCORE, np.array([-1.0, -2.0, -3.0, -4.0]))
    # float32 input is computed in float64: (0.1f + 0.2f) / 2 exactly, not its float32 rounding.
    r32 = np.array([0.1, 0.2], dtype=np.float32)
    assert NaiveAverage().estimate_policy_value(r32) == (float(r32[0]) + float(r32[1])) / 2
    # The edges of the unit intervals are allowed: π_0 = 1, π_e = 0 and π_e = 1.
    assert ipw.estimate_policy_value([1.0, 1.0], [1.0, 1.0], [0.0, 1.0]) == 0.5


def test_clipped_and_self_normalised_values_by_hand():
    # λ = 1: w = [0.5, 1, 1, 0.25]. DR terms q̂_π + w (r − q̂) = [0.65, 0.1, 1.0, 0.05].
    assert DoublyRobust(lambda_=1.0).estimate_policy_value(
        REWARD, PSCORE, EVAL, Q_LOGGED, Q_POLICY
    ) == pytest.approx(1.8 / 4, rel=1e-12)
    snipw = SelfNormalizedInverseProbabilityWeighting(lambda_=1.0)
    assert snipw.estimate_policy_value(REWARD, PSCORE, EVAL) == pytest.approx(1.5 / 2.75, rel=1e-12)
    # Σ w = 0.5 < 1 is still defined: V̂ = 0.25 / 0.5.
    tiny = SelfNormalizedInverseProbabilityWeighting()
    assert tiny.estimate_policy_value([1.0, 0.0], [1.0, 1.0], [0.25, 0.25]) == 0.5
    assert SelfNormalizedInverseProbabilityWeighting().estimator_name == "snipw"
    assert (NaiveAverage().estimator_name, InverseProbabilityWeighting().estimator_name) == (
        "naive",
        "ipw",
    )
    assert DoublyRobust().estimator_name == "dr"


def test_interval_defaults_are_1000_resamples_at_alpha_005_with_seed_0():
    rng = np.random.default_rng(4)
    n = 60
    reward = rng.uniform(0.0, 1.0, n)  # continuous: every resample count moves the quantiles
    pscore = rng.uniform(0.2, 1.0, n)
    evaluation = rng.uniform(0.0, 1.0, n)
    q, q_pi = rng.uniform(0, 1, n), rng.uniform(0, 1, n)
    cases = [
        (NaiveAverage(), (reward,)),
        (InverseProbabilityWeighting(), (reward, pscore, evaluation)),
        (SelfNormalizedInverseProbabilityWeighting(), (reward, pscore, evaluation)),
        (DoublyRobust(), (reward, pscore, evaluation, q, q_pi)),
    ]
    for est, args in cases:
        default = est.estimate_interval(*args)
        assert default == est.estimate_interval(*args, n_bootstrap=1000, alpha=0.05, seed=0)
        assert default != est.estimate_interval(*args, n_bootstrap=1001, alpha=0.05, seed=0)
        assert default != est.estimate_interval(*args, n_bootstrap=1000, alpha=0.05, seed=1)
        assert default.estimate == pytest.approx(est.estimate_policy_value(*args), rel=1e-12)
        assert default.alpha == 0.05 and default.n_rounds == n
        assert default.lower < default.estimate < default.upper
        narrow = est.estimate_interval(*args, alpha=0.5)
        assert default.lower < narrow.lower < narrow.upper < default.upper


def test_policy_arrays_defaults_and_input_checks():
    dist = np.zeros((2, 3, 2))
    dist[:, :, 0] = [[0.2, 0.3, 0.5], [0.6, 0.4, 0.0]]
    dist[:, :, 1] = [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    # Without positions every round is at position 0; without a reward model, one key.
    out = policy_arrays(dist, action=np.array([2.0, 0.0]))
    assert list(out) == ["evaluation_pscore"]
    assert out["evaluation_pscore"].tolist() == [0.5, 0.6]
    assert policy_arrays(dist, [2, 2], [1, 1])["evaluation_pscore"].tolist() == [0.0, 1.0]
    q = np.arange(12).reshape(2, 3, 2)  # integers in, float64 out
    out = policy_arrays(dist, [0, 1], estimated_rewards=q)
    assert all(v.dtype == np.float64 for v in out.values())
    assert policy_arrays(dist.astype(np.float32), [0, 1])["evaluation_pscore"].dtype == np.float64
    assert out["estimated_reward"].tolist() == [q[0, 0, 0], q[1, 1, 0]]
    assert out["estimated_policy_reward"] == pytest.approx(
        [0.2 * 0 + 0.3 * 2 + 0.5 * 4, 0.6 * 6 + 0.4 * 8], rel=1e-12
    )
    # Positions given as floats index like integers.
    assert policy_arrays(dist, [2, 2], np.array([1.0, 1.0]))["evaluation_pscore"].tolist() == [0, 1]
    # Sums within 1e-6 (plus numpy's relative 1e-5) of 1 pass; 1 % off does not.
    policy_arrays(dist * (1 + 1.05e-5), [0, 0])
    cases = [
        (
            (dist[:, :, 0], [0, 0]),
            r"^action_dist must be \(n_rounds, n_actions, len_list\), got \(2, 3\)$",
        ),
        ((dist, [0, 0, 0]), "^action and position need one entry per round$"),
        ((dist, [0, 0], [0]), "^action and position need one entry per round$"),
        ((dist, [[0, 0]]), "^action and position need one entry per round$"),
        ((dist, [-1, 0]), "^action or position out of range of action_dist$"),
        ((dist, [0, 3]), "^action or position out of range of action_dist$"),
        ((dist, [0, 0], [0, -1]), "^action or position out of range of action_dist$"),
        ((dist, [0, 0], [2, 0]), "^action or position out of range of action_dist$"),
        ((dist * 1.01, [0, 0]), "^action_dist must sum to 1 over actions at every"),
    ]
    for args, message in cases:
        with pytest.raises(ValueError, match=message):
            policy_arrays(*args)
    with pytest.raises(
        ValueError, match=r"^estimated_rewards \(2, 3, 1\) must match action_dist \(2, 3, 2\)$"
    ):
        policy_arrays(dist, [0, 0], estimated_rewards=q[:, :, :1])


def test_ips_dcg_and_recall_match_hand_computation():
    # User 0 positives: item 1 (θ = 0.5, weight 2), item 2 (θ = 0.005 → floor 0.01, weight 100).
    # User 1 positive: item 5 (weight 1), never ranked. User 2 has no positives and is skipped.
    top = np.array([[3, 1, 2], [0, 2, 1], [1, 2, 3]])
    metric = IPSRankingMetrics(k=2, floor=0.01)
    got = metric.evaluate(
        top, np.array([0, 1, 2]), np.array([0, 0, 1]), np.array([1, 2, 5]), [0.5, 0.005, 1.0]
    )
    assert got["ips_dcg_at_2"] == pytest.approx((2 / math.log2(3) + 0.0) / 2)  # hit at rank 2
    assert got["ips_recall_at_2"] == pytest.approx(2 / 103)
    at3 = IPSRankingMetrics(k=3, floor=0.01).evaluate(
        top[:1], np.array([0]), np.array([0, 0, 1]), np.array([1, 2, 5]), [0.5, 0.005, 1.0]
    )
    assert at3["ips_recall_at_3"] == pytest.approx(1.0)  # user 1 is not evaluated here
    assert at3["ips_dcg_at_3"] == pytest.approx(2 / math.log2(3) + 100 / 2)


def test_ips_dcg_is_unbiased_for_the_true_dcg():
    """Y = O·R with known θ: the mean IPS-DCG over draws equals the DCG with gains γ (4 s.e.)."""
    rng = np.random.default_rng(2)
    n_users, n_items, k, draws = 30, 12, 5, 3000
    gamma = rng.uniform(0.05, 0.6, (n_users, n_items))
    theta = rng.uniform(0.05, 1.0, (n_users, n_items))
    top = np.argsort(rng.random((n_users, n_items)), axis=1)[:, :k]
    disc = 1 / np.log2(np.arange(k) + 2)
    truth = (np.take_along_axis(gamma, top, 1) @ disc).mean()
    metric, values = IPSRankingMetrics(k=k, floor=0.01), []
    # Every user also gets a positive on an extra, never-ranked item: |U| stays fixed.
    extra_u, extra_i = np.arange(n_users), np.full(n_users, n_items)
    for _ in range(draws):
        y = (rng.random(gamma.shape) < theta) & (rng.random(gamma.shape) < gamma)
        u, i = np.nonzero(y)
        u, i, t = np.r_[u, extra_u], np.r_[i, extra_i], np.r_[theta[u, i], np.ones(n_users)]
        values.append(metric.evaluate(top, np.arange(n_users), u, i, t)["ips_dcg_at_5"])
    values = np.asarray(values)
    assert abs(values.mean() - truth) < 4 * values.std() / math.sqrt(values.size)


@pytest.mark.parametrize("kwargs", [{"k": 0}, {"k": 2.5}, {"floor": 0.0}, {"floor": 1.5}])
def test_bad_ranking_metric_parameters_fail(kwargs):
    with pytest.raises(ValueError):
        IPSRankingMetrics(**kwargs)
