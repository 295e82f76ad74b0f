"""Calibration where the logger rarely shows, and the evaluator's intervals widened for it."""

import numpy as np
import pytest

from evaluation.binomial import clopper_pearson
from evaluation.calibration import low_propensity_calibration
from evaluation.policies import SupportCalibration, widened_interval


def test_low_propensity_calibration_selects_the_lowest_decile_and_bounds_the_ratio():
    # 20 rows; propensities 1..20 / 100: the 0.1 quantile is 0.029, so rows 0 and 1 are selected.
    prop = np.arange(1, 21) / 100
    p = np.full(20, 0.2)
    p[:2] = [0.1, 0.3]
    y = np.zeros(20)
    y[0] = 1.0
    y[5:9] = 1.0
    m = low_propensity_calibration(p, y, prop, share=0.1, n_bins=2)
    assert m["n"] == 2 and m["positives"] == 1
    assert m["propensity_threshold"] == pytest.approx(np.quantile(prop, 0.1))
    assert m["mean_predicted"] == pytest.approx(0.2) and m["observed_rate"] == 0.5
    lo, hi = clopper_pearson(1, 2)
    assert (m["observed_lo"], m["observed_hi"]) == pytest.approx((lo, hi))
    assert (m["ratio"], m["ratio_lo"], m["ratio_hi"]) == pytest.approx((2.5, lo / 0.2, hi / 0.2))


def test_no_event_on_rare_pairs_gives_the_exact_zero_event_bound():
    rng = np.random.default_rng(0)
    prop = rng.uniform(1e-4, 0.2, 5000)
    p = np.full(5000, 0.02)  # 2 % predicted; 0 of ≈ 500 observed: bound ≈ 3.7 / 500 < 2 %
    y = (rng.random(5000) < 0.01).astype(float) * (prop > 0.05)  # no event among rare pairs
    m = low_propensity_calibration(p, y, prop)
    assert m["positives"] == 0 and m["observed_lo"] == 0
    assert m["observed_hi"] == pytest.approx(1 - 0.025 ** (1 / m["n"]))
    assert m["ratio_hi"] < 1  # the model over-predicts there, significantly
    assert m["ece_to_overall"] > 0


def test_low_propensity_calibration_rejects_bad_inputs():
    with pytest.raises(ValueError, match="aligned"):
        low_propensity_calibration(np.ones(3) / 2, np.ones(3), np.ones(2))
    with pytest.raises(ValueError, match="share"):
        low_propensity_calibration(np.ones(3) / 2, np.ones(3), np.ones(3), share=1.0)
    with pytest.raises(ValueError, match="no row"):
        low_propensity_calibration(np.ones(3) / 2, np.ones(3), np.full(3, np.nan))


def test_support_bounds_only_ever_widen():
    over = SupportCalibration(1e-3, {"ratio_lo": 0.0, "ratio_hi": 0.6})
    under = SupportCalibration(1e-3, {"ratio_lo": 1.5, "ratio_hi": 4.0})
    assert over.ratio_bounds == (0.0, 1.0) and under.ratio_bounds == (1.0, 4.0)


def test_widened_interval_by_hand_and_unchanged_without_rare_slots():
    predicted = np.array([0.1, 0.3])
    rare = np.array([0.0, 0.2])  # user 1's rate rests on rarely shown slots for 0.2
    counts = np.array([[2.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    # per replicate: covered C = [0.1, 0.1, 0.1], rare R = [0, 0.2, 0.1]
    lo, hi = widened_interval(predicted, rare, (0.5, 2.0), counts, alpha=0.5)
    assert lo == pytest.approx(np.quantile([0.1, 0.2, 0.15], 0.25))
    assert hi == pytest.approx(np.quantile([0.1, 0.5, 0.3], 0.75))
    plain = np.quantile(counts @ predicted / 2, [0.25, 0.75])
    assert widened_interval(predicted, np.zeros(2), (0.0, 9.0), counts, 0.5) == pytest.approx(
        tuple(plain)
    )
