"""Nasty requests and a failing disk, through the in-process service: every request either succeeds
or gets a 4xx / 503 in the one error shape ``{"error": ..., "detail"?}`` that says why.

Faults: a log whose day file is ``/dev/full`` (every write fails with a real ENOSPC), and EIO
injected at the log's two disk seams (``_write_all`` and ``_sync`` in features/feedback_log.py).
"""

from __future__ import annotations

import errno
import math
import os
import shutil
import uuid
from datetime import UTC, datetime, timedelta

import prometheus_client
import pytest

from features import feedback_log
from features.feedback_log import FeedbackLog, read_records
from serving.bundle import bundle_dir as current_bundle
from serving.bundle import load_bundle
from tests.asgi import serving


@pytest.fixture(scope="module")
def bundle_dir(pipeline_dir):
    return pipeline_dir / "data/serving"


@pytest.fixture(scope="module")
def bundle(bundle_dir):
    return load_bundle(bundle_dir)


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("requests-log")


@pytest.fixture
def client(bundle_dir, log_dir):
    """A fresh service per test: the in-process app is one object, so a test that starts it with
    other settings (serving(..., LADDER_MAX_BODY_BYTES=...)) leaves them to the next client."""
    with serving(bundle_dir, log_dir) as c:
        yield c


@pytest.fixture(scope="module")
def user(bundle) -> str:
    return next(iter(bundle.user_index))


def now_iso(**delta) -> str:
    return (datetime.now(UTC) + timedelta(**delta)).isoformat()


def click(**change) -> dict:
    event = {
        "user_id": "u-req",
        "item_id": "i1",
        "event": "click",
        "ts": datetime.now(UTC).isoformat(),
        "slate_id": uuid.uuid4().hex,
    }
    return {**event, **change}


def assert_error(r, status: int, *words: str) -> dict:
    """``r`` is a ``status`` in the error shape whose message contains every one of ``words``."""
    assert r.status_code == status, (r.status_code, r.text[:500])
    body = r.json()
    assert isinstance(body, dict) and set(body) <= {"error", "detail"}, body
    assert isinstance(body["error"], str)
    for word in words:
        assert word in body["error"], (word, body["error"])
    return body


# --- /recommend -------------------------------------------------------------------------------


@pytest.mark.parametrize("exploration", [1e-308, 5e-324, 1e-12, 1e6])
def test_any_exploration_in_range_gives_finite_logged_propensities(
    client, log_dir, user, exploration
):
    r = client.post("/recommend", json={"user_id": user, "k": 5, "exploration": exploration})
    assert r.status_code == 200, r.text
    body = r.json()
    propensities = [it["propensity"] for it in body["items"]]
    assert all(math.isfinite(p) and 0 < p <= 1 for p in propensities), propensities
    logged = [x for x in read_records(log_dir) if x.get("slate_id") == body["slate_id"]]
    assert [x["propensity"] for x in logged] == propensities


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"exploration": -1e-308}, "exploration"),
        ({"exploration": 1e7}, "exploration"),
        ({"k": "5"}, "k"),
        ({"k": 5.0}, "k"),
        ({"k": True}, "k"),
        ({"k": 2**31}, "k"),
        ({"seed": "1"}, "seed"),
        ({"seed": -1}, "seed"),
        ({"user_id": "a\u200bb"}, "user_id"),
        ({"user_id": "x" * 257}, "user_id"),
    ],
)
def test_strict_numbers_and_ids_of_recommend(client, user, change, field):
    body = assert_error(client.post("/recommend", json={"user_id": user, **change}), 400, field)
    assert body["detail"][0]["loc"][0] == field


