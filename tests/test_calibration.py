"""Calibrators (temperature, isotonic via PAV), their selection, and the calibration metrics."""

import numpy as np
import pytest

from evaluation.calibration import expected_calibration_error, normalized_entropy, reliability_curve
from models.plove.calibration import (
    EPS,
    Identity,
    IsotonicCalibrator,
    TemperatureScaling,
    calibrator_from_dict,
    choose_calibrator,
    log_loss,
    logit,
    pool_adjacent_violators,
    sigmoid,
)


def test_ece_on_a_worked_example():
    # Two even bins: [0, .5) holds p = .1, .2 (mean .15, labels 0, 1 → rate .5);
    # [.5, 1] holds p = .6, .9 (mean .75, rate 1). ECE = ½·|.15 − .5| + ½·|.75 − 1| = .3.
    p = np.array([0.1, 0.2, 0.6, 0.9])
    y = np.array([0, 1, 1, 1])
    assert expected_calibration_error(p, y, n_bins=2, strategy="uniform") == pytest.approx(0.3)
    # Equal-mass bins of two rows each give the same bins here.
    assert expected_calibration_error(p, y, n_bins=2, strategy="quantile") == pytest.approx(0.3)
    curve = reliability_curve(p, y, n_bins=2, strategy="uniform")
    assert [r["count"] for r in curve] == [2, 2]
    assert [r["observed"] for r in curve] == [0.5, 1.0]
    assert all(r["lower"] <= r["observed"] <= r["upper"] for r in curve)


def test_ece_is_zero_when_every_bin_matches_its_rate():
    p = np.repeat([0.25, 0.75], 4)
    y = np.array([1, 0, 0, 0, 1, 1, 1, 0])
    assert expected_calibration_error(p, y, n_bins=4, strategy="uniform") == pytest.approx(0.0)


def test_pav_on_a_tiny_case():
    assert pool_adjacent_violators(np.array([1.0, 3.0, 2.0, 4.0])).tolist() == [1, 2.5, 2.5, 4]
    # A cascade: 5 and 4 pool to 4.5, then 1 joins them (10/3), which stays above the leading 3.
    fitted = pool_adjacent_violators(np.array([3.0, 5.0, 4.0, 1.0]))
    assert fitted == pytest.approx([3, 10 / 3, 10 / 3, 10 / 3])
    # Weights: (3 with weight 1, 1 with weight 3) pool to (3 + 3) / 4 = 1.5.
    assert pool_adjacent_violators(np.array([3.0, 1.0]), np.array([1.0, 3.0])).tolist() == [
        1.5,
        1.5,
    ]


def test_isotonic_calibrator_is_monotone_and_pools_ties():
    z = np.array([0.0, 0.0, 1.0, 2.0, 3.0, 3.0])
    y = np.array([0, 1, 1, 0, 1, 1])
    cal = IsotonicCalibrator().fit(z, y)
    assert cal.knots.tolist() == [0.0, 1.0, 2.0, 3.0]
    # PAV blocks {0, 1, 2} (4 pairs, 2 loves) and {3} (2 pairs, 2 loves), base rate 4/6, each
    # shrunk by one pseudo-observation at the base rate: (2 + 2/3) / 5 and (2 + 2/3) / 3.
    assert cal.values == pytest.approx([8 / 15, 8 / 15, 8 / 15, 8 / 9])
    grid = np.linspace(-1, 4, 50)
    assert np.all(np.diff(cal.predict(grid)) >= 0)
    again = calibrator_from_dict(cal.to_dict())
    assert np.allclose(again.predict(grid), cal.predict(grid))


def test_isotonic_calibration_never_says_exactly_zero_or_one():
    # Plain PAV gives 0 to the block without loves and 1 to the block without misses.
    cal = IsotonicCalibrator().fit(np.array([0.0, 1.0, 2.0, 3.0]), np.array([0, 0, 1, 1]))
    assert cal.values == pytest.approx([1 / 6, 1 / 6, 5 / 6, 5 / 6])  # (0 + ½)/3, (2 + ½)/3
    # A rare label, as P[Love]: most logits see no love at all, yet every prediction is > 0.
    rng = np.random.default_rng(3)
    z = rng.normal(0, 1, 30_000)
    y = (rng.random(z.size) < 0.004 * np.exp(z) / np.exp(0.5)).astype(int)
    p = IsotonicCalibrator().fit(z, y).predict(np.linspace(-6, 6, 1001))
    assert np.all((p > 0) & (p < 1))
    assert np.all(np.diff(p) >= 0)
    assert log_loss(IsotonicCalibrator().fit(z, y).predict(z), y) < log_loss(
        np.full(z.size, y.mean()), y
    )


