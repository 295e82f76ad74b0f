"""Calibrators (temperature, isotonic via PAV), their selection, and the calibration metrics."""

import numpy as np
import pytest

from evaluation.calibration import expected_calibration_error, normalized_entropy, reliability_curve
from models.plove.calibration import (
    IsotonicCalibrator,
    TemperatureScaling,
    calibrator_from_dict,
    choose_calibrator,
    log_loss,
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
