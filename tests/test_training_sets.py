"""Ordinal levels, the temporal split and propensities of the features stage."""

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from features.contract import EventNames, validate
from features.levels import impression_units
from features.propensity import PropensityConfig, estimate_item_propensity
from features.split import SplitConfig
from features.training_sets import FeaturesConfig, build_training_sets

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def ev(user, item, event, minutes, session="s", propensity=None, position=None):
    return {
        "user_id": user,
        "item_id": item,
        "event": event,
        "ts": T0 + timedelta(minutes=minutes),
        "session_id": session,
        "position": position,
        "propensity": propensity,
    }


def units_of(rows):
    valid, _, report = validate(pl.DataFrame(rows), EventNames())
    assert report.n_bad == 0
    return (
        impression_units(valid.lazy(), EventNames())
        .collect()
        .sort("user_id", "item_id", "session_id")
    )


def test_level_is_the_deepest_feedback_with_cumulative_indicators():
    units = units_of(
        [
            ev("a", "x", "impression", 0, propensity=0.2, position=3),
            ev("a", "x", "click", 1),
            ev("a", "x", "cart", 2),
            ev("b", "x", "impression", 0),
            ev("b", "x", "purchase", 5),  # purchase without click or cart
            ev("c", "x", "impression", 0),
            ev("c", "x", "love", 1),
            ev("d", "y", "click", 7, session=None),  # feedback without a logged impression
        ]
    )
    by_user = {r["user_id"]: r for r in units.to_dicts()}
    assert by_user["a"]["level"] == 2 and by_user["a"]["propensity_logged"] == 0.2
    assert by_user["a"]["position"] == 3 and by_user["a"]["ts"] == T0
    assert by_user["b"]["level"] == 3  # counts as click, cart and purchase
    assert by_user["c"]["level"] == 0 and by_user["c"]["r_love"] == 1
    assert by_user["d"]["level"] == 1 and by_user["d"]["shown"] is False
    assert by_user["d"]["ts"] == T0 + timedelta(minutes=7)


def test_same_item_in_two_sessions_is_two_impressions():
    units = units_of(
        [
            ev("a", "x", "impression", 0, session="s1"),
            ev("a", "x", "impression", 60, session="s2"),
            ev("a", "x", "click", 61, session="s2"),
        ]
    )
    assert units["level"].to_list() == [0, 1]


def test_split_is_temporal_and_vocabularies_cover_every_id():
    rows = []
    for m in range(100):
        rows.append(ev(f"u{m % 7}", f"i{m % 13}", "impression", m, session=f"s{m}"))
        if m % 3 == 0:
            rows.append(ev(f"u{m % 7}", f"i{m % 13}", "click", m + 0.5, session=f"s{m}"))
    valid, _, _ = validate(pl.DataFrame(rows), EventNames())
    sets = build_training_sets(
        valid.lazy(),
        EventNames(),
        FeaturesConfig(split=SplitConfig(valid_fraction=0.2, test_fraction=0.1)),
    )
    tr, va, te = (sets.splits[s] for s in ("train", "valid", "test"))
    assert (tr.height, va.height, te.height) == (70, 20, 10)
    assert tr["ts"].max() < va["ts"].min() and va["ts"].max() < te["ts"].min()
    assert sets.meta["n_users"] == 7 and sets.meta["n_items"] == 13
    assert sets.meta["base_rates"]["click"] == pytest.approx((tr["level"] >= 1).mean())
    assert sets.items["n_train_positives"].sum() == (tr["level"] >= 1).sum()
    # Rows without a logged propensity get the estimated one of their item.
    theta = dict(zip(sets.items["item_idx"], sets.items["propensity"], strict=True))
    assert all(p == theta[i] for i, p in zip(tr["item_idx"], tr["propensity"], strict=True))


def test_estimated_propensity_on_the_full_item_index_with_a_floor():
    theta = estimate_item_propensity(
        np.array([100, 25, 0, 4]), PropensityConfig(eta=0.5, floor=0.01)
    )
    np.testing.assert_allclose(theta, [1.0, 0.5, 0.01, 0.2])
    assert (
        estimate_item_propensity(np.zeros(3), PropensityConfig(floor=0.05)).tolist() == [0.05] * 3
    )
    with pytest.raises(ValueError):
        PropensityConfig(eta=-1)
    with pytest.raises(ValueError):
        SplitConfig(valid_fraction=0.5, test_fraction=0.5)


def test_stratified_split_splits_each_users_positives_and_negatives():
    rows = []
    for u in range(4):
        for i in range(40):
            rows.append(ev(f"u{u}", f"i{i}", "impression", i, session=f"s{u}-{i}"))
            if i % 2 == 0:
                rows.append(ev(f"u{u}", f"i{i}", "click", i + 0.5, session=f"s{u}-{i}"))
    valid, _, _ = validate(pl.DataFrame(rows), EventNames())
    split = SplitConfig(method="stratified_random", valid_fraction=0.05, test_fraction=0.25, seed=3)
    sets = build_training_sets(valid.lazy(), EventNames(), FeaturesConfig(split=split))
    test = sets.splits["test"]
    per_user = test.group_by("user_idx").agg((pl.col("level") >= 1).sum().alias("pos"), pl.len())
    assert per_user["pos"].to_list() == [5] * 4  # round(20 × 0.25) of each user's 20 positives
    assert per_user["len"].to_list() == [10] * 4
    assert sets.splits["valid"].height == 4 * 2  # round(20 × 0.05) = 1 positive + 1 negative
    again = build_training_sets(valid.lazy(), EventNames(), FeaturesConfig(split=split))
    assert again.splits["test"].equals(test)


def test_logged_propensity_is_the_earliest_impressions_whatever_the_row_order():
    # One unit (a, x, s) logged three times with propensities; the earliest impression (minute 1)
    # has two copies at different positions, so the tie on time goes to the smaller propensity.
    # The click at minute 0 carries a propensity but is no impression: it does not count.
    rows = [
        ev("a", "x", "impression", 3, propensity=0.05, position=1),
        ev("a", "x", "impression", 1, propensity=0.4, position=2),
        ev("a", "x", "impression", 1, propensity=0.3, position=5),
        ev("a", "x", "click", 0, propensity=0.01),
        ev("b", "y", "impression", 2),  # no propensity logged: null
        ev("c", "y", "impression", 2, propensity=1.0),
    ]
    expected = {"a": 0.3, "b": None, "c": 1.0}
    rng = np.random.default_rng(0)
    for _ in range(20):
        shuffled = [rows[i] for i in rng.permutation(len(rows))]
        units = units_of(shuffled)
        assert dict(zip(units["user_id"], units["propensity_logged"], strict=True)) == expected
