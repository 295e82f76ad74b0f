"""The closed loop: ground-truth quality by hand, feedback drawn from the simulator and logged by the
service, and one real round — `bentoml serve`, simulated users, retraining on the logged traffic,
`/reload` — on the tiny pipeline of tests/conftest.py."""

import json
import math
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from starlette.testclient import TestClient

from experiments import closed_loop as loop
from features.feedback_log import day_of, log_files, read_records
from features.sources.synthetic import World, draw_funnel
from tests.asgi import AUTH, TOKEN, service_app

S1, S3 = 0.5, 0.75  # σ(0), σ(ln 3)
NOON = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)  # a fixed day, whatever the real clock says


class SteppingClock:
    """A fake clock: ``start``, then ``step`` later at each call (one clock for service and users)."""

    def __init__(self, start: datetime, step: timedelta = timedelta(milliseconds=1)) -> None:
        self.now, self.step = start, step

    def __call__(self) -> datetime:
        now, self.now = self.now, self.now + self.step
        return now


def tiny_world() -> World:
    """No latent factors, biases 0, qualities (0, ln 3, −ln 3): P(click) = σ(q), P(purchase) = σ(q)³."""
    zeros = np.zeros((4, 2, 1), np.float32)
    return World(
        zeros,
        np.zeros((4, 3, 1), np.float32),
        np.array([0.0, math.log(3), -math.log(3)]),
        np.zeros(3),
        np.zeros(4),
        affinity_scale=1.0,
        quality_weight=1.0,
    )


def test_ground_truth_quality_worked_example():
    # user 0 is shown items (2, 0), user 1 item 1 and an empty slot.
    q = loop.ground_truth_quality(tiny_world(), np.array([0, 1]), np.array([[2, 0], [1, -1]]), k=2)
    p_click = [1 - S3, S1, S3]  # items 2, 0, 1
    assert q["gt_p_click"] == pytest.approx(np.mean(p_click))
    assert q["gt_p_purchase"] == pytest.approx(np.mean(np.power(p_click, 3)))
    assert q["gt_p_love"] == pytest.approx(np.mean(np.square(p_click)))
    disc = 1 / np.log2(3)
    ideal = 0.75**3 + 0.5**3 * disc  # items 1 then 0, for both users
    user0 = (0.25**3 + 0.5**3 * disc) / ideal
    user1 = 0.75**3 / ideal  # the empty slot gains nothing
    assert q["gt_ndcg_at_2"] == pytest.approx((user0 + user1) / 2)


def test_slate_feedback_ties_each_drawn_event_to_the_slate():
    items = [{"item_id": "i4", "position": 0}, {"item_id": "i9", "position": 1}]
    drawn = {
        "click": np.array([True, True]),
        "cart": np.array([False, True]),
        "purchase": np.array([False, True]),
        "love": np.array([True, False]),
    }
    events = loop.slate_feedback("u1", "s7", items, drawn, "2026-01-01T00:00:00.000000+00:00")
    got = {(e["item_id"], e["event"], e["position"]) for e in events}
    assert got == {
        ("i4", "click", 0),
        ("i4", "love", 0),
        ("i9", "click", 1),
        ("i9", "cart", 1),
        ("i9", "purchase", 1),
    }
    assert all(e["slate_id"] == "s7" and e["user_id"] == "u1" for e in events)


def test_draw_funnel_rates_follow_the_true_probabilities():
    world = tiny_world()
    n = 200_000
    items = np.full(n, 1)  # P(click | examined) = 0.75
    drawn = draw_funnel(
        world, np.zeros(n, np.int64), items, np.full(n, 2), np.random.default_rng(0)
    )
    exam = 1 / np.log2(4)  # position 2
    assert drawn["click"].mean() == pytest.approx(exam * S3, abs=0.005)
    assert drawn["purchase"].mean() == pytest.approx(exam * S3**3, abs=0.005)
    assert not (drawn["cart"] & ~drawn["click"]).any()
    assert not (drawn["purchase"] & ~drawn["cart"]).any()


@pytest.fixture(scope="module")
def world(pipeline_dir) -> World:
    return World.load(pipeline_dir / "data/ingest/world.npz")


def _serve_in_process(pipeline_dir, log: Path, monkeypatch, clock: SteppingClock):
    """A TestClient of the in-process service logging to ``log``, timed by ``clock``."""
    from serving.service import Recommender

    monkeypatch.setenv("LADDER_BUNDLE", str(pipeline_dir / "data/serving"))
    monkeypatch.setenv("LADDER_FEEDBACK_LOG", str(log))
    monkeypatch.setenv("LADDER_API_TOKEN", TOKEN)
    monkeypatch.setattr(Recommender.inner, "clock", staticmethod(clock))
    return TestClient(service_app(), headers=AUTH)


