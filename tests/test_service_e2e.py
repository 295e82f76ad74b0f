"""A real `bentoml serve` process: HTTP endpoints, /metrics, and feedback that survives SIGKILL.

The durability test posts feedback batches, each acknowledged with a 200, kills the server and all
its workers with SIGKILL right after the last acknowledgement (no shutdown, no flush), and reads
the log from disk: every acknowledged event must be there exactly once; a restarted server then
appends to the same log.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil
import pytest

from features.feedback_log import ReadStats, read_records
from serving.bundle import load_bundle
from tests.asgi import AUTH, TOKEN

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`bentoml serve serving.service:Recommender` in its own session (process group)."""

    def __init__(
        self, bundle: Path | str, feedback: Path, log: Path, env: dict[str, str] | None = None
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "LADDER_BUNDLE": str(bundle),
            "LADDER_FEEDBACK_LOG": str(feedback),
            "LADDER_EXPLORATION": "0",
            "LADDER_API_TOKEN": TOKEN,
            "BENTOML_DO_NOT_TRACK": "true",
            "OMP_NUM_THREADS": "1",
            **(env or {}),
        }
        self.log = open(log, "wb")  # noqa: SIM115 — closed in kill()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bentoml",
                "serve",
                "serving.service:Recommender",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            cwd=REPO,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.log_path = log

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise TimeoutError(
            f"server not ready in {START_TIMEOUT_S}s: {self.log_path.read_text()[-3000:]}"
        )

    def kill(self) -> None:
        """SIGKILL the server and every worker, and reap them.

        BentoML's workers run in process groups of their own, so killing the server's group is not
        enough: every descendant is listed first and killed at once.
        """
        procs = []
        with contextlib.suppress(psutil.NoSuchProcess):
            parent = psutil.Process(self.proc.pid)
            procs = [parent, *parent.children(recursive=True)]
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.send_signal(signal.SIGKILL)
        psutil.wait_procs(procs, timeout=30)
        self.proc.wait(30)
        self.log.close()


@pytest.fixture(scope="module")
def served(pipeline_dir, tmp_path_factory):
    base = tmp_path_factory.mktemp("e2e")
    server = Server(pipeline_dir / "data/serving", base / "feedback", base / "server.log")
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=30, headers=AUTH) as http:
            yield server, http, base / "feedback"
    finally:
        server.kill()


@pytest.fixture(scope="module")
def bundle(pipeline_dir):
    return load_bundle(pipeline_dir / "data/serving")


def test_health_readiness_and_openapi(served):
    _, http, _ = served
    assert http.get("/healthz").status_code == 200
    assert http.get("/readyz").status_code == 200
    paths = http.get("/docs.json").json()["paths"]
    assert {"/recommend", "/similar_items", "/score", "/feedback", "/reload"} <= set(paths)


