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