def test_temperature_scaling_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, 200_000)
    y = (rng.random(z.size) < sigmoid(z / 2.5)).astype(int)
    cal = TemperatureScaling().fit(z, y)
    assert cal.temperature == pytest.approx(2.5, rel=0.03)
    assert calibrator_from_dict(cal.to_dict()).temperature == cal.temperature


def test_choose_calibrator_picks_isotonic_for_a_non_sigmoid_distortion():
    rng = np.random.default_rng(1)
    z = rng.normal(0, 2, 50_000)
    p_true = np.where(z > 0, 0.6, 0.05)  # a step: no temperature can fit it
    y = (rng.random(z.size) < p_true).astype(int)
    cal, scores = choose_calibrator(z, y)
    assert set(scores) == {"identity", "temperature", "isotonic"}
    assert cal.name == "isotonic" == min(scores, key=scores.get)


def test_normalized_entropy_of_the_base_rate_is_one():
    y = np.array([0] * 90 + [1] * 10)
    assert normalized_entropy(np.full(100, 0.1), y) == pytest.approx(1.0)
    assert log_loss(y.astype(float), y) < 1e-5


def test_calibrators_reject_bad_input():
    with pytest.raises(ValueError, match="0 or 1"):
        TemperatureScaling().fit(np.array([0.1, 0.2]), np.array([0, 2]))
    with pytest.raises(ValueError, match="aligned"):
        IsotonicCalibrator().fit(np.array([0.1, 0.2]), np.array([0]))
    with pytest.raises(ValueError, match="unknown calibration"):
        calibrator_from_dict({"method": "platt"})


def test_sigmoid_and_logit_on_hand_values_and_at_the_ends():
    assert sigmoid(0) == 0.5
    assert sigmoid(np.array([np.log(3.0), -np.log(3.0)])) == pytest.approx([0.75, 0.25], rel=1e-12)
    assert sigmoid([-800, 800]).tolist() == [0.0, 1.0]  # no overflow
    assert logit(0.5) == 0.0
    assert logit(np.array([0.1], dtype=np.float32)).dtype == np.float64
    assert sigmoid(np.array([0.1], dtype=np.float32)).dtype == np.float64
    assert logit(np.array([0.75, 0.25])) == pytest.approx([np.log(3.0), -np.log(3.0)], rel=1e-12)
    # 0 and 1 are clipped to [eps, 1 − eps]: finite and symmetric.
    ends = logit([0, 1])
    assert ends[0] == pytest.approx(np.log(EPS / (1 - EPS)), rel=1e-9) and ends[1] == pytest.approx(
        -ends[0], rel=1e-9
    )
    assert EPS == 1e-7
    assert logit([0, 1], eps=0.25) == pytest.approx([-np.log(3.0), np.log(3.0)], rel=1e-12)


def test_identity_is_the_plain_sigmoid_and_round_trips():
    cal = Identity()
    assert cal.fit(np.array([1.0]), np.array([0])) is cal
    assert cal.predict(np.array([np.log(3.0)])) == pytest.approx([0.75])
    assert cal.to_dict() == {"method": "identity"}
    assert isinstance(calibrator_from_dict({"method": "identity"}), Identity)


def test_temperature_scaling_on_tiny_worked_examples():
    # All logits 2, three of four labels 1: the optimum has σ(2β) = ¾, so T = 1/β = 2 / log 3.
    z, y = np.full(4, 2.0), np.array([1, 1, 1, 0])
    cal = TemperatureScaling().fit(z, y)
    assert cal.temperature == pytest.approx(2 / np.log(3.0), rel=1e-9)
    assert cal.predict(np.array([2.0])) == pytest.approx([0.75], rel=1e-9)
    assert TemperatureScaling(temperature=2.0).predict([2, -4]) == pytest.approx(
        [sigmoid(1.0), sigmoid(-2.0)], rel=1e-12
    )
    assert TemperatureScaling(temperature=2.0).to_dict() == {
        "method": "temperature",
        "temperature": 2.0,
    }
    # float32 logits are divided by T in float64.
    assert TemperatureScaling(temperature=3.0).predict(np.array([1.0], dtype=np.float32))[
        0
    ] == pytest.approx(sigmoid(1 / 3), rel=1e-13)
    # One Newton step from β = 1 by hand: p = σ(2), grad = Σ(p − y)z = 8p − 6,
    # hess = Σ p(1 − p)z² (+ 1e-12) = 16p(1 − p).
    p = sigmoid(2.0)
    beta = 1 - (8 * p - 6) / (16 * p * (1 - p) + 1e-12)
    one = TemperatureScaling(max_iter=1).fit(z, y)
    assert one.temperature == pytest.approx(1 / beta, rel=1e-14)
    back = calibrator_from_dict({"method": "temperature", "temperature": 3})
    assert isinstance(back.temperature, float) and back.temperature == 3.0
    # Labels anti-correlated with the logits: every Newton step overshoots below zero, so β
    # halves from 1 until the change 2^-k falls below tol = 1e-10 (k = 34).
    anti = TemperatureScaling().fit(np.array([1.0, -1.0]), np.array([0, 1]))
    assert anti.temperature == 2.0**34
    assert (
        TemperatureScaling(max_iter=3).fit(np.array([1.0, -1.0]), np.array([0, 1])).temperature
        == 8.0
    )
    with pytest.raises(ValueError, match="^temperature scaling needs some non-zero logits$"):
        TemperatureScaling().fit(np.zeros(3), np.array([0, 1, 0]))


