"""The BentoML service over HTTP (in-process ASGI client) on a bundle from a real tiny pipeline run.

Also: the plain functions behind it (recommend, similar_items, score_pairs), the filters through an
ANN index, reload, model resolution through a real MLflow registry, and the ingest of the log.
"""

import dataclasses
import json
import math
import os
import shutil
import threading
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from starlette.testclient import TestClient

from features.feedback_log import read_records
from serving.bundle import bundle_dir, load_bundle
from tests.asgi import AUTH, TOKEN, service_app


def now_iso(**delta) -> str:
    """The server's clock (± ``delta``) as ISO-8601: posted events must lie near it."""
    return (datetime.now(UTC) + timedelta(**delta)).isoformat()


@pytest.fixture(scope="module")
def feedback_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("feedback")


@pytest.fixture(scope="module")
def served_dir(pipeline_dir, tmp_path_factory) -> Path:
    """A copy of the pipeline's bundle that the reload tests change (and restore)."""
    directory = tmp_path_factory.mktemp("served") / "bundle"
    shutil.copytree(bundle_dir(pipeline_dir / "data/serving"), directory)  # a plain bundle
    return directory


@pytest.fixture(scope="module")
def client(served_dir, monkeypatch_module, feedback_dir):
    monkeypatch_module.setenv("LADDER_BUNDLE", str(served_dir))
    monkeypatch_module.setenv("LADDER_FEEDBACK_LOG", str(feedback_dir))
    monkeypatch_module.delenv("LADDER_EXPLORATION", raising=False)
    monkeypatch_module.setenv("LADDER_API_TOKEN", TOKEN)
    monkeypatch_module.setenv("LADDER_POLL_SECONDS", "0")  # the reload tests swap by hand
    with TestClient(service_app(), headers=AUTH) as c:
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


# --- ids the bundle does not know, sizes, types --------------------------------------------------


def error_text(r) -> str:
    return json.dumps(r.json())


@pytest.mark.parametrize(
    ("path", "payload", "named"),
    [
        ("/recommend", {"recent_item_ids": ["no-such-item"]}, "no-such-item"),
        ("/recommend", {"user_id": "u1", "allow_items": ["ghost-1", "ghost-2"]}, "ghost-2"),
        ("/recommend", {"user_id": "u1", "deny_items": ["ghost-3"]}, "ghost-3"),
        ("/similar_items", {"item_id": "ghost-4"}, "ghost-4"),
        ("/score", {"pairs": [{"user_id": "ghost-user", "item_id": "x"}]}, "ghost-user"),
    ],
)
def test_unknown_ids_are_a_400_naming_them(client, path, payload, named):
    r = client.post(path, json=payload)
    assert r.status_code == 400, r.text
    assert named in error_text(r)


def test_score_names_an_unknown_item_of_a_known_user(client, bundle):
    user_id, _ = a_user_with_history(bundle)
    r = client.post("/score", json={"pairs": [{"user_id": user_id, "item_id": "ghost-5"}]})
    assert r.status_code == 400 and "ghost-5" in error_text(r)


def test_neither_user_nor_recent_items_is_a_400(client):
    r = client.post("/recommend", json={"k": 5})
    assert r.status_code == 400 and "user_id" in error_text(r)


@pytest.mark.parametrize(
    ("path", "payload"),
    [
        ("/recommend", {"user_id": "u1", "allow_items": ["i"] * 10_001}),
        ("/recommend", {"user_id": "u1", "deny_items": ["i"] * 10_001}),
        ("/recommend", {"recent_item_ids": ["i"] * 1001}),
        ("/score", {"pairs": [{"user_id": "u", "item_id": "i"}] * 1001}),
        ("/score", {"pairs": []}),
        ("/feedback", {"events": []}),
        ("/similar_items", {"item_id": "i0", "k": 0}),
        ("/similar_items", {}),
        ("/score", {"pairs": [{"user_id": "u"}]}),
        ("/recommend", {"user_id": "u1", "exploration": -1}),
        ("/recommend", {"user_id": "u1", "objective_weights": {"love": 2e6}}),
        ("/recommend", {"user_id": "u1", "allow_items": "i0"}),
    ],
)
def test_oversized_and_malformed_bodies_are_a_400(client, path, payload):
    r = client.post(path, json=payload)
    assert r.status_code == 400, (r.status_code, r.text[:300])


