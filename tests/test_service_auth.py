"""Authentication (serving/guard.py): the write endpoints need the bearer token, every endpoint does
with LADDER_AUTH_ALL, the probes never do; 401 without a token, 403 with a wrong one.

The real `bentoml serve` uses it too: tests/test_service_e2e.py.
"""

import uuid
from datetime import UTC, datetime

import pytest

from features.feedback_log import read_records
from serving.guard import GuardSettings
from tests.asgi import AUTH, TOKEN, serving

WRONG = {"Authorization": "Bearer " + "w" * len(TOKEN)}


@pytest.fixture(scope="module")
def bundle_dir(pipeline_dir):
    return pipeline_dir / "data/serving"


def click() -> dict:
    return {
        "user_id": "u-auth",
        "item_id": "i1",
        "event": "click",
        "ts": datetime.now(UTC).isoformat(),
        "slate_id": uuid.uuid4().hex,
    }


def write_calls(c, headers):
    return {
        "/feedback": c.post("/feedback", json={"events": [click()]}, headers=headers),
        "/reload": c.post("/reload", json={}, headers=headers),
    }


@pytest.fixture(scope="module")
def anonymous(bundle_dir, tmp_path_factory):
    """A service with a token configured, and a client that sends none by default."""
    with serving(bundle_dir, tmp_path_factory.mktemp("auth-log"), headers={}) as c:
        yield c


def test_writes_without_a_token_are_401_with_a_bearer_challenge(anonymous):
    for path, r in write_calls(anonymous, {}).items():
        assert r.status_code == 401, (path, r.text)
        assert r.headers["www-authenticate"] == "Bearer"
        assert "Authorization: Bearer" in r.json()["error"]


def test_writes_with_a_wrong_token_are_403(anonymous):
    for headers in (
        WRONG,
        {"Authorization": "Bearer short"},
        {"Authorization": f"Bearer {TOKEN}x"},
    ):
        for path, r in write_calls(anonymous, headers).items():
            assert r.status_code == 403, (path, headers, r.text)
            assert r.json() == {"error": "the bearer token is not valid for this server"}


@pytest.mark.parametrize(
    "header",
    [f"Basic {TOKEN}", "Bearer", "Bearer ", TOKEN, f"Token {TOKEN}"],
)
def test_a_malformed_authorization_header_is_401(anonymous, header):
    r = anonymous.post("/reload", json={}, headers={"Authorization": header})
    assert r.status_code == 401 and "malformed" in r.json()["error"]


def test_the_right_token_lets_writes_through(anonymous, bundle_dir):
    calls = write_calls(anonymous, AUTH)
    assert calls["/feedback"].status_code == 200, calls["/feedback"].text
    assert calls["/reload"].status_code == 200, calls["/reload"].text
    lower = {"authorization": f"bearer {TOKEN}"}  # the scheme is case-insensitive
    assert anonymous.post("/reload", json={}, headers=lower).status_code == 200


def test_a_trailing_slash_does_not_dodge_the_check(anonymous):
    r = anonymous.post("/reload/", json={})
    assert r.status_code == 401


def test_reads_need_no_token_by_default(anonymous, pipeline_dir):
    assert anonymous.post("/recommend", json={"user_id": "anyone", "k": 3}).status_code == 200
    assert anonymous.get("/healthz").status_code == 200
    assert anonymous.get("/docs.json").status_code == 200


def test_a_server_without_a_token_refuses_every_write(bundle_dir, tmp_path):
    with serving(bundle_dir, tmp_path, LADDER_API_TOKEN=None) as c:  # the client sends one anyway
        for path, r in write_calls(c, AUTH).items():
            assert r.status_code == 403, (path, r.text)
            assert (
                r.json()["error"] == f"{path} is disabled: the server has no LADDER_API_TOKEN set"
            )
        assert c.post("/recommend", json={"user_id": "x", "k": 2}).status_code == 200
    assert {r["event"] for r in read_records(tmp_path)} == {"impression"}  # the slate, no click


def test_auth_all_protects_every_endpoint_but_the_probes(bundle_dir, tmp_path):
    with serving(bundle_dir, tmp_path, headers={}, LADDER_AUTH_ALL="1") as c:
        body = {"user_id": "x", "k": 2}
        assert c.post("/recommend", json=body).status_code == 401
        assert c.post("/recommend", json=body, headers=WRONG).status_code == 403
        assert c.post("/recommend", json=body, headers=AUTH).status_code == 200
        assert c.post("/similar_items", json={"item_id": "x"}).status_code == 401
        assert c.post("/score", json={"pairs": []}).status_code == 401
        assert c.get("/docs.json").status_code == 401
        assert c.get("/metrics").status_code == 401
        for probe in ("/healthz", "/livez", "/readyz"):
            assert c.get(probe).status_code == 200, probe


def test_settings_are_checked_when_the_server_starts():
    assert GuardSettings.from_env({}) == GuardSettings(None, False, 4 << 20)
    env = {"LADDER_API_TOKEN": TOKEN, "LADDER_AUTH_ALL": "true", "LADDER_MAX_BODY_BYTES": "1000"}
    assert GuardSettings.from_env(env) == GuardSettings(TOKEN, True, 1000)
    with pytest.raises(ValueError, match="at least 16 characters"):
        GuardSettings.from_env({"LADDER_API_TOKEN": "secret"})
    with pytest.raises(ValueError, match="LADDER_MAX_BODY_BYTES must be an integer"):
        GuardSettings.from_env({"LADDER_MAX_BODY_BYTES": "4MB"})
    with pytest.raises(ValueError, match="positive"):
        GuardSettings.from_env({"LADDER_MAX_BODY_BYTES": "0"})
