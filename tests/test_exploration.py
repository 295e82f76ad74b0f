"""Slate sampling from a softmax over scores: exact Plackett-Luce propensities, checked by hand."""

import itertools

import numpy as np
import pytest

from serving.exploration import sample_slate, slate_probability

# Scores log(1), log(2), log(3) at temperature 1: weights 1, 2, 3 (total 6). Every permutation's
# step probabilities, by hand: e.g. (2, 0, 1) = 3/6, then 1/(1+2), then 1.
WEIGHTS_123 = {
    (2, 1, 0): (3 / 6, 2 / 3, 1.0),
    (2, 0, 1): (3 / 6, 1 / 3, 1.0),
    (1, 2, 0): (2 / 6, 3 / 4, 1.0),
    (1, 0, 2): (2 / 6, 1 / 4, 1.0),
    (0, 2, 1): (1 / 6, 3 / 5, 1.0),
    (0, 1, 2): (1 / 6, 2 / 5, 1.0),
}
SCORES = np.log([1.0, 2.0, 3.0])


def test_temperature_zero_is_the_deterministic_top_k_with_propensity_one():
    order, prop = sample_slate(np.array([0.5, 2.0, 1.0, 2.0]), 3, 0.0)
    assert order.tolist() == [1, 3, 2]  # ties keep the candidate order
    assert prop.tolist() == [1.0, 1.0, 1.0]


def test_every_draw_carries_the_hand_computed_step_probabilities():
    rng = np.random.default_rng(0)
    for _ in range(200):
        order, prop = sample_slate(SCORES, 3, 1.0, rng)
        np.testing.assert_allclose(prop, WEIGHTS_123[tuple(order.tolist())], rtol=1e-12)


def test_partial_slates_carry_the_first_steps():
    rng = np.random.default_rng(1)
    for _ in range(100):
        order, prop = sample_slate(SCORES, 2, 1.0, rng)
        full = next(v for p, v in WEIGHTS_123.items() if p[:2] == tuple(order.tolist()))
        np.testing.assert_allclose(prop, full[:2], rtol=1e-12)


def test_slates_are_drawn_with_the_probability_their_propensities_claim():
    rng = np.random.default_rng(2)
    n = 30_000
    counts = dict.fromkeys(WEIGHTS_123, 0)
    for _ in range(n):
        order, _ = sample_slate(SCORES, 3, 1.0, rng)
        counts[tuple(order.tolist())] += 1
    for perm, steps in WEIGHTS_123.items():
        p = slate_probability(np.array(steps))
        assert abs(counts[perm] / n - p) < 4 * np.sqrt(p * (1 - p) / n), (perm, counts[perm])


def test_temperature_scales_the_scores():
    # scores 2·log(w) at temperature 2 are the same policy as log(w) at temperature 1
    rng = np.random.default_rng(3)
    for _ in range(50):
        order, prop = sample_slate(2 * SCORES, 3, 2.0, rng)
        np.testing.assert_allclose(prop, WEIGHTS_123[tuple(order.tolist())], rtol=1e-12)


def test_extreme_scores_stay_finite_and_inside_zero_one():
    scores = np.array([1e4, -1e4, 0.0, 5e3, 1e4 - 1e-3])
    for temperature in (1e-3, 1.0, 1e6):
        order, prop = sample_slate(scores, 5, temperature, np.random.default_rng(4))
        assert sorted(order.tolist()) == list(range(5))
        assert np.all(np.isfinite(prop)) and np.all(prop > 0) and np.all(prop <= 1)
        assert prop[-1] == pytest.approx(1.0)  # the last remaining item is placed for sure


def test_a_very_hot_policy_is_uniform():
    order, prop = sample_slate(np.arange(10.0), 10, 1e12, np.random.default_rng(5))
    np.testing.assert_allclose(prop, [1 / (10 - p) for p in range(10)], rtol=1e-9)


@pytest.mark.parametrize(
    ("scores", "k", "temperature"),
    [([1.0], 0, 1.0), ([1.0], 1, -1.0), ([1.0], 1, float("nan")), ([np.inf], 1, 1.0)],
)
def test_bad_arguments_raise(scores, k, temperature):
    with pytest.raises(ValueError):
        sample_slate(np.array(scores), k, temperature)


def test_k_larger_than_the_pool_returns_a_permutation():
    order, prop = sample_slate(np.zeros(4), 10, 1.0, np.random.default_rng(6))
    assert sorted(order.tolist()) == [0, 1, 2, 3]
    np.testing.assert_allclose(prop, [1 / 4, 1 / 3, 1 / 2, 1.0])
    assert len(list(itertools.permutations(range(3)))) == len(WEIGHTS_123)


@pytest.mark.parametrize("temperature", [1e-308, 5e-324, 1e-300, 1e-12])
def test_a_vanishing_temperature_is_the_top_k_with_propensity_one(temperature):
    """s/τ overflows for a tiny τ: the sampler must still give the limit, not NaN."""
    scores = np.array([3.0, -1.0, 7.0, 7.0 - 1e-9, 0.5, -40.0])
    order, prop = sample_slate(scores, 4, temperature, np.random.default_rng(8))
    assert order.tolist() == [2, 3, 0, 4]
    assert np.all(np.isfinite(prop)) and np.all((prop > 0) & (prop <= 1))
    np.testing.assert_allclose(prop, 1.0)