@pytest.mark.parametrize(
    "body",
    [
        b'{"user_id": "u1", "objective_weights": {"love": 1e400}}',
        b'{"user_id": "u1", "exploration": NaN}',
        b'{"events": [{"user_id": "u", "item_id": "i", "event": "click", "ts": 1e400}]}',
    ],
)
def test_non_finite_numbers_are_a_400(client, body):
    path = "/feedback" if b"events" in body else "/recommend"
    r = client.post(path, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text


def test_an_oversized_feedback_batch_is_a_400_and_nothing_is_written(client, feedback_dir):
    event = {"user_id": "big", "item_id": "i", "event": "click", "ts": now_iso()}
    r = client.post("/feedback", json={"events": [event] * 10_001})
    assert r.status_code == 400
    assert not any(rec["user_id"] == "big" for rec in read_records(feedback_dir))


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"event": "clack"}, "clack"),
        ({"ts": "yesterday"}, "ts"),
        ({"ts": "1970-01-01T00:00:00Z"}, "ts"),
        ({"propensity": 0}, "propensity"),
        ({"propensity": 1.5}, "propensity"),
        ({"position": -1}, "position"),
        ({"user_id": "  "}, "user_id"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_feedback_breaking_the_contract_is_a_400_naming_the_field(client, change, named):
    event = {"user_id": "u", "item_id": "i", "event": "click", "ts": now_iso()}
    r = client.post("/feedback", json={"events": [event, {**event, **change}]})
    assert r.status_code == 400, r.text
    assert named in error_text(r)


# --- filters, cold users, similar items, scores --------------------------------------------------


def test_allow_and_deny_lists_filter_the_slate(client, bundle):
    user_id, seen = a_user_with_history(bundle)
    unseen = [str(i) for i in bundle.item_ids if str(i) not in seen]
    allow = unseen[:30]
    r = client.post("/recommend", json={"user_id": user_id, "k": 50, "allow_items": allow})
    assert r.status_code == 200, r.text
    got = [it["item_id"] for it in r.json()["items"]]
    assert set(got) == set(allow)  # every allowed unseen item, nothing else
    first = client.post("/recommend", json={"user_id": user_id, "k": 10}).json()["items"]
    deny = [it["item_id"] for it in first[:3]]
    body = client.post("/recommend", json={"user_id": user_id, "k": 10, "deny_items": deny}).json()
    ids = [it["item_id"] for it in body["items"]]
    assert not set(ids) & set(deny)
    assert ids[:7] == [it["item_id"] for it in first[3:]]  # the rest keep their order


def test_filters_apply_to_the_popular_fallback(client, bundle):
    popular = [str(bundle.item_ids[i]) for i in bundle.popular[:6]]
    body = client.post(
        "/recommend",
        json={"user_id": "new-user", "k": 3, "deny_items": popular[:2], "allow_items": popular[1:]},
    ).json()
    assert body["fallback"] == "popular"
    assert [it["item_id"] for it in body["items"]] == popular[2:5]
    assert [it["score"] for it in body["items"]] == [0.0, -1.0, -2.0]


def test_a_cold_user_is_served_from_recent_items(client, bundle):
    emb = bundle.embeddings
    recent = [str(bundle.item_ids[i]) for i in (3, 7)]
    r = client.post("/recommend", json={"recent_item_ids": recent, "k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["fallback"] == "recent_items" and body["user_id"] == f"anon-{body['slate_id']}"
    assert not {it["item_id"] for it in body["items"]} & set(recent)
    # by hand: ū^h = normalised mean of the two items' head-h sub-embeddings; nested
    # l_T = Σ_h γ_h·cos_h − a_T + b_i^T (per-head scales; γ_T·Σ_h cos_h − a_T when shared)
    mean = emb.items[[3, 7]].astype(np.float64).mean(axis=0)
    u = mean / np.linalg.norm(mean, axis=1, keepdims=True)
    cos = np.einsum("hd,nhd->nh", u, emb.items.astype(np.float64))
    w = emb.gamma if emb.scale == "per_head" else np.full(cos.shape[1], emb.gamma[-1])
    logit_t = cos @ w - emb.thresholds[-1]
    if emb.item_bias is not None:
        logit_t += emb.item_bias[:, -1]
    s = logit_t.copy()
    s[[3, 7]] = -np.inf
    expected = np.argsort(-s, kind="stable")[:5]
    assert [it["item_id"] for it in body["items"]] == [str(bundle.item_ids[i]) for i in expected]
    assert body["items"][0]["score"] == pytest.approx(logit_t[expected[0]], rel=1e-5)
    assert body["items"][0]["p_love"] is None


def test_a_known_user_with_recent_items_keeps_the_trained_vector(client, bundle):
    user_id, _ = a_user_with_history(bundle)
    plain = client.post("/recommend", json={"user_id": user_id, "k": 6}).json()["items"]
    recent = [plain[0]["item_id"]]
    body = client.post(
        "/recommend", json={"user_id": user_id, "k": 5, "recent_item_ids": recent}
    ).json()
    assert body["fallback"] is None
    assert [it["item_id"] for it in body["items"]] == [it["item_id"] for it in plain[1:]]


def test_similar_items_are_the_largest_inner_products(client, bundle):
    vectors = bundle.retriever.item_vectors
    item = 11
    r = client.post("/similar_items", json={"item_id": str(bundle.item_ids[item]), "k": 4})
    assert r.status_code == 200, r.text
    body = r.json()
    dots = vectors.astype(np.float64) @ vectors[item].astype(np.float64)
    dots[item] = -np.inf
    expected = np.argsort(-dots, kind="stable")[:4]
    assert [it["item_id"] for it in body["items"]] == [str(bundle.item_ids[i]) for i in expected]
    np.testing.assert_allclose([it["score"] for it in body["items"]], dots[expected], rtol=1e-5)
    assert body["model_version"] == bundle.model_version


def test_score_returns_the_models_probabilities(client, bundle):
    users = list(bundle.user_index)[:3]
    items = [str(i) for i in bundle.item_ids[:3]]
    r = client.post(
        "/score",
        json={"pairs": [{"user_id": u, "item_id": i} for u, i in zip(users, items, strict=True)]},
    )
    assert r.status_code == 200, r.text
    expected = bundle.embeddings.probabilities(
        np.array([bundle.user_index[u] for u in users]), np.arange(3)
    )
    for n, row in enumerate(r.json()["scores"]):
        assert [row["probabilities"][lvl] for lvl in bundle.levels] == pytest.approx(expected[n])
        assert 0 < row["p_love"] < 1


def test_filtered_results_through_hnsw_and_ivf_equal_exact_search(bundle):
    from serving.index import IndexConfig, build_index
    from serving.recommend import recommend
    from serving.retrieval import Retriever

    vectors = bundle.retriever.item_vectors
    users = list(bundle.user_index)[:25]
    deny = [str(i) for i in bundle.item_ids[bundle.popular[:5]]]
    exact = dataclasses.replace(bundle, retriever=Retriever(vectors))
    for kind in ("hnsw", "ivf"):
        # the served efSearch (params' 256): at 64 HNSW is approximate (recall@10 0.999 on the
        # default shop's 2,000 items) and one miss in 25 slates changes the slate, not the filters
        cfg = IndexConfig(kind=kind, ivf_nlist=2, ivf_nprobe=2)
        index, _ = build_index(vectors, cfg)
        ann = dataclasses.replace(bundle, retriever=Retriever(vectors, index))
        for user in users:
            a = recommend(ann, user, 10, True, deny_items=deny)
            b = recommend(exact, user, 10, True, deny_items=deny)
            assert [r.item_id for r in a.items] == [r.item_id for r in b.items], (kind, user)
            assert not {r.item_id for r in a.items} & set(deny)


# --- exploration and the log of what is shown ----------------------------------------------------


def slate_records(feedback_dir, slate_id):
    return [r for r in read_records(feedback_dir) if r.get("slate_id") == slate_id]


def test_every_served_slate_is_logged_as_impressions(client, bundle, feedback_dir):
    user_id, _ = a_user_with_history(bundle)
    body = client.post("/recommend", json={"user_id": user_id, "k": 7}).json()
    logged = slate_records(feedback_dir, body["slate_id"])
    assert [(r["item_id"], r["position"], r["propensity"]) for r in logged] == [
        (it["item_id"], n, 1.0) for n, it in enumerate(body["items"])
    ]
    assert all(r["event"] == "impression" and r["user_id"] == user_id for r in logged)
    assert all(r["model_version"] == bundle.model_version for r in logged)


def test_exploration_samples_with_logged_plackett_luce_propensities(client, bundle, feedback_dir):
    user_id, _ = a_user_with_history(bundle)
    req = {"user_id": user_id, "k": 5, "exploration": 2.0, "seed": 7}
    body = client.post("/recommend", json=req).json()
    again = client.post("/recommend", json=req).json()
    assert [i["item_id"] for i in body["items"]] == [i["item_id"] for i in again["items"]]
    # the pool: the user's top 100 unseen items by l_T; propensity = step softmax over the rest
    pool = client.post("/recommend", json={"user_id": user_id, "k": 100}).json()["items"]
    logits = {it["item_id"]: it["score"] / 2.0 for it in pool}
    remaining = dict(logits)
    for it in body["items"]:
        denom = sum(np.exp(v) for v in remaining.values())
        assert it["propensity"] == pytest.approx(np.exp(remaining.pop(it["item_id"])) / denom)
    logged = slate_records(feedback_dir, body["slate_id"])
    assert [r["propensity"] for r in logged] == [it["propensity"] for it in body["items"]]
    assert all(0 < it["propensity"] < 1 for it in body["items"])


def test_posted_feedback_is_in_the_log(client, feedback_dir):
    when = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    slate_id = uuid.uuid4().hex
    events = [
        {
            "user_id": "u-fb",
            "item_id": "i1",
            "event": "click",
            "ts": int(when.timestamp()),
            "position": 2,
            "propensity": 0.25,
            "slate_id": slate_id,
        },
        {
            "user_id": "u-fb",
            "item_id": "i1",
            "event": "love",
            "ts": when.astimezone(timezone(timedelta(hours=1))).isoformat(),
            "slate_id": slate_id,
        },
    ]
    r = client.post("/feedback", json={"events": events})
    assert r.status_code == 200 and r.json()["accepted"] == 2
    logged = slate_records(feedback_dir, slate_id)
    assert [(x["event"], x["ts"]) for x in logged] == [
        ("click", when.isoformat(timespec="microseconds")),
        ("love", when.isoformat(timespec="microseconds")),
    ]
    assert logged[0]["position"] == 2 and logged[0]["propensity"] == 0.25


def test_served_and_posted_events_come_back_through_ingest(client, bundle, feedback_dir, tmp_path):
    from features.feedback_log import FeedbackLog
    from features.sources.feedback import load_feedback
    from pipelines import ingest
    from tests.conftest import write_params

    user_id, _ = a_user_with_history(bundle)
    body = client.post("/recommend", json={"user_id": user_id, "k": 4, "exploration": 1.0}).json()
    shown = body["items"][1]
    click = {
        "user_id": user_id,
        "item_id": shown["item_id"],
        "event": "click",
        "ts": now_iso(),
        "slate_id": body["slate_id"],
    }
    assert client.post("/feedback", json={"events": [click]}).status_code == 200
    log_dir = tmp_path / "log"
    shutil.copytree(feedback_dir, log_dir)
    FeedbackLog(log_dir).append([{**click, "event": "click", "propensity": 2.0}])  # breaks contract
    n_logged = load_feedback(log_dir).height
    write_params(
        tmp_path,
        {
            "source": {
                "feedback_log": str(log_dir),
                "synthetic": {
                    "n_users": 50,
                    "n_items": 40,
                    "n_impressions": 3000,
                    "bad_row_fraction": 0.0,
                },
            }
        },
    )
    old = Path.cwd()
    os.chdir(tmp_path)
    try:
        ingest.main()
    finally:
        os.chdir(old)
    events = pl.read_parquet(tmp_path / "data/ingest/events.parquet")
    slate = events.filter(pl.col("session_id") == body["slate_id"]).sort("event", "position")
    imps = slate.filter(pl.col("event") == "impression").sort("position")
    assert imps["item_id"].to_list() == [it["item_id"] for it in body["items"]]
    assert imps["propensity"].to_list() == pytest.approx([it["propensity"] for it in body["items"]])
    clicks = slate.filter(pl.col("event") == "click")
    assert clicks["item_id"].to_list() == [shown["item_id"]]
    quarantine = pl.read_parquet(tmp_path / "data/ingest/quarantine.parquet")
    assert quarantine.filter(pl.col("session_id") == body["slate_id"])["reason"].to_list() == [
        "propensity_out_of_range"
    ]
    metrics = json.loads((tmp_path / "data/metrics/ingest.json").read_text())
    assert metrics["feedback_log_events"] == n_logged


# --- reload and model resolution -----------------------------------------------------------------


def set_version(directory: Path, version: str) -> None:
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["model_version"] = version
    (directory / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture
def reloadable(client, served_dir, bundle):
    """The module's service, its bundle directory restored and reloaded after the test."""
    manifest = (served_dir / "manifest.json").read_text()
    yield client, served_dir
    (served_dir / "manifest.json").write_text(manifest)
    gone = served_dir / "index.faiss.gone"
    if gone.exists():
        gone.rename(served_dir / "index.faiss")
    assert client.post("/reload", json={}).json()["model_version"] == bundle.model_version


def test_reload_swaps_in_a_new_bundle_and_a_bad_one_keeps_the_old(reloadable, bundle):
    c, directory = reloadable
    user_id, _ = a_user_with_history(bundle)
    assert c.post("/recommend", json={"user_id": user_id}).json()["model_version"] == (
        bundle.model_version
    )
    set_version(directory, "v-new")
    r = c.post("/reload", json={})
    assert r.status_code == 200, r.text
    assert r.json()["model_version"] == "v-new"
    assert r.json()["previous_model_version"] == bundle.model_version
    assert c.post("/recommend", json={"user_id": user_id}).json()["model_version"] == "v-new"

    (directory / "index.faiss").rename(directory / "index.faiss.gone")
    r = c.post("/reload", json={})
    assert r.status_code == 409 and "index.faiss" in error_text(r) and "v-new" in error_text(r)
    ok = c.post("/recommend", json={"user_id": user_id})
    assert ok.status_code == 200 and ok.json()["model_version"] == "v-new"
    (directory / "index.faiss.gone").rename(directory / "index.faiss")
    (directory / "manifest.json").write_text("{not json")
    assert c.post("/reload", json={}).status_code == 409
    assert c.get("/readyz").status_code == 200


def test_requests_during_reloads_never_fail(reloadable, bundle):
    c, directory = reloadable
    user_id, _ = a_user_with_history(bundle)
    seen_versions, failures = set(), []

    def hammer():
        for _ in range(25):
            r = c.post("/recommend", json={"user_id": user_id, "k": 5})
            if r.status_code != 200 or len(r.json()["items"]) != 5:
                failures.append(r.text)
            else:
                seen_versions.add(r.json()["model_version"])

    threads = [threading.Thread(target=hammer) for _ in range(2)]
    for t in threads:
        t.start()
    for n in range(4):
        set_version(directory, f"v{n}")
        assert c.post("/reload", json={}).status_code == 200
    for t in threads:
        t.join()
    assert not failures
    assert seen_versions <= {bundle.model_version, "v0", "v1", "v2", "v3"}


@pytest.fixture
def registry(tmp_path, monkeypatch, pipeline_dir):
    """A real MLflow registry (sqlite) holding ``ladder-gnolr`` v1 (@champion) and v2."""
    import mlflow

    class Bundle(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment(
        experiment_id=mlflow.create_experiment(
            "promote", artifact_location=str(tmp_path / "artifacts")
        )
    )
    versions = {}
    for n, version in enumerate(["v-one", "v-two"], start=1):
        directory = tmp_path / f"bundle{n}"
        shutil.copytree(bundle_dir(pipeline_dir / "data/serving"), directory)
        set_version(directory, version)
        with mlflow.start_run():
            info = mlflow.pyfunc.log_model(
                name="gnolr_bundle",
                python_model=Bundle(),
                artifacts={"bundle": str(directory)},
                pip_requirements=[],
                registered_model_name="ladder-gnolr",
            )
        versions[version] = str(info.registered_model_version)
    client = mlflow.MlflowClient()
    client.set_registered_model_alias("ladder-gnolr", "champion", versions["v-one"])
    yield client, versions
    mlflow.set_tracking_uri(None)


def test_resolve_bundle_from_the_registry(registry, tmp_path):
    from serving.resolve import BundleNotFoundError, resolve_bundle

    _, versions = registry
    path = resolve_bundle("models:/ladder-gnolr@champion", dst=tmp_path / "dl")
    assert (path / "manifest.json").is_file() and load_bundle(path).model_version == "v-one"
    path = resolve_bundle(f"models:/ladder-gnolr/{versions['v-two']}", dst=tmp_path / "dl2")
    assert load_bundle(path).model_version == "v-two"
    for spec, named in [
        ("models:/ladder-gnolr@nope", "alias 'nope'"),
        ("models:/ladder-gnolr/99", "version '99'"),
        ("models:/nobody@champion", "'nobody'"),
        ("models:/a/b/c", "bad model URI"),
        (str(tmp_path / "no-dir"), "no manifest.json"),
    ]:
        with pytest.raises(BundleNotFoundError, match=named):
            resolve_bundle(spec)


def test_a_live_bundle_serves_the_champion_and_reload_follows_the_alias(registry):
    from serving.resolve import LiveBundle, ReloadError

    client, versions = registry
    live = LiveBundle("models:/ladder-gnolr@champion")
    first = live.current
    assert first.model_version == "v-one"
    client.set_registered_model_alias("ladder-gnolr", "champion", versions["v-two"])
    old, new = live.reload()
    assert old is first and (old.model_version, new.model_version) == ("v-one", "v-two")
    assert live.current is new
    client.delete_registered_model_alias("ladder-gnolr", "champion")
    with pytest.raises(ReloadError, match="champion"):
        live.reload()
    assert live.current is new  # still serving v-two


# /metrics needs the Prometheus set-up of a real `bentoml serve`: see tests/test_service_e2e.py


def test_score_matches_a_hand_computation_from_the_bundles_arrays(client, bundle):
    """/score against the formulas written out from the bundle's arrays — not the calls the
    endpoint makes: P(level ≥ c) = σ(Σ_{h≤c} γ_h·cos_h − a_c + b_i^c) (nested, per-head scales,
    per-level item bias: the pipeline's default) and
    P[Love] = calibrate(logit(Π_h σ(u_h·i_h + b_u + b_i + b_pos + b)) + log w) at position 0."""
    emb, love = bundle.embeddings, bundle.plove
    assert emb.scoring == "nested" and love is not None
    assert emb.scale == "per_head" and emb.item_bias is not None  # params.yaml's gnolr
    users = list(bundle.user_index)[:4]
    items = [str(i) for i in bundle.item_ids[5:9]]
    pairs = list(zip(users, items, strict=True))
    r = client.post("/score", json={"pairs": [{"user_id": u, "item_id": i} for u, i in pairs]})
    assert r.status_code == 200, r.text
    for (user, item), row in zip(pairs, r.json()["scores"], strict=True):
        u, i = bundle.user_index[user], bundle.item_index[item]
        cos = [float(np.dot(emb.users[u, h], emb.items[i, h])) for h in range(emb.users.shape[1])]
        for c, level in enumerate(bundle.levels):
            logit = sum(emb.gamma[h] * cos[h] for h in range(c + 1)) - emb.thresholds[c]
            logit += emb.item_bias[i, c]
            assert row["probabilities"][level] == pytest.approx(1 / (1 + math.exp(-logit)), 1e-5)
        heads = [
            float(love.user_vectors[h, u] @ love.item_vectors[h, i])
            + love.user_bias[h, u]
            + love.item_bias[h, i]
            + love.position_bias[h, 0]
            + love.bias[h]
            for h in range(love.n_heads)
        ]
        p = math.prod(1 / (1 + math.exp(-x)) for x in heads)
        raw = math.log(p / (1 - p)) + math.log(love.negative_rate)
        expected = float(love.calibrator.predict(np.array([raw]))[0])
        assert row["p_love"] == pytest.approx(expected, rel=1e-5)
