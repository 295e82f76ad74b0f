"""The team topology, started for real by this module: PostgreSQL + an S3 endpoint (moto_server) +
``mlflow server`` with its artifacts on S3 (pipelines/team_stack.py).

1. A training stage (train_gnolr) and `promote` track to the server: the run's parameters,
   metrics and tags land in PostgreSQL, its artifacts in the bucket, nothing local; the registry
   alias ``models:/ladder-gnolr@champion`` resolves to the served bundle.
2. DVC pushes the pipeline's outputs to an S3 remote on the same endpoint (configured by
   ``python -m pipelines.team_stack dvc-remote``) and a fresh clone pulls them back byte for byte.
3. Two `bentoml serve` workers following ``models:/ladder-gnolr@champion`` both serve a new version
   within two poll intervals after the alias moves, and both keep it when the alias moves on to a
   broken bundle.

The stack is started once for the module and every process it started is stopped at the end (the
last test checks). The pipeline's outputs come from the session's tiny pipeline (``pipeline_dir``).
Skipped, saying why, only where PostgreSQL or the team extra is not installed.
"""

from __future__ import annotations

import filecmp
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx
import polars as pl
import pytest

from pipelines.team_stack import TEST_CREDENTIALS, TeamStack, free_port, postgres_bindir
from serving.bundle import bundle_dir, current_version
from tests.asgi import AUTH
from tests.conftest import TINY_PARAMS, dvc_repo, run
from tests.test_service_e2e import Server

if postgres_bindir() is None:
    pytest.skip(
        "PostgreSQL is not installed (no initdb/pg_ctl on PATH or in /usr/lib/postgresql/*/bin): "
        "the team-topology tests start a real one (apt-get install postgresql)",
        allow_module_level=True,
    )
pytest.importorskip("psycopg2", reason="the team extra is not installed: pip install '.[team]'")
pytest.importorskip("moto", reason="the team extra is not installed: pip install '.[team]'")
pytest.importorskip("boto3", reason="the team extra is not installed: pip install '.[team]'")

POLL_SECONDS = 5.0
S3_ENV = ("MLFLOW_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def running(pid: int | None = None, group: int | None = None) -> list[int]:
    """Live (not zombie) processes: ``pid`` itself, or every member of process group ``group``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        this, state, pgrp = int(stat.parent.name), fields[0], int(fields[2])
        if state != "Z" and (this == pid or pgrp == group):
            found.append(this)
    return found


def left_running(pids: list[int], groups: list[int], timeout: float = 10) -> list[int]:
    """What is still running of ``pids`` and ``groups`` after up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        left = [q for p in pids for q in running(pid=p)]
        left += [q for g in groups for q in running(group=g)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


@pytest.fixture(scope="module")
def stack():
    base = Path(tempfile.mkdtemp(prefix="ladder-team-"))
    base.chmod(0o755)  # PostgreSQL runs as the postgres user when we are root
    team = TeamStack(base, mlflow_port=free_port(), s3_port=free_port(), pg_port=free_port())
    try:
        with team.running():
            postmaster = int((base / "postgres/data/postmaster.pid").read_text().split()[0])
            groups = [team.s3.proc.pid, team.mlflow.proc.pid]  # each in a session of its own
            assert running(pid=postmaster) and all(running(group=g) for g in groups)
            yield team
        # every process the stack started is gone: PostgreSQL, moto_server, mlflow's workers
        left = left_running([postmaster], groups)
        assert not left, f"still running after the stack stopped: {left}"
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def tracked(stack, pipeline_dir, tmp_path_factory):
    """A copy of the tiny pipeline's outputs where `train_gnolr` and `promote` ran with the tracking
    server as their only MLflow store (no S3 credentials: artifacts go through the server)."""
    import mlflow

    from pipelines import promote, train_gnolr

    work = tmp_path_factory.mktemp("team-work")
    shutil.copytree(pipeline_dir / "data", work / "data")
    shutil.copy(pipeline_dir / "params.yaml", work / "params.yaml")
    for family in ("relmf", "plove"):  # their training runs are in the session's sqlite store
        info = work / f"data/models/{family}/info.json"
        info.write_text(json.dumps({"skipped": "trained against another store"}))
    before = mlflow.get_tracking_uri()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        mp.setenv("MLFLOW_TRACKING_URI", stack.mlflow.url)
        mp.delenv("DVC_ROOT", raising=False)
        for key in S3_ENV:
            mp.delenv(key, raising=False)
        try:
            train_gnolr.main()
            promote.main()
        finally:
            mlflow.set_tracking_uri(before)
    return work


def test_a_training_stage_tracks_to_the_server_and_the_alias_serves_the_bundle(
    stack, tracked, monkeypatch
):
    work = tracked
    assert not (work / "mlflow.db").exists() and not (work / "mlartifacts").exists()
    promoted = json.loads((work / "data/metrics/promote.json").read_text())["gnolr"]
    assert promoted["decision"] == "promoted" and promoted["version"] == "1", promoted

    pg = stack.postgres  # runs, params, metrics and the registry are rows in PostgreSQL
    (run_id,) = pg.query("SELECT run_uuid FROM tags WHERE key = 'stage' AND value = 'train_gnolr'")[
        0
    ]
    params = dict(pg.query("SELECT key, value FROM params WHERE run_uuid = %s", (run_id,)))
    assert params["gnolr.dim"] == "16" and params["source.kind"] == "synthetic"
    metrics = {k for (k,) in pg.query("SELECT key FROM metrics WHERE run_uuid = %s", (run_id,))}
    assert any(m.startswith("valid/") for m in metrics), metrics
    aliases = pg.query("SELECT name, alias, version FROM registered_model_aliases")
    assert ("ladder-gnolr", "champion", 1) in aliases

    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=stack.s3.url,
        aws_access_key_id=TEST_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=TEST_CREDENTIALS["AWS_DEFAULT_REGION"],
    )
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="ladder")["Contents"]]
    assert any(f"/{run_id}/artifacts/gnolr/" in k for k in keys), keys[:20]
    assert any(k.endswith("bundle/manifest.json") for k in keys), keys[:20]

    import mlflow

    from serving.resolve import LiveBundle

    before = mlflow.get_tracking_uri()  # the service's processes read MLFLOW_TRACKING_URI
    monkeypatch.setenv("MLFLOW_TRACKING_URI", stack.mlflow.url)
    mlflow.set_tracking_uri(stack.mlflow.url)
    try:
        live = LiveBundle("models:/ladder-gnolr@champion")
    finally:
        mlflow.set_tracking_uri(before)
    assert live.current.model_version == current_version(work / "data/serving")
    assert live.source_version == "ladder-gnolr/1"