def test_isotonic_shrinks_a_single_class_block_by_the_clipped_base_rate():
    # No loves at all: the base rate 0 is clipped to ½/(n + 1) = 1/8, the block gives (0 + ⅛) / 4.
    none = IsotonicCalibrator().fit(np.array([0.0, 1.0, 2.0]), np.array([0, 0, 0]))
    assert none.values.tolist() == [1 / 32] * 3
    every = IsotonicCalibrator().fit(np.array([0.0, 1.0, 2.0]), np.array([1, 1, 1]))
    assert every.values.tolist() == [31 / 32] * 3  # (3 + ⅞) / 4
    # Three PAV blocks {0}, {1, 2} and {3}; base rate 4/6.
    three = IsotonicCalibrator().fit(
        np.array([0.0, 1.0, 2.0, 2.0, 3.0, 3.0]), np.array([0, 1, 0, 1, 1, 1])
    )
    assert three.knots.tolist() == [0.0, 1.0, 2.0, 3.0]
    # blocks: {0}: 0 of 1 → (0 + ⅔)/2; {1, 2}: 2 of 3 → (2 + ⅔)/4; {3}: 2 of 2 → (2 + ⅔)/3
    assert three.values == pytest.approx([1 / 3, 2 / 3, 2 / 3, 8 / 9], rel=1e-12)


def test_isotonic_repools_blocks_whose_order_the_shrinkage_reversed():
    # Blocks 1 of 2 (z = 0), 6 of 10 (z = 1), 30 of 30 (z = 2): increasing rates, but with the
    # base rate p̄ = 37/42 the shrunk values are (1 + p̄)/3 = 0.6270 > (6 + p̄)/11 = 0.6256, so the
    # second PAV pools them with weights n_b + 1 = 3 and 11: (1 + 6 + 2p̄) / 14.
    z = np.repeat([0.0, 1.0, 2.0], [2, 10, 30]).astype(np.float32)
    y = np.r_[[1, 0], [1] * 6 + [0] * 4, [1] * 30]
    cal = IsotonicCalibrator().fit(z, y)
    prior = 37 / 42
    assert (1 + prior) / 3 > (6 + prior) / 11
    pooled = (7 + 2 * prior) / 14
    assert cal.values == pytest.approx([pooled, pooled, (30 + prior) / 31], rel=1e-12)
    assert cal.knots.dtype == np.float64 and cal.knots.tolist() == [0.0, 1.0, 2.0]


def test_isotonic_predict_interpolates_between_knots_and_is_flat_beyond():
    cal = IsotonicCalibrator(np.array([0.0, 1.0, 3.0]), np.array([0.2, 0.4, 0.8]))
    assert cal.predict([-5, 0, 0.5, 2, 3, 10]) == pytest.approx([0.2, 0.2, 0.3, 0.6, 0.8, 0.8])
    assert cal.to_dict() == {
        "method": "isotonic",
        "knots": [0.0, 1.0, 3.0],
        "values": [0.2, 0.4, 0.8],
    }
    back = calibrator_from_dict(cal.to_dict())
    assert back.predict([0.5]) == pytest.approx([0.3])
    with pytest.raises(ValueError, match="^the isotonic calibrator has not been fitted$"):
        IsotonicCalibrator().predict(np.array([0.0]))


def test_pav_rejects_bad_weights_and_shapes_with_the_shapes_named():
    assert pool_adjacent_violators([2, 1]).tolist() == [1.5, 1.5]  # ints and lists accepted
    assert pool_adjacent_violators(np.array([2.0, 1.0, 3.0]), None).tolist() == [1.5, 1.5, 3.0]
    # A three-block cascade with weights: 4 (w 1) and 2 (w 3) pool to 2.5 (w 4), then 0 (w 4)
    # joins: (2.5·4 + 0·4) / 8 = 1.25, which falls below the leading 2 (w 2): (2·2 + 10) / 10.
    got = pool_adjacent_violators(np.array([2.0, 4.0, 2.0, 0.0]), np.array([2.0, 1.0, 3.0, 4.0]))
    assert got == pytest.approx([1.4] * 4, rel=1e-12)
    with pytest.raises(
        ValueError, match=r"^y and weights must be aligned 1-d arrays, got \(2,\), \(3,\)$"
    ):
        pool_adjacent_violators(np.array([1.0, 2.0]), np.ones(3))
    with pytest.raises(ValueError, match=r"got \(1, 2\), \(1, 2\)"):
        pool_adjacent_violators(np.array([[1.0, 2.0]]))
    with pytest.raises(ValueError, match="^PAV weights must be positive$"):
        pool_adjacent_violators(np.array([1.0, 2.0]), np.array([1.0, 0.0]))
    with pytest.raises(ValueError, match="^PAV weights must be positive$"):
        pool_adjacent_violators(np.array([1.0, 2.0]), np.array([-1.0, 1.0]))


