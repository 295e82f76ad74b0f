"""P[Love]: labels and their window, down-sampling correction, the model and the ranking blend."""

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from features.contract import EventNames, validate
from features.love_labels import (
    LoveLabelConfig,
    correct_downsampled,
    correct_downsampled_logit,
    downsample_negatives,
    love_labels,
    split_by_time,
)
from features.split import SplitConfig
from models.blend import BlendWeights, blended_recommend, rerank
from models.plove.config import PLoveConfig
from models.plove.fit import LoveRows, bucket_codes, fit_plove
from models.plove.network import PLoveScorer
from serving.retrieval import Retriever

T0 = datetime(2025, 1, 1, tzinfo=UTC)
WINDOW = 600.0  # seconds


def ev(user, event, seconds, session="s", item="x", position=0):
    return {
        "user_id": user,
        "item_id": item,
        "event": event,
        "ts": T0 + timedelta(seconds=seconds),
        "session_id": session,
        "position": position if event == "impression" else None,
        "propensity": 0.5 if event == "impression" else None,
    }


def labels_of(rows):
    valid, _, report = validate(pl.DataFrame(rows), EventNames())
    assert report.n_bad == 0
    return {r["user_id"]: r for r in love_labels(valid.lazy(), WINDOW).collect().to_dicts()}


def test_label_window_includes_and_excludes_the_right_reactions():
    labels = labels_of(
        [
            ev("edge", "impression", 0),
            ev("edge", "click", 10),
            ev("edge", "love", WINDOW),  # exactly at the end of the window: counts
            ev("late", "impression", 0),
            ev("late", "love", WINDOW + 1),  # one second too late
            ev("before", "love", 0),  # before its impression
            ev("before", "impression", 5),
            ev("other_session", "impression", 0, session="s1"),
            ev("other_session", "love", 20, session="s2"),  # reacts to a different impression
            ev("no_session", "impression", 0, session=None),
            ev("no_session", "love", 30, session=None),
            ev("silent", "impression", 0),  # no feedback at all: a negative
            ev("twice", "impression", 0, position=4),
            ev("twice", "impression", 100, position=1),  # the same key shown again
            ev("twice", "love", 650),  # within the window of the second showing only
            ev("unshown", "love", 50),  # feedback with no impression: nothing to react to
            ev("censored", "impression", 3000),  # window runs past the log end
            ev("end", "click", 3000 + WINDOW - 1),  # the last event: log end
        ]
    )
    assert labels["edge"]["love"] == 1 and labels["edge"]["click"] == 1
    assert labels["late"]["love"] == 0
    assert labels["before"]["love"] == 0
    assert labels["other_session"]["love"] == 0
    assert labels["no_session"]["love"] == 1
    assert labels["silent"]["love"] == 0 and labels["silent"]["click"] == 0
    # One row per key, timed at (and windowed from) its first showing.
    assert labels["twice"]["ts"] == T0 and labels["twice"]["position"] == 4
    assert labels["twice"]["love"] == 0
    assert "unshown" not in labels and "censored" not in labels and "end" not in labels


def test_split_is_by_time_and_the_config_insists_on_it():
    rows = [ev(f"u{i}", "impression", i) for i in range(50)] + [ev("z", "click", 10_000)]
    valid, _, _ = validate(pl.DataFrame(rows), EventNames())
    splits = split_by_time(love_labels(valid.lazy(), WINDOW).collect(), SplitConfig())
    assert [f.height for f in splits.values()] == [40, 5, 5]
    assert splits["train"]["ts"].max() < splits["valid"]["ts"].min()
    assert splits["valid"]["ts"].max() < splits["test"]["ts"].min()
    with pytest.raises(ValueError, match="temporal"):
        LoveLabelConfig(split={"method": "stratified_random"})
    with pytest.raises(ValueError):
        PLoveConfig(unknown_key=1)


def test_downsampling_correction_recovers_the_true_rate():
    rng = np.random.default_rng(0)
    true = np.array([0.002, 0.01, 0.05, 0.2])
    group = np.repeat(np.arange(true.size), 250_000)
    frame = pl.DataFrame(
        {"group": group, "love": (rng.random(group.size) < true[group]).astype(int)}
    )
    rate = 0.05
    sampled = downsample_negatives(frame, rate, seed=1)
    assert sampled["love"].sum() == frame["love"].sum()  # every positive is kept
    assert sampled.height < 0.2 * frame.height
    by_group = sampled.group_by("group").agg(pl.col("love").mean()).sort("group")
    p_sampled = by_group["love"].to_numpy()
    assert np.all(p_sampled > 2 * true)  # the sample is strongly biased …
    corrected = correct_downsampled(p_sampled, rate)
    assert corrected == pytest.approx(true, rel=0.1)  # … and the correction undoes it
    logit = np.log(p_sampled / (1 - p_sampled))
    via_logit = 1 / (1 + np.exp(-correct_downsampled_logit(logit, rate)))
    assert via_logit == pytest.approx(corrected)
    assert downsample_negatives(frame, 1.0) is frame
    with pytest.raises(ValueError, match="rate"):
        correct_downsampled(p_sampled, 0.0)


def _relevance_with_ties(rng, shape):
    return np.round(rng.normal(size=shape), 1)  # rounding makes ties