# --- /feedback --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"propensity": 5e-324}, ["below the floor", "LADDER_MIN_PROPENSITY"]),
        ({"propensity": 9e-7}, ["below the floor"]),
        ({"ts": "2099-01-01T00:00:00Z"}, ["ahead of the server clock", "LADDER_MAX_CLOCK_SKEW_S"]),
        # times relative to the clock are taken when the test runs, not when it is collected
        ({"ts": lambda: now_iso(minutes=10)}, ["ahead"]),
        ({"ts": lambda: now_iso(days=-31)}, ["LADDER_MAX_EVENT_AGE_S"]),
        ({"event": "impression"}, ["impressions are logged by the service"]),
        ({"slate_id": "kill-1"}, ["slate_id must be a slate_id /recommend returned"]),
        ({"slate_id": uuid.uuid4().hex.upper()}, ["slate_id"]),
        ({"slate_id": "0" * 32}, ["slate_id"]),  # hex, but not a uuid4
        ({"position": 2**31}, ["position"]),
        ({"position": 1.5}, ["position"]),
        ({"position": "3"}, ["position"]),
        ({"item_id": "i\x00"}, ["item_id"]),
    ],
)
def test_poisoning_feedback_is_refused_and_nothing_is_written(client, log_dir, change, words):
    good = click(user_id="u-poison-ok")
    bad = click(user_id="u-poison", **{k: v() if callable(v) else v for k, v in change.items()})
    r = client.post("/feedback", json={"events": [good, bad]})
    assert_error(r, 400, *words)
    users = {x["user_id"] for x in read_records(log_dir)}
    assert "u-poison-ok" not in users and "u-poison" not in users  # all or nothing


def test_feedback_at_the_limits_is_accepted(client, log_dir):
    events = [
        click(user_id="u-edge", item_id="a", propensity=1e-6, position=2**31 - 1),
        click(
            user_id="u-edge", item_id="b", ts=(datetime.now(UTC) + timedelta(minutes=4)).isoformat()
        ),
        click(
            user_id="u-edge", item_id="c", ts=(datetime.now(UTC) - timedelta(days=29)).isoformat()
        ),
    ]
    r = client.post("/feedback", json={"events": events})
    assert r.status_code == 200, r.text
    assert sorted(x["item_id"] for x in read_records(log_dir) if x["user_id"] == "u-edge") == [
        "a",
        "b",
        "c",
    ]


def test_every_refused_event_is_listed_in_the_detail(client):
    events = [click(propensity=1e-9), click(), click(ts="2099-01-01T00:00:00Z")]
    body = assert_error(
        client.post("/feedback", json={"events": events}), 400, "2 event(s) refused"
    )
    assert [d.split(" ")[0] for d in body["detail"]] == ["events.0.propensity", "events.2.ts"]


def test_the_feedback_policy_is_configurable(bundle_dir, tmp_path):
    env = {"LADDER_MIN_PROPENSITY": "0.01", "LADDER_MAX_CLOCK_SKEW_S": "3600"}
    with serving(bundle_dir, tmp_path, **env) as c:
        assert_error(c.post("/feedback", json={"events": [click(propensity=0.005)]}), 400, "0.01")
        later = (datetime.now(UTC) + timedelta(minutes=30)).isoformat()
        assert c.post("/feedback", json={"events": [click(ts=later)]}).status_code == 200


# --- body cap, media types and the error shape of everything -------------------------------------


def test_a_body_above_the_cap_is_a_413_before_it_is_read(bundle_dir, tmp_path, user):
    with serving(bundle_dir, tmp_path, LADDER_MAX_BODY_BYTES="2000") as c:
        events = [click(user_id="u-big", item_id=f"i{n}") for n in range(40)]  # ~6 kB
        assert_error(c.post("/feedback", json={"events": events}), 413, "LADDER_MAX_BODY_BYTES")

        def chunks():  # no Content-Length: the cap applies while streaming
            yield b'{"events": ['
            for _ in range(100):
                yield b'{"user_id": "u-big", "item_id": "x", "event": "click", "ts": 0},'
            yield b"]}"

        r = c.post("/feedback", content=chunks(), headers={"content-type": "application/json"})
        assert_error(r, 413, "more than 2000 bytes")
        assert c.post("/recommend", json={"user_id": user, "k": 2}).status_code == 200
    assert not any(x["user_id"] == "u-big" for x in read_records(tmp_path))


def test_a_20_mb_body_is_refused_with_the_default_cap(client):
    r = client.post(
        "/recommend", content=b" " * (20 << 20), headers={"content-type": "application/json"}
    )
    assert_error(r, 413, f"{20 << 20} bytes", f"limit of {4 << 20} bytes")