def test_input_checks_name_the_problem():
    cal = IsotonicCalibrator().fit(np.array([[0.0], [1.0]]), np.array([0, 1]))  # raveled
    assert cal.knots.tolist() == [0.0, 1.0]
    with pytest.raises(
        ValueError, match=r"^logits and labels must be aligned and non-empty, got \(2,\), \(1,\)$"
    ):
        IsotonicCalibrator().fit(np.array([0.1, 0.2]), np.array([0]))
    with pytest.raises(ValueError, match=r"non-empty, got \(0,\), \(0,\)"):
        TemperatureScaling().fit(np.array([]), np.array([]))
    for bad in (np.nan, np.inf, -np.inf):
        with pytest.raises(ValueError, match="^logits must be finite$"):
            IsotonicCalibrator().fit(np.array([0.1, bad]), np.array([0, 1]))
    for labels in ([0, 0.5], [-1, 1], [1, 2]):
        with pytest.raises(ValueError, match="^labels must be 0 or 1$"):
            IsotonicCalibrator().fit(np.array([0.1, 0.2]), np.array(labels))
    with pytest.raises(ValueError, match="^unknown calibration method 'platt'$"):
        calibrator_from_dict({"method": "platt"})
    with pytest.raises(ValueError, match="^unknown calibration method None$"):
        calibrator_from_dict({})


def test_log_loss_by_hand_and_its_clipping():
    assert log_loss(np.array([0.5, 0.25]), np.array([1, 0])) == pytest.approx(
        -(np.log(0.5) + np.log(0.75)) / 2, rel=1e-12
    )
    assert log_loss([0.0], [1]) == pytest.approx(-np.log(EPS), rel=1e-12)
    assert log_loss([1.0], [0]) == pytest.approx(-np.log(EPS), rel=1e-6)
    assert log_loss([0.0, 1.0], [1, 0], eps=0.25) == pytest.approx(np.log(4.0), rel=1e-12)
    # Boolean labels and float32 probabilities are computed in float64.
    assert log_loss(np.array([0.5, 0.25]), np.array([True, False])) == pytest.approx(
        -(np.log(0.5) + np.log(0.75)) / 2, rel=1e-12
    )
    p32 = np.array([0.1], dtype=np.float32)
    assert log_loss(p32, [1]) == pytest.approx(-np.log(float(p32[0])), rel=1e-13)


def test_choose_calibrator_scores_candidates_on_held_out_folds():
    rng = np.random.default_rng(5)
    z = rng.normal(0, 2, 400)
    y = (rng.random(z.size) < sigmoid(z / 2)).astype(int)
    cal, scores = choose_calibrator(z, y, "identity")
    assert scores == {"identity": pytest.approx(log_loss(sigmoid(z), y), rel=1e-12)}
    assert isinstance(cal, Identity)
    # A fixed method: only it is fitted, on held-out folds (fold = seeded permutation mod k).
    cal, scores = choose_calibrator(z, y, "isotonic", folds=3, seed=7)
    fold = np.random.default_rng(7).permutation(z.size) % 3
    pred = np.empty_like(z)
    for f in (0, 1, 2):
        held = fold == f
        pred[held] = IsotonicCalibrator().fit(z[~held], y[~held]).predict(z[held])
    assert list(scores) == ["isotonic"]
    assert scores["isotonic"] == pytest.approx(log_loss(pred, y), rel=1e-12)
    # The winner is refitted on all the data; the defaults are 5 folds with seed 0.
    assert cal.knots.tolist() == IsotonicCalibrator().fit(z, y).knots.tolist()
    auto_cal, auto = choose_calibrator(z, y)
    assert auto == choose_calibrator(z, y, "auto", folds=5, seed=0)[1]
    assert auto != choose_calibrator(z, y, "auto", folds=5, seed=1)[1]
    assert auto != choose_calibrator(z, y, "auto", folds=4, seed=0)[1]
    assert list(auto) == ["identity", "temperature", "isotonic"]
    assert auto_cal.name == min(auto, key=auto.get)
    assert auto["temperature"] < auto["identity"]  # the logits are twice too confident
