"""The serving-cost benchmark's yardstick ``/noop`` (serving/service.py) and ``Server-Timing``
(serving/guard.py): both off unless asked for, and, when on, ``/noop`` answers ``/recommend``'s
shape through the same middleware (so LADDER_AUTH_ALL covers it) without touching the log."""

import os

import pytest

from tests.asgi import serving


@pytest.fixture(scope="module")
def bundle_dir(pipeline_dir):
    return pipeline_dir / "data/serving"


def test_noop_is_a_404_unless_enabled_and_writes_nothing(bundle_dir, tmp_path):
    log = tmp_path / "log"
    with serving(bundle_dir, log, LADDER_BENCH_NOOP=None, LADDER_SERVER_TIMING=None) as c:
        r = c.post("/noop", json={"user_id": "u1", "k": 3})
        assert r.status_code == 404
        assert "LADDER_BENCH_NOOP" in r.json()["error"]
        assert "server-timing" not in r.headers
        version = c.post("/bundle", json={}).json()["model_version"]
    with serving(bundle_dir, log, LADDER_BENCH_NOOP="1", LADDER_SERVER_TIMING="1") as c:
        r = c.post("/noop", json={"user_id": "u1", "k": 3})
        assert r.status_code == 200, r.text
        body = r.json()
        assert [it["item_id"] for it in body["items"]] == ["noop-0", "noop-1", "noop-2"]
        assert [it["position"] for it in body["items"]] == [0, 1, 2]
        assert body["user_id"] == "u1" and body["model_version"] == version
        app, pid = r.headers["server-timing"].split(", ")  # app;dur=<ms>, pid;desc=<worker>
        assert app.startswith("app;dur=") and 0 < float(app[8:]) < 30_000
        assert pid == f"pid;desc={os.getpid()}"  # the in-process app: this process
        # the same validation as /recommend: k out of range is a 400 naming the field
        bad = c.post("/noop", json={"user_id": "u1", "k": 0})
        assert bad.status_code == 400 and "k" in bad.json()["error"]
    assert not any(p.stat().st_size for p in log.rglob("*") if p.is_file())


def test_noop_needs_the_token_like_every_endpoint_with_auth_all(bundle_dir, tmp_path):
    with serving(
        bundle_dir, tmp_path / "log", headers={}, LADDER_BENCH_NOOP="1", LADDER_AUTH_ALL="1"
    ) as c:
        assert c.post("/noop", json={"k": 1}).status_code == 401