def test_a_round_in_process_logs_every_impression_and_every_drawn_event(
    world, pipeline_dir, tmp_path, monkeypatch
):
    log, clock = tmp_path / "log", SteppingClock(NOON)
    users = np.arange(0, world.n_users, 5)
    with _serve_in_process(pipeline_dir, log, monkeypatch, clock) as client:
        stats = loop.serve_round(
            client, world, users, np.random.default_rng(1), exploration=0.5, clock=clock
        )
    assert [p.name for p in log_files(log)] == ["events-20260301.jsonl"]  # the clock's day
    records = list(read_records(log))
    by_event = pl.DataFrame(records)["event"].value_counts()
    counts = dict(zip(by_event["event"], by_event["count"], strict=True))
    assert stats.impressions == len(users) * 10 == counts["impression"]
    assert counts.get("click", 0) == stats.clicks > 0
    assert counts.get("purchase", 0) == stats.purchases
    assert counts.get("love", 0) == stats.loves
    assert 0 < stats.mean_propensity < 1  # sampled slates: step probabilities below 1
    # Every feedback event belongs to a logged impression of the same slate.
    shown = {(r["slate_id"], r["item_id"]) for r in records if r["event"] == "impression"}
    assert all((r["slate_id"], r["item_id"]) in shown for r in records)
    assert 0 < stats.gt_ndcg_at_10 <= 1 and stats.gt_p_purchase < stats.gt_p_click
    assert loop.markdown_table([stats]).count("\n") == 2


def test_a_round_across_midnight_logs_each_event_in_its_days_file(
    world, pipeline_dir, tmp_path, monkeypatch
):
    # 23:59:59 and 50 ms per call (a slate, then its feedback's ts, then the service's /feedback):
    # midnight falls after ~20 calls, i.e. within the first users of the round.
    log = tmp_path / "log"
    clock = SteppingClock(datetime(2026, 3, 1, 23, 59, 59, tzinfo=UTC), timedelta(milliseconds=50))
    users = np.arange(0, world.n_users, 5)
    with _serve_in_process(pipeline_dir, log, monkeypatch, clock) as client:
        stats = loop.serve_round(
            client, world, users, np.random.default_rng(1), exploration=0.5, clock=clock
        )
    assert clock.now > datetime(2026, 3, 2, 0, 0, 2, tzinfo=UTC)  # well past midnight
    files = log_files(log)
    assert [p.name for p in files] == ["events-20260301.jsonl", "events-20260302.jsonl"]
    for path in files:  # a slate is logged in the file of the day the service's clock said
        kept = read_records_of(path)
        days = {datetime.fromisoformat(r["ts"]).date() for r in kept if r["event"] == "impression"}
        assert days == {day_of(path)}
        assert all(datetime.fromisoformat(r["ts"]).date() <= day_of(path) for r in kept)
    records = list(read_records(log))  # both days, read as one log
    counts = pl.DataFrame(records)["event"].value_counts()
    counts = dict(zip(counts["event"], counts["count"], strict=True))
    assert stats.impressions == len(users) * 10 == counts["impression"]
    assert counts.get("click", 0) == stats.clicks > 0
    assert counts.get("purchase", 0) == stats.purchases
    shown = {(r["slate_id"], r["item_id"]) for r in records if r["event"] == "impression"}
    assert all((r["slate_id"], r["item_id"]) in shown for r in records)


def read_records_of(path: Path) -> list[dict]:
    """The records of one day file."""
    return [json.loads(line) for line in path.read_text().splitlines()]


def _retrain_in_process(directory: Path, feedback_log: Path) -> None:
    """The stages `dvc repro index` runs, in-process (fast), with ``source.feedback_log`` set."""
    from pipelines import features, index, ingest, train_gnolr, train_plove

    params = yaml.safe_load((directory / "params.yaml").read_text())
    params["source"]["feedback_log"] = str(feedback_log)
    params["features"]["split"]["method"] = "stratified_random"
    params["gnolr"]["max_epochs"] = 2
    params["plove"]["max_epochs"] = 1
    (directory / "params.yaml").write_text(yaml.safe_dump(params))
    old_cwd, old_uri = Path.cwd(), os.environ.get("MLFLOW_TRACKING_URI")
    os.chdir(directory)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{directory / 'mlflow.db'}"
    try:
        for stage in (ingest, features, train_gnolr):
            stage.main()
        train_plove.main([])
        index.main()
    finally:
        os.chdir(old_cwd)
        if old_uri is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old_uri


def test_one_round_against_a_real_server_then_retrain_and_reload(pipeline_dir, world, tmp_path):
    import httpx

    repo = Path(__file__).resolve().parents[1]
    work = tmp_path / "pipeline"
    shutil.copytree(pipeline_dir / "data", work / "data")
    shutil.copy(pipeline_dir / "params.yaml", work / "params.yaml")
    log = tmp_path / "log"
    start = datetime.now(UTC)
    rng = np.random.default_rng(0)
    with (
        loop.BentoServer(work / "data/serving", log, repo, log_dir=tmp_path) as server,
        httpx.Client(base_url=server.url, headers=server.auth_headers) as client,
    ):
        users = np.arange(world.n_users)
        first = loop.serve_round(client, world, users, rng, 0, exploration=0.3)
        _retrain_in_process(work, log)
        reloaded = client.post("/reload", json={}, timeout=120).json()
        assert reloaded["previous_model_version"] == first.model_version
        second = loop.serve_round(client, world, users[:20], rng, 1, exploration=0.3)
    assert second.model_version == reloaded["model_version"] != first.model_version
    ingested = json.loads((work / "data/metrics/ingest.json").read_text())
    n_logged = first.impressions + first.clicks + first.carts + first.purchases + first.loves
    assert ingested["feedback_log_events"] == n_logged
    train = pl.read_parquet(work / "data/features/train.parquet")
    logged = train.filter(pl.col("ts") >= start)
    # Stratified split: most of the served slates train the next model, their clicks included.
    assert 0.6 * first.impressions < logged.height < first.impressions
    assert (logged["level"] >= 1).sum() > 0.6 * first.clicks
