"""The simulator: realistic funnel rates, exact logged propensities, reproducibility."""

import numpy as np
import polars as pl
import pytest

from features.contract import EventNames, validate
from features.sources.synthetic import SyntheticConfig, World, examination, parse_index, simulate


@pytest.fixture(scope="module")
def world_events():
    return simulate(
        SyntheticConfig(n_users=500, n_items=300, n_impressions=100_000, seed=3), progress=False
    )


def counts(events: pl.DataFrame) -> dict[str, int]:
    c = events.group_by("event").len()
    return dict(zip(c["event"].to_list(), c["len"].to_list(), strict=True))


def test_funnel_rates_match_the_configuration(world_events):
    events, _ = world_events
    n = counts(events)
    assert 99_500 <= n["impression"] <= 100_000  # a slate may come out short when draws repeat
    assert n["click"] / n["impression"] == pytest.approx(0.04, rel=0.1)
    assert n["cart"] / n["click"] == pytest.approx(0.25, rel=0.15)
    assert n["purchase"] / n["cart"] == pytest.approx(0.35, rel=0.2)
    assert n["love"] / n["click"] == pytest.approx(0.10, rel=0.2)


def test_events_honour_the_contract(world_events):
    events, _ = world_events
    _, quarantine, report = validate(events, EventNames())
    assert report.n_bad == 0, quarantine.head()


def test_feedback_follows_its_impression_in_time(world_events):
    events, _ = world_events
    imp = events.filter(pl.col("event") == "impression").select(
        "session_id", "item_id", pl.col("ts").alias("t0")
    )
    fb = events.filter(pl.col("event") != "impression").join(
        imp, on=["session_id", "item_id"], how="left"
    )
    assert fb["t0"].null_count() == 0
    assert (fb["ts"] >= fb["t0"]).all()


def test_logged_propensities_are_the_policy_probabilities():
    # With τ = 0 the policy is the same for every user: π ∝ pop^β.
    cfg = SyntheticConfig(
        n_users=50, n_items=6, n_impressions=60_000, slate_size=2, policy_relevance=0.0, seed=1
    )
    events, world = simulate(cfg, progress=False)
    imp = events.filter(pl.col("event") == "impression")
    pi = np.exp(world.log_popularity) / np.exp(world.log_popularity).sum()
    first = imp.filter(pl.col("position") == 0)
    items = parse_index(first["item_id"].to_list())
    np.testing.assert_allclose(first["propensity"].to_numpy(), pi[items], rtol=1e-6)
    freq = np.bincount(items, minlength=6) / len(items)
    se = np.sqrt(pi * (1 - pi) / len(items))
    assert np.all(np.abs(freq - pi) < 4 * se + 1e-9)
    # Second slot: π_i / (1 − π_first).
    pairs = (
        imp.sort("session_id", "position")
        .group_by("session_id", maintain_order=True)
        .agg(pl.col("item_id"), pl.col("propensity"))
    )
    two = pairs.filter(pl.col("item_id").list.len() == 2)
    a = parse_index(two["item_id"].list.get(0).to_list())
    b = parse_index(two["item_id"].list.get(1).to_list())
    np.testing.assert_allclose(
        two["propensity"].list.get(1).to_numpy(), pi[b] / (1 - pi[a]), rtol=1e-6
    )


def test_popularity_biased_logging_concentrates_exposure(world_events):
    events, world = world_events
    imp = events.filter(pl.col("event") == "impression")
    shown = np.bincount(parse_index(imp["item_id"].to_list()), minlength=world.n_items)
    top_decile = np.argsort(-world.log_popularity)[: world.n_items // 10]
    assert shown[top_decile].sum() / shown.sum() > 0.4


def test_ground_truth_explains_the_logged_click_rate(world_events):
    events, world = world_events
    imp = events.filter(pl.col("event") == "impression")
    users = parse_index(imp["user_id"].to_list())
    items = parse_index(imp["item_id"].to_list())
    p_click = world.true_probabilities(world.affinities(users, items))["click"]
    expected = (p_click * examination(imp["position"].to_numpy())).mean()
    assert expected == pytest.approx(0.04, rel=0.02)


def test_same_seed_same_log_and_world_roundtrip(tmp_path):
    cfg = SyntheticConfig(n_users=40, n_items=30, n_impressions=2_000, seed=5)
    a, wa = simulate(cfg, progress=False)
    b, _ = simulate(cfg, progress=False)
    assert a.equals(b)
    wa.save(tmp_path / "w.npz")
    wb = World.load(tmp_path / "w.npz")
    np.testing.assert_array_equal(wa.biases, wb.biases)
    np.testing.assert_array_equal(wa.item_factors, wb.item_factors)


def test_corrupted_rows_are_caught_by_the_validator():
    cfg = SyntheticConfig(
        n_users=40, n_items=30, n_impressions=5_000, bad_row_fraction=0.01, seed=2
    )
    events, _ = simulate(cfg, progress=False)
    _, quarantine, report = validate(events, EventNames())
    assert report.n_bad == quarantine.height == 52  # 1 % of the clean rows
    assert set(report.bad_by_reason) <= {
        "null_user_id",
        "unknown_event",
        "propensity_out_of_range",
        "bad_timestamp",
    }