@pytest.mark.parametrize(
    "content_type",
    ["multipart/form-data", "application/x-www-form-urlencoded", "application/vnd.bentoml+pickle"],
)
def test_a_body_that_is_not_json_is_a_415(client, content_type):
    r = client.post("/recommend", content=b"user_id=u", headers={"content-type": content_type})
    assert_error(r, 415, "application/json")


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("POST", "/nowhere", 404), ("GET", "/recommend", 405), ("POST", "/score", 400)],
)
def test_router_and_validation_errors_have_the_error_shape(client, method, path, status):
    assert_error(client.request(method, path, json={}), status)


def test_a_validation_error_names_its_fields_in_the_message(client):
    r = client.post("/score", json={"pairs": [{"user_id": "u"}, {"item_id": 3}]})
    body = assert_error(r, 400, "invalid request:", "pairs.0.item_id: Field required")
    assert {tuple(d["loc"]) for d in body["detail"]} >= {("pairs", 0, "item_id")}


def test_a_failed_reload_is_a_409_in_the_error_shape(bundle_dir, tmp_path):
    served = tmp_path / "bundle"
    shutil.copytree(current_bundle(bundle_dir), served)  # one plain (unversioned) bundle
    with serving(served, tmp_path / "log") as c:
        (served / "manifest.json").write_text("{not json")
        assert_error(c.post("/reload", json={}), 409)
        assert c.post("/similar_items", json={"item_id": "x"}).status_code == 400  # still serving


# --- a failing disk -----------------------------------------------------------------------------


def append_failures(reason: str) -> float:
    value = prometheus_client.REGISTRY.get_sample_value(
        "ladder_feedback_log_append_failures_total", {"reason": reason}
    )
    return value or 0.0


def test_a_full_disk_is_a_503_naming_it_and_counted(bundle_dir, tmp_path, user):
    FeedbackLog(tmp_path).path_for().symlink_to("/dev/full")  # today's file: ENOSPC on every write
    before = append_failures("ENOSPC")
    with serving(bundle_dir, tmp_path) as c:
        r = c.post("/recommend", json={"user_id": user, "k": 3})
        assert_error(r, 503, "feedback log unavailable: disk full (ENOSPC)", "slate was not served")
        r = c.post("/feedback", json={"events": [click()]})
        assert_error(r, 503, "disk full (ENOSPC)", "none of the 1 events was accepted")
        assert c.post("/similar_items", json={"item_id": "i0"}).status_code != 503  # no log
    assert append_failures("ENOSPC") == before + 2
    assert prometheus_client.REGISTRY.get_sample_value("ladder_feedback_log_free_bytes") > 0


@pytest.mark.parametrize("seam", ["_write_all", "_sync"])
def test_eio_is_a_503_and_nothing_acknowledged_is_lost(
    bundle_dir, tmp_path, user, monkeypatch, seam
):
    with serving(bundle_dir, tmp_path) as c:
        acked = []
        for n in range(3):
            event = click(user_id="u-eio", item_id=f"ok{n}")
            assert c.post("/feedback", json={"events": [event]}).status_code == 200
            acked.append(event["item_id"])
        real = getattr(feedback_log, seam)

        def half_then_eio(fd, *data):
            if data:  # a torn write: half of it reaches the file
                os.write(fd, data[0][: len(data[0]) // 2])
            raise OSError(errno.EIO, os.strerror(errno.EIO))

        monkeypatch.setattr(feedback_log, seam, half_then_eio)
        r = c.post("/feedback", json={"events": [click(user_id="u-eio", item_id="lost")]})
        assert_error(r, 503, "feedback log unavailable: I/O error (EIO)")
        if seam == "_write_all":  # a slate is written without waiting for fsync
            assert_error(c.post("/recommend", json={"user_id": user, "k": 2}), 503, "EIO")
        monkeypatch.setattr(feedback_log, seam, real)
        event = click(user_id="u-eio", item_id="after")
        assert c.post("/feedback", json={"events": [event]}).status_code == 200
        acked.append("after")
    found = [x["item_id"] for x in read_records(tmp_path) if x["user_id"] == "u-eio"]
    # every acknowledged event exactly once; the failed one at most once (unacknowledged: a failed
    # fsync leaves it written, a failed write is rolled back) and never a torn line
    assert [i for i in found if i != "lost"] == acked
    assert found.count("lost") == (1 if seam == "_sync" else 0)