# the stages whose outputs the session's tiny pipeline (conftest.pipeline_dir) produced
BUILT = ("ingest", "features", "train_gnolr", "train_relmf", "evaluate", "train_plove", "index")


def test_dvc_pushes_to_the_s3_remote_and_a_clone_pulls_the_same_outputs(
    stack, pipeline_dir, tmp_path
):
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {**dvc_repo(repo, TINY_PARAMS), **stack.env}
    shutil.copytree(pipeline_dir / "data", repo / "data")
    run([sys.executable, "-m", "dvc", "commit", "-f", "-q", *BUILT], repo, env)  # → dvc.lock
    run([sys.executable, "-m", "pipelines.team_stack", "dvc-remote"], repo, env)
    config = (repo / ".dvc/config").read_text()
    assert "s3://ladder/dvc" in config and stack.s3.url in config
    pushed = run([sys.executable, "-m", "dvc", "push"], repo, env)
    assert "pushed" in pushed

    git = {**env, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t"}
    git["GIT_COMMITTER_EMAIL"] = "t@t"
    run(["git", "add", "-A"], repo, git)
    run(["git", "commit", "-qm", "pipeline"], repo, git)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path, git)
    assert not (clone / "data/serving").exists()
    run([sys.executable, "-m", "dvc", "pull", *BUILT], clone, env)
    for out in ("data/serving", "data/features", "data/models/gnolr", "data/ingest"):
        compared = filecmp.dircmp(repo / out, clone / out)
        assert not (compared.left_only or compared.right_only or compared.diff_files), out
    assert current_version(clone / "data/serving") == current_version(repo / "data/serving")
    status = run([sys.executable, "-m", "dvc", "status", "--cloud", *BUILT], clone, env)
    assert "in sync" in status or "up to date" in status, status


