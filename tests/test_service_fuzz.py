"""Schema-driven fuzzing (schemathesis) of every operation of the service's OpenAPI schema: no 5xx.

Schemathesis generates bodies from /docs.json — valid ones (positive) and ones that break the schema
(negative: wrong types, missing fields, out-of-range numbers) — and each is sent through the
in-process ASGI client; ``not_a_server_error`` fails on any 5xx. Bounded: ``MAX_EXAMPLES`` per
operation and mode, no deadline. ``GET /metrics`` is left to tests/test_service_e2e.py: it needs the
Prometheus set-up of a real `bentoml serve`.

Then a seeded generator of hostile requests, ``LADDER_FUZZ_REQUESTS`` (default 1,000) per endpoint:
a valid body with one to three random changes anywhere inside it (a field dropped, added or
replaced by a huge, tiny, negative, non-finite-looking, 100k-character, control- or zero-width-
character, nested or wrongly typed value; a list repeated past its limit), raw bodies that are not
JSON (empty, truncated, invalid UTF-8, a lone surrogate, 100,000-deep nesting), a missing or wrong
token, a form content type. Every answer must be below 500 and, from 400 up, a JSON object
``{"error": str, "detail"?}``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from starlette.testclient import TestClient

from features.contract import ID_PATTERN
from serving.bundle import load_bundle
from tests.asgi import AUTH, TOKEN, service_app

MAX_EXAMPLES = 30
FUZZ_ID_PATTERN = r"^[A-Za-z0-9 ._:@/+-]+$"
BASE_URL = "http://testserver"


@pytest.fixture(scope="module")
def fuzz_client(pipeline_dir, tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LADDER_BUNDLE", str(pipeline_dir / "data/serving"))
        mp.setenv("LADDER_FEEDBACK_LOG", str(tmp_path_factory.mktemp("fuzz-feedback")))
        mp.delenv("LADDER_EXPLORATION", raising=False)
        mp.setenv("LADDER_API_TOKEN", TOKEN)  # the write endpoints are fuzzed past the auth check
        with TestClient(service_app(), headers=AUTH, raise_server_exceptions=False) as c:
            yield c


@pytest.fixture(scope="module")
def operations(fuzz_client):
    raw = fuzz_client.get("/docs.json").json()
    # BentoML labels the document OpenAPI 3.0.2 but its schemas are pydantic's JSON Schema 2020-12
    # (numeric exclusiveMinimum, {"type": "null"}), i.e. OpenAPI 3.1: read it as what it is.
    assert raw["openapi"].startswith("3.")
    raw["openapi"] = "3.1.0"
    # The id pattern uses Unicode classes (\p{Cc}…) that Python's re, hence schemathesis, cannot
    # read: generate from a narrower pattern (every id it matches, the real one matches too).
    text = json.dumps(raw).replace(json.dumps(ID_PATTERN)[1:-1], json.dumps(FUZZ_ID_PATTERN)[1:-1])
    schema = schemathesis.openapi.from_dict(json.loads(text))
    ops = {}
    for result in schema.get_all_operations():
        op = result.ok()
        ops[f"{op.method.upper()} {op.path}"] = op
    return ops


OPERATIONS = [
    "POST /recommend",
    "POST /similar_items",
    "POST /score",
    "POST /feedback",
    "POST /reload",
    "GET /healthz",
    "GET /readyz",
    "GET /livez",
]


def test_the_schema_lists_every_operation(operations):
    assert set(OPERATIONS) <= set(operations)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("name", OPERATIONS)
def test_no_operation_answers_5xx(fuzz_client, operations, name, mode):
    op = operations[name]
    if mode is GenerationMode.NEGATIVE and op.method.upper() == "GET":
        pytest.skip("a GET without parameters has no invalid input")
    statuses = []

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=op.as_strategy(generation_mode=mode))
    def run(case):
        kwargs = case.as_transport_kwargs(base_url=BASE_URL)
        response = fuzz_client.request(
            kwargs["method"],
            kwargs["url"],
            headers=kwargs.get("headers"),
            params=kwargs.get("params"),
            json=kwargs.get("json"),
            content=kwargs.get("data"),
        )
        statuses.append(response.status_code)
        case.validate_response(response, checks=[not_a_server_error])

    run()
    assert statuses and max(statuses) < 500


# --- Hostile random requests: ≥ 1,000 per endpoint, seeded, checked for status and error shape ---

N_HOSTILE = int(os.environ.get("LADDER_FUZZ_REQUESTS", "1000"))  # requests per endpoint
HOSTILE_VALUES: list = [
    None,
    True,
    0,
    -1,
    2**31,
    2**63,
    2**64 + 1,
    10**400,  # json.dumps writes it as an integer literal
    1e308,
    -1e308,
    1e-308,
    5e-324,
    -0.0,
    0.5,
    "",
    " ",
    "1",
    "NaN",
    "x" * 100_000,
    "a\x00b",
    "zero\u200bwidth",
    "\u202eevil",
    "ünïcødé",
    "🙂" * 40,
    "../../etc/passwd",
    "1970-01-01T00:00:00Z",
    "2099-01-01T00:00:00Z",
    "31/12/2025",
    [],
    [None],
    ["i"] * 3,
    {},
    {"$gt": ""},
    [[[[[]]]]],
]
RAW_BODIES = [
    b"",
    b"{",
    b"null",
    b"[]",
    b'"text"',
    b"\xff\xfe\x00",
    b'{"user_id": "\\ud800"}',  # a lone surrogate
    b'{"k": 1e999}',
    b'{"a": ' * 5000 + b"1" + b"}" * 5000,  # deep nesting
    b"[" * 100_000 + b"]" * 100_000,
    b'{"user_id": "u", "user_id": "v"}',
    b"\x00" * 1000,
]


def valid_bodies(bundle) -> dict[str, dict]:
    """One valid body per endpoint, the starting point of every mutation."""
    user, item = next(iter(bundle.user_index)), str(bundle.item_ids[0])
    return {
        "/recommend": {"user_id": user, "k": 5, "exploration": 0.5, "seed": 1},
        "/similar_items": {"item_id": item, "k": 5},
        "/score": {"pairs": [{"user_id": user, "item_id": item}]},
        "/feedback": {
            "events": [
                {
                    "user_id": user,
                    "item_id": item,
                    "event": "click",
                    "ts": datetime.now(UTC).isoformat(),
                    "position": 0,
                    "propensity": 0.5,
                    "slate_id": "0" * 12 + "4" + "0" * 3 + "8" + "0" * 15,
                }
            ]
        },
        "/reload": {},
    }


def mutate(value, rng: random.Random, depth: int = 0):
    """``value`` with one random hostile change somewhere inside it."""

    if isinstance(value, dict) and value and depth < 4 and rng.random() < 0.8:
        key = rng.choice(sorted(value))
        choice = rng.random()
        out = dict(value)
        if choice < 0.15:
            del out[key]
        elif choice < 0.25:
            out[rng.choice(["extra", "__proto__", key.upper(), "x" * 1000])] = rng.choice(
                HOSTILE_VALUES
            )
        else:
            out[key] = mutate(value[key], rng, depth + 1)
        return out
    if isinstance(value, list) and value and depth < 4 and rng.random() < 0.8:
        choice = rng.random()
        if choice < 0.2:  # past the list limits, but at most ~8 MB (above the body cap)
            size = len(json.dumps(value))
            return value * rng.choice([n for n in (2, 50, 1001, 10_001) if n * size < 8 << 20])
        out = list(value)
        n = rng.randrange(len(out))
        out[n] = mutate(out[n], rng, depth + 1)
        return out
    return rng.choice(HOSTILE_VALUES)


def hostile_request(body: dict, rng: random.Random) -> dict:
    """Keyword arguments of ``client.post``: a mutated body (a few at once), or a raw hostile one,
    with the token, a wrong or missing one, or a content type that is not JSON."""
    headers = dict(AUTH)
    roll = rng.random()
    if roll < 0.1:
        headers["content-type"] = "application/json"
        return {"content": rng.choice(RAW_BODIES), "headers": headers}
    if roll < 0.15:
        headers = rng.choice(
            [{}, {"Authorization": "Bearer " + "x" * 30}, {"Authorization": b"\xc3\xa9\xc3\xa9"}]
        )
    elif roll < 0.2:
        headers["content-type"] = rng.choice(["text/plain", "multipart/form-data", "", "a/b"])
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        body = mutate(body, rng)
    content = json.dumps(body, ensure_ascii=rng.random() < 0.5).encode()
    headers.setdefault("content-type", "application/json")
    return {"content": content, "headers": headers}


@pytest.fixture(scope="module")
def hostile_results(pipeline_dir):
    """``{path: [(status, body) for each request]}``, sent by one seeded generator to a service
    whose log is in memory (/dev/shm where there is one: 100 fsyncs of a busy disk take minutes)."""
    shm = Path("/dev/shm")
    with contextlib.ExitStack() as stack:
        log_dir = stack.enter_context(
            tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None)
        )
        mp = stack.enter_context(pytest.MonkeyPatch.context())
        mp.setenv("LADDER_BUNDLE", str(pipeline_dir / "data/serving"))
        mp.setenv("LADDER_FEEDBACK_LOG", log_dir)
        mp.setenv("LADDER_API_TOKEN", TOKEN)
        mp.delenv("LADDER_EXPLORATION", raising=False)
        # BentoML logs every refused body with its traceback: thousands here, none of them news.
        quiet = logging.getLogger("bentoml._internal.server.http_app")
        mp.setattr(quiet, "level", logging.CRITICAL)
        client = stack.enter_context(
            TestClient(service_app(), headers=AUTH, raise_server_exceptions=False)
        )
        rng = random.Random(12)
        bodies = valid_bodies(load_bundle(pipeline_dir / "data/serving"))
        results: dict[str, list[tuple[int, bytes]]] = {path: [] for path in bodies}
        for path, body in bodies.items():
            for _ in range(N_HOSTILE):
                r = client.post(path, **hostile_request(body, rng))
                results[path].append((r.status_code, r.content))
        yield results


@pytest.mark.parametrize("path", ["/recommend", "/similar_items", "/score", "/feedback", "/reload"])
def test_hostile_requests_get_a_4xx_in_the_error_shape_never_a_5xx(hostile_results, path):

    answers = hostile_results[path]
    assert len(answers) == N_HOSTILE >= 1000
    server_errors = [(s, b[:300]) for s, b in answers if s >= 500]
    assert not server_errors, server_errors[:5]
    for status, body in answers:
        if status >= 400:
            data = json.loads(body)  # no text, HTML or list bodies either
            assert isinstance(data, dict) and isinstance(data["error"], str) and data["error"]
            assert set(data) <= {"error", "detail"}
    statuses = {s for s, _ in answers}
    assert {200, 400, 415} <= statuses  # it reaches the handlers, the validation and the guard
    assert {401, 403} <= statuses or path not in ("/feedback", "/reload")
