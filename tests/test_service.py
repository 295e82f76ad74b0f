"""The BentoML service over HTTP (in-process ASGI client) on a bundle from a real tiny pipeline run."""

import numpy as np
import polars as pl
import pytest
from starlette.testclient import TestClient

from serving.bundle import load_bundle


@pytest.fixture(scope="module")
def client(pipeline_dir, monkeypatch_module):
    monkeypatch_module.setenv("LADDER_BUNDLE", str(pipeline_dir / "data/serving"))
    from serving.service import Recommender

    with TestClient(Recommender.to_asgi()) as c:
        yield c


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@pytest.fixture(scope="module")
def bundle(pipeline_dir):
    return load_bundle(pipeline_dir / "data/serving")


def a_user_with_history(bundle) -> tuple[str, set[str]]:
    counts = np.diff(bundle.seen.indptr)
    user = int(np.argmax(counts))
    user_id = next(u for u, i in bundle.user_index.items() if i == user)
    return user_id, {str(bundle.item_ids[i]) for i in bundle.seen[user]}


def test_known_user_gets_k_distinct_unseen_items_with_probabilities(client, bundle):
    user_id, seen = a_user_with_history(bundle)
    assert len(seen) >= 3
    r = client.post("/recommend", json={"user_id": user_id, "k": 15})
    assert r.status_code == 200, r.text
    body = r.json()
    ids = [it["item_id"] for it in body["items"]]
    assert len(ids) == 15 and len(set(ids)) == 15
    assert not set(ids) & seen
    assert body["fallback"] is None and body["model_version"] == bundle.model_version
    scores = [it["score"] for it in body["items"]]
    assert scores == sorted(scores, reverse=True)
    for it in body["items"]:
        p = [it["probabilities"][lvl] for lvl in bundle.levels]
        assert all(0 < x < 1 for x in p) and p == sorted(p, reverse=True)


def test_exclude_seen_false_may_return_seen_items(client, bundle):
    user_id, seen = a_user_with_history(bundle)
    n_items = len(bundle.item_ids)
    r = client.post("/recommend", json={"user_id": user_id, "k": n_items, "exclude_seen": False})
    assert r.status_code == 200
    assert seen <= {it["item_id"] for it in r.json()["items"]}


def test_unknown_user_gets_the_popular_fallback(client, bundle, pipeline_dir):
    r = client.post("/recommend", json={"user_id": "nobody-like-this", "k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["fallback"] == "popular"
    train = pl.read_parquet(pipeline_dir / "data/features/train.parquet").filter(
        pl.col("level") >= 1
    )
    counts = np.bincount(train["item_idx"].to_numpy(), minlength=len(bundle.item_ids))
    expected = [str(bundle.item_ids[i]) for i in np.argsort(-counts, kind="stable")[:5]]
    assert [it["item_id"] for it in body["items"]] == expected


@pytest.mark.parametrize(
    "payload",
    [
        {},  # missing user_id
        {"user_id": ""},  # empty id
        {"user_id": "u1", "k": 0},  # k out of range
        {"user_id": "u1", "k": 100000},
        {"user_id": "u1", "k": "ten"},  # wrong type
        {"user_id": ["u1"]},
    ],
)
def test_malformed_requests_get_a_4xx_with_a_message(client, payload):
    r = client.post("/recommend", json=payload)
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    assert r.text


def test_non_json_body_is_a_4xx(client):
    r = client.post(
        "/recommend", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert 400 <= r.status_code < 500


def test_health_and_readiness(client):
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200


def test_love_weight_zero_keeps_the_relevance_order_and_p_love_is_reported(client, bundle):
    user_id, _ = a_user_with_history(bundle)
    plain = client.post("/recommend", json={"user_id": user_id, "k": 10}).json()
    blended = client.post(
        "/recommend",
        json={"user_id": user_id, "k": 10, "objective_weights": {"relevance": 1, "love": 0}},
    ).json()
    assert [i["item_id"] for i in blended["items"]] == [i["item_id"] for i in plain["items"]]
    assert all(0 < i["p_love"] < 1 for i in plain["items"])


def test_love_weight_reorders_towards_higher_p_love(client, bundle):
    user_id, _ = a_user_with_history(bundle)
    plain = client.post("/recommend", json={"user_id": user_id, "k": 10}).json()
    loved = client.post(
        "/recommend",
        json={"user_id": user_id, "k": 10, "objective_weights": {"relevance": 0, "love": 1}},
    )
    assert loved.status_code == 200, loved.text
    p_plain = np.mean([i["p_love"] for i in plain["items"]])
    p_loved = [i["p_love"] for i in loved.json()["items"]]
    assert np.mean(p_loved) >= p_plain
    assert p_loved == sorted(p_loved, reverse=True)  # love only: ordered by P[Love]


@pytest.mark.parametrize("weights", [{"love": -1}, {"relevance": "a lot"}, {"love": 1, "fun": 2}])
def test_bad_objective_weights_are_a_4xx(client, weights):
    r = client.post("/recommend", json={"user_id": "u1", "objective_weights": weights})
    assert 400 <= r.status_code < 500, r.text
