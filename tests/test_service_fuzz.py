"""Schema-driven fuzzing (schemathesis) of every operation of the service's OpenAPI schema: no 5xx.

Schemathesis generates bodies from /docs.json — valid ones (positive) and ones that break the schema
(negative: wrong types, missing fields, out-of-range numbers) — and each is sent through the
in-process ASGI client; ``not_a_server_error`` fails on any 5xx. Bounded: ``MAX_EXAMPLES`` per
operation and mode, no deadline. ``GET /metrics`` is left to tests/test_service_e2e.py: it needs the
Prometheus set-up of a real `bentoml serve`.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from starlette.testclient import TestClient

from tests.asgi import service_app

MAX_EXAMPLES = 30
BASE_URL = "http://testserver"


@pytest.fixture(scope="module")
def fuzz_client(pipeline_dir, tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LADDER_BUNDLE", str(pipeline_dir / "data/serving"))
        mp.setenv("LADDER_FEEDBACK_LOG", str(tmp_path_factory.mktemp("fuzz-feedback")))
        mp.delenv("LADDER_EXPLORATION", raising=False)
        with TestClient(service_app(), raise_server_exceptions=False) as c:
            yield c


@pytest.fixture(scope="module")
def operations(fuzz_client):
    raw = fuzz_client.get("/docs.json").json()
    # BentoML labels the document OpenAPI 3.0.2 but its schemas are pydantic's JSON Schema 2020-12
    # (numeric exclusiveMinimum, {"type": "null"}), i.e. OpenAPI 3.1: read it as what it is.
    assert raw["openapi"].startswith("3.")
    raw["openapi"] = "3.1.0"
    schema = schemathesis.openapi.from_dict(raw)
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