def register_bundle(directory: Path, version: str, broken: bool = False) -> str:
    """Register a copy of ``directory`` (model_version ``version``) as a new ladder-gnolr version
    at the tracking server the environment names; returns the registry version."""
    import mlflow

    class Bundle(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input

    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "bundle"
        shutil.copytree(directory, copy)
        manifest = json.loads((copy / "manifest.json").read_text())
        (copy / "manifest.json").write_text(json.dumps({**manifest, "model_version": version}))
        if broken:
            (copy / "index.faiss").unlink()
        mlflow.set_experiment("team-test")
        with mlflow.start_run():
            info = mlflow.pyfunc.log_model(
                name="gnolr_bundle",
                python_model=Bundle(),
                artifacts={"bundle": str(copy)},
                pip_requirements=[],
                registered_model_name="ladder-gnolr",
            )
    return str(info.registered_model_version)


def worker_versions(url: str, want: int = 2, timeout: float = 60) -> dict[int, dict]:
    """/bundle of each worker: new connections until ``want`` distinct workers have answered."""
    seen: dict[int, dict] = {}
    deadline = time.monotonic() + timeout
    while len(seen) < want and time.monotonic() < deadline:
        status = httpx.post(f"{url}/bundle", json={}, timeout=30).json()  # one connection each
        seen[status["worker_pid"]] = status
    assert len(seen) == want, f"only workers {sorted(seen)} answered in {timeout:.0f} s"
    return seen


def all_workers_refused(url: str, source: str, timeout: float) -> bool:
    """Whether, within ``timeout`` seconds, every worker's /bundle reports an error naming
    ``source`` (the version it tried and refused to load)."""
    start = time.monotonic()
    refused: dict[int, bool] = {}
    while time.monotonic() - start < timeout:
        status = httpx.post(f"{url}/bundle", json={}, timeout=30).json()
        refused[status["worker_pid"]] = source in (status.get("error") or "")
        if len(refused) == 2 and all(refused.values()):
            return True
        time.sleep(0.05)
    return False


def all_workers_serve(url: str, version: str, timeout: float) -> float | None:
    """Seconds until every worker's /bundle reports ``version`` (asked afresh), None on timeout."""
    start = time.monotonic()
    latest: dict[int, str] = {}
    while time.monotonic() - start < timeout:
        status = httpx.post(f"{url}/bundle", json={}, timeout=30).json()
        latest[status["worker_pid"]] = status["model_version"]
        if len(latest) == 2 and set(latest.values()) == {version}:
            return time.monotonic() - start
        time.sleep(0.05)
    return None


def test_two_workers_follow_the_alias_and_keep_the_old_bundle_when_the_new_one_is_broken(
    stack, tracked, tmp_path, monkeypatch
):
    repo = tracked
    monkeypatch.setenv("MLFLOW_TRACKING_URI", stack.mlflow.url)
    for key in S3_ENV:
        monkeypatch.delenv(key, raising=False)
    import mlflow

    previous_uri = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(stack.mlflow.url)
    client = mlflow.MlflowClient()
    first = current_version(repo / "data/serving")
    server = Server(
        "models:/ladder-gnolr@champion",
        tmp_path / "feedback",
        tmp_path / "server.log",
        env={
            "MLFLOW_TRACKING_URI": stack.mlflow.url,
            "LADDER_WORKERS": "2",
            "LADDER_POLL_SECONDS": str(POLL_SECONDS),
        },
    )
    try:
        server.wait_ready()
        before = worker_versions(server.url)
        assert {s["model_version"] for s in before.values()} == {first}

        v2 = register_bundle(bundle_dir(repo / "data/serving"), "team-v2")
        client.set_registered_model_alias("ladder-gnolr", "champion", v2)
        took = all_workers_serve(server.url, "team-v2", timeout=2 * POLL_SECONDS)
        assert took is not None, (
            f"not every worker serves team-v2 {2 * POLL_SECONDS:.0f} s after the alias moved: "
            f"{worker_versions(server.url)}"
        )
        users = pl.read_parquet(bundle_dir(repo / "data/serving") / "users.parquet")
        body = httpx.post(f"{server.url}/recommend", json={"user_id": users["user_id"][0], "k": 3})
        assert body.status_code == 200 and body.json()["model_version"] == "team-v2"
        assert body.json()["items"][0]["probabilities"] is not None

        v3 = register_bundle(bundle_dir(repo / "data/serving"), "team-v3-broken", broken=True)
        client.set_registered_model_alias("ladder-gnolr", "champion", v3)
        refused = all_workers_refused(
            server.url, f"ladder-gnolr/{v3}", timeout=2 * POLL_SECONDS + 1
        )
        assert refused, f"not every worker refused {v3}: {worker_versions(server.url)}"
        after = worker_versions(server.url)
        assert {s["model_version"] for s in after.values()} == {"team-v2"}
        for status in after.values():
            assert f"ladder-gnolr/{v3}" in status["error"] and "index.faiss" in status["error"]
        r = httpx.post(f"{server.url}/recommend", json={"user_id": "nobody", "k": 3})
        assert r.status_code == 200 and r.json()["model_version"] == "team-v2"
        reload = httpx.post(f"{server.url}/reload", json={}, headers=AUTH, timeout=60)
        assert reload.status_code == 409 and "team-v2" in reload.text
    finally:
        server.kill()
        mlflow.set_tracking_uri(previous_uri)