def test_blend_with_love_weight_zero_equals_the_relevance_ranking():
    rng = np.random.default_rng(0)
    relevance = _relevance_with_ties(rng, (20, 50))
    candidates = np.tile(np.arange(50), (20, 1))
    love = rng.random((20, 50))
    items, _ = rerank(candidates, relevance, love, BlendWeights(relevance=2.0, love=0.0), k=10)
    expected = np.argsort(-relevance, axis=1, kind="stable")[:, :10]
    assert np.array_equal(items, expected)

    # Through retrieval: the blend re-ranking GNOLR's candidates returns exactly the retriever's
    # top-k, for any P[Love] model.
    item_vecs = rng.normal(size=(300, 8)).astype(np.float32)
    queries = rng.normal(size=(30, 8)).astype(np.float32)
    retriever = Retriever(item_vecs)
    users = np.arange(30)
    exclude = [rng.choice(300, 5, replace=False) for _ in users]
    direct, _ = retriever.search(queries, 10, exclude=exclude)

    class RandomLove:
        def predict(self, users, items, positions=0):
            return rng.random(len(items))

    blended, _ = blended_recommend(
        retriever, queries, 1.7, RandomLove(), users, 10, BlendWeights(1.0, 0.0), 100, exclude
    )
    assert np.array_equal(blended, direct)


def test_blend_weights_apply_per_request_and_reject_bad_values():
    relevance = np.array([[3.0, 2.0, 1.0], [3.0, 2.0, 1.0]])
    love = np.array([[0.01, 0.02, 0.5], [0.01, 0.02, 0.5]])
    candidates = np.array([[7, 8, 9], [7, 8, 9]])
    weights = [BlendWeights(1.0, 0.0), BlendWeights(0.0, 1.0)]
    items, scores = rerank(candidates, relevance, love, weights, k=3)
    assert items[0].tolist() == [7, 8, 9] and items[1].tolist() == [9, 8, 7]
    assert scores[1, 0] == pytest.approx(np.log(0.5 / 0.5))
    padded = np.array([[7, -1, 9]])
    items, _ = rerank(padded, relevance[:1], love[:1], BlendWeights(1.0, 1.0), k=3)
    assert items.tolist() == [[9, 7, -1]]
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="love"):
            BlendWeights(1.0, bad)
    with pytest.raises(ValueError, match="needs P\\[Love\\]"):
        rerank(candidates, relevance, None, BlendWeights(1.0, 0.5), k=2)


def test_bucket_codes_give_zero_to_unseen_and_grow_with_counts():
    codes, edges = bucket_codes(np.array([0, 1, 5, 50, 500, 5000]), 3)
    assert codes[0] == 0 and np.all(np.diff(codes[1:]) >= 0) and codes[-1] == edges.size + 1


def test_fit_plove_learns_and_the_scorer_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    n_users, n_items, n = 40, 30, 30_000
    taste = rng.normal(size=(n_users, 2))
    kind = rng.normal(size=(n_items, 2))
    users, items = rng.integers(0, n_users, n), rng.integers(0, n_items, n)
    positions = rng.integers(0, 5, n)
    logit_click = -2.5 + 1.5 * (taste[users] * kind[items]).sum(1) - 0.3 * positions
    clicks = rng.random(n) < 1 / (1 + np.exp(-logit_click))
    loves = clicks & (rng.random(n) < 0.3)
    rows = LoveRows(users, items, positions, clicks.astype(int), loves.astype(int))
    cut = 25_000
    part = [
        LoveRows(*(a[s] for a in (users, items, positions, clicks, loves)))
        for s in (slice(0, cut), slice(cut, n))
    ]
    cfg = PLoveConfig(dim=4, max_epochs=3, batch_size=2048, lr=0.05, l2=0.0, max_position=5)
    codes = np.ones(n_users, np.int64), np.ones(n_items, np.int64)
    fit = fit_plove(part[0], part[1], n_users, n_items, *codes, cfg, accelerator="cpu")
    from evaluation.metrics import auc

    p = fit.scorer.predict(part[1].users, part[1].items, part[1].positions)
    # Measured: 0.81 for the model, 0.56 for a score that knows only the position.
    position_only = auc(-part[1].positions.astype(float), part[1].loves)
    assert auc(p, part[1].loves) > 0.75 and auc(p, part[1].loves) > position_only + 0.15
    fit.scorer.save(tmp_path)
    again = PLoveScorer.load(tmp_path)
    assert np.allclose(
        again.predict(rows.users[:50], rows.items[:50], 2),
        fit.scorer.predict(rows.users[:50], rows.items[:50], 2),
    )
    matrix = again.predict_matrix(np.array([0, 1]), position=2)
    assert matrix.shape == (2, n_items)
    assert np.allclose(matrix[1, :5], again.predict(np.ones(5, int), np.arange(5), 2))
    # The down-sampling correction is a shift of the raw logit by log w.
    again.negative_rate = 0.1
    shift = again.raw_logit(rows.users[:5], rows.items[:5]) - fit.scorer.raw_logit(
        rows.users[:5], rows.items[:5]
    )
    assert shift == pytest.approx(np.full(5, np.log(0.1)))