def test_recommend_over_http_is_logged_and_counted_in_metrics(served, bundle):
    _, http, feedback = served
    user_id = next(iter(bundle.user_index))
    r = http.post("/recommend", json={"user_id": user_id, "k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["items"]) == 5 and body["model_version"] == bundle.model_version
    assert [it["position"] for it in body["items"]] == list(range(5))
    logged = [x for x in read_records(feedback) if x.get("slate_id") == body["slate_id"]]
    assert [x["item_id"] for x in logged] == [it["item_id"] for it in body["items"]]
    assert http.post("/recommend", json={"user_id": user_id, "k": 0}).status_code == 400
    metrics = http.get("/metrics")
    assert metrics.status_code == 200
    assert 'endpoint="/recommend"' in metrics.text and 'http_response_code="400"' in metrics.text


def test_the_real_server_checks_the_token_caps_bodies_and_shapes_errors(served):
    """serving/guard.py as ASGI middleware of a real `bentoml serve` (not only the in-process app)."""
    server, http, feedback = served
    event = {"user_id": "e2e-auth", "item_id": "i0", "event": "click"}
    event |= {"ts": datetime.now(UTC).isoformat(), "slate_id": uuid.uuid4().hex}
    anonymous = httpx.post(f"{server.url}/feedback", json={"events": [event]}, timeout=30)
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"] == "Bearer"
    wrong = {"Authorization": "Bearer " + "x" * len(TOKEN)}
    r = httpx.post(f"{server.url}/reload", json={}, headers=wrong, timeout=30)
    assert r.status_code == 403 and r.json() == {
        "error": "the bearer token is not valid for this server"
    }
    assert http.post("/feedback", json={"events": [event]}).status_code == 200
    assert [x["user_id"] for x in read_records(feedback)].count("e2e-auth") == 1

    big = b'{"user_id": "' + b"x" * (5 << 20) + b'"}'  # above the default 4 MiB cap
    r = http.post("/recommend", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "LADDER_MAX_BODY_BYTES" in r.json()["error"]
    for r, status in [
        (http.post("/recommend", json={"user_id": "u", "k": "5"}), 400),  # BentoML's 400, reshaped
        (http.post("/similar_items", json={"item_id": "no-such-item"}), 400),  # ours
        (http.post("/feedback", json={"events": [event | {"event": "impression"}]}), 400),
        (http.get("/no-such-path"), 404),
    ]:
        assert r.status_code == status, r.text
        assert isinstance(r.json()["error"], str) and set(r.json()) <= {"error", "detail"}
    metrics = http.get("/metrics").text
    assert "ladder_feedback_log_free_bytes" in metrics


def test_acknowledged_feedback_survives_sigkill_exactly_once(
    served, pipeline_dir, bundle, tmp_path
):
    server, http, feedback = served
    users = list(bundle.user_index)[:5]
    slates = {
        http.post("/recommend", json={"user_id": u, "k": 3}).json()["slate_id"]: u for u in users
    }
    n_batches, per_batch = 30, 40
    acked = []
    kill_slates = [uuid.uuid4().hex for _ in range(n_batches + 1)]  # the last one: after restart
    now = int(datetime.now(UTC).timestamp())
    for b in range(n_batches):
        events = [
            {
                "user_id": f"kill-u{b}",
                "item_id": f"i{n}",
                "event": "click",
                "ts": now - n,
                "slate_id": kill_slates[b],
                "position": n,
                "propensity": 0.5,
            }
            for n in range(per_batch)
        ]
        r = http.post("/feedback", json={"events": events})
        assert r.status_code == 200 and r.json()["accepted"] == per_batch, r.text
        acked.extend((e["slate_id"], e["item_id"]) for e in events)
    server.kill()  # SIGKILL right after the last acknowledgement: no graceful anything
    with pytest.raises(httpx.TransportError):  # nothing of the server is left to answer
        httpx.get(f"{server.url}/healthz", timeout=2)
    stats = ReadStats()
    found = [
        (x["slate_id"], x["item_id"])
        for x in read_records(feedback, stats)
        if x.get("slate_id") in kill_slates
    ]
    assert sorted(found) == sorted(acked)  # every acknowledged event, exactly once
    assert stats.skipped_lines == 0
    shown = [x["slate_id"] for x in read_records(feedback) if x.get("slate_id") in slates]
    assert sorted(shown) == sorted(s for s in slates for _ in range(3))  # every served slate too

    # a restarted server appends to the same log; everything acknowledged is still there once
    again = Server(pipeline_dir / "data/serving", feedback, tmp_path / "server2.log")
    try:
        again.wait_ready()
        event = {
            "user_id": "after",
            "item_id": "i0",
            "event": "cart",
            "ts": now,
            "slate_id": kill_slates[-1],
        }
        r = httpx.post(f"{again.url}/feedback", json={"events": [event]}, headers=AUTH, timeout=30)
        assert r.status_code == 200
    finally:
        again.kill()
    found = [
        (x["slate_id"], x["item_id"])
        for x in read_records(feedback)
        if x.get("slate_id") in kill_slates
    ]
    assert sorted(found) == sorted([*acked, (kill_slates[-1], "i0")])
