"""The team's shared services on one machine: PostgreSQL, an S3 endpoint and an MLflow tracking server.

    python -m pipelines.team_stack up            # `make tracking-server`: start all three, Ctrl-C stops
    python -m pipelines.team_stack dvc-remote    # `make dvc-remote`: DVC remote on the same S3

``up`` starts (each only when not given one that already runs):

- **PostgreSQL** (``--backend-store-uri`` to use an existing one): a cluster in ``<dir>/postgres``
  created with ``initdb`` (as the ``postgres`` user when run as root: initdb refuses root), started
  with ``pg_ctl`` on 127.0.0.1 with trust authentication, database ``mlflow``. It holds the runs,
  parameters, metrics, tags and the model registry (versions, aliases).
- **an S3 endpoint** (``--s3-endpoint`` to use the team's S3 or MinIO): ``moto_server``, an
  in-memory S3 for trying the topology out and for tests; what it holds is gone when it stops.
  Bucket ``--bucket`` (default ``ladder``) holds MLflow's artifacts under ``mlartifacts/`` and DVC's
  cache under ``dvc/``.
- **mlflow server** on ``--port`` (default 5000) with ``--artifacts-destination
  s3://<bucket>/mlartifacts``: clients send runs and artifacts to it over HTTP and need neither
  database nor S3 credentials.

It writes ``<dir>/env`` (``source`` it) with ``MLFLOW_TRACKING_URI`` for the pipeline and the
service, and ``MLFLOW_S3_ENDPOINT_URL`` / ``AWS_*`` for DVC. Every component is a context manager,
so the tests start the same stack (tests/test_team.py).
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

BUCKET = "ladder"
TEST_CREDENTIALS = {  # moto accepts any; a real S3 takes the team's from the environment
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class StackError(RuntimeError):
    """A component did not start; the message carries the tail of its log."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_port_free(port: int, what: str) -> None:
    """Fail before starting ``what`` when 127.0.0.1:``port`` is taken (say so, not a late crash)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do: a listener
        try:  # fails, a closed connection's TIME_WAIT does not
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            raise StackError(
                f"{what}: port {port} on 127.0.0.1 is in use ({exc.strerror})"
            ) from exc


def _tail(path: Path, n: int = 3000) -> str:
    return path.read_bytes()[-n:].decode(errors="replace") if path.exists() else ""


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    """Until ``url`` answers 200, or fail with the log when the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(f"{proc.args[:3]} exited with {proc.returncode}:\n{_tail(log)}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as r:
            if r.status == 200:
                return
        time.sleep(0.3)
    raise StackError(f"{url} not up after {timeout:.0f} s:\n{_tail(log)}")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _stop(proc: subprocess.Popen | None, grace: float = 15) -> None:
    """Stop the process group we started, all of it (a server's workers too): SIGTERM, then
    SIGKILL for whatever is left after ``grace`` seconds."""
    if proc is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while (proc.poll() is None or _group_alive(proc.pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    if proc.poll() is None or _group_alive(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
        deadline = time.monotonic() + 5
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)


def postgres_bindir() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``: on PATH, else Debian's
    /usr/lib/postgresql/<version>/bin; None when PostgreSQL is not installed."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    return Path(candidates[0]).parent if candidates else None


@dataclass
class Postgres:
    """A PostgreSQL cluster in ``directory`` on 127.0.0.1:``port`` with database ``database``.

    Created with ``initdb`` on first use (trust authentication on loopback: a local stand-in, not a
    production set-up) and kept across restarts. As root, the cluster belongs to the ``postgres``
    user (initdb refuses root) and ``directory`` must be reachable by it.
    """

    directory: Path
    port: int = 5432
    database: str = "mlflow"
    user: str = "postgres"

    @property
    def uri(self) -> str:
        return f"postgresql+psycopg2://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def _run(self, *cmd: str) -> subprocess.CompletedProcess:
        bindir = postgres_bindir()
        if bindir is None:
            raise StackError("PostgreSQL is not installed (no initdb / pg_ctl found)")
        as_postgres = {"user": "postgres", "group": "postgres"} if os.geteuid() == 0 else {}
        out = subprocess.run(
            [str(bindir / cmd[0]), *cmd[1:]],
            capture_output=True,
            text=True,
            cwd=self.directory,
            **as_postgres,
        )
        if out.returncode:
            log = _tail(self.directory / "postgres.log")
            raise StackError(f"{cmd[0]} failed: {out.stdout}{out.stderr}\n{log}")
        return out

    def start(self) -> None:
        data = self.directory / "data"
        self.directory.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        if not (data / "PG_VERSION").exists():
            self._run("initdb", "-D", str(data), "-U", self.user, "-A", "trust", "-E", "UTF8")
        ensure_port_free(self.port, "PostgreSQL")
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1"
        self._run(
            "pg_ctl", "-D", str(data), "-l", str(self.directory / "postgres.log"),
            "-o", options, "-w", "-t", "120", "start",
        )  # fmt: skip
        self._create_database()

    def _create_database(self) -> None:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user, dbname="postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{self.database}"')
        finally:
            conn.close()

    def stop(self) -> None:
        if (self.directory / "data/postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.directory / "data"), "-m", "fast", "-w", "stop")

    def query(self, sql: str, args: tuple = ()) -> list[tuple]:
        """Rows of one SQL query against the database (tests, diagnostics)."""
        import psycopg2

        conn = psycopg2.connect(
            host="127.0.0.1", port=self.port, user=self.user, dbname=self.database
        )
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                return cur.fetchall()
        finally:
            conn.close()


@dataclass
class S3Endpoint:
    """``moto_server`` on 127.0.0.1:``port``: an in-memory S3 with ``bucket`` created."""

    log: Path
    port: int = 9000
    bucket: str = BUCKET
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> None:
        ensure_port_free(self.port, "moto_server")
        cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        self.proc = _popen(cmd, self.log, {**os.environ, **TEST_CREDENTIALS})
        _wait_http(f"{self.url}/moto-api/", self.proc, self.log, timeout)
        ensure_bucket(self.url, self.bucket)

    def stop(self) -> None:
        _stop(self.proc)


def ensure_bucket(endpoint: str, bucket: str) -> None:
    """Create ``bucket`` at ``endpoint`` unless it exists (credentials from the environment)."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, **_boto_credentials())
    names = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    if bucket not in names:
        s3.create_bucket(Bucket=bucket)


def _boto_credentials() -> dict[str, str]:
    env = {**TEST_CREDENTIALS, **{k: v for k, v in os.environ.items() if k in TEST_CREDENTIALS}}
    return {
        "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
        "region_name": env["AWS_DEFAULT_REGION"],
    }


def _popen(cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    """``cmd`` in a process group of its own (stopped as a whole), output to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


@dataclass
class MlflowServer:
    """``mlflow server`` on 127.0.0.1:``port``: runs and registry in ``backend_store_uri``,
    artifacts proxied to ``artifacts_destination`` (an ``s3://`` URI at ``s3_endpoint``)."""

    backend_store_uri: str
    artifacts_destination: str
    s3_endpoint: str | None
    log: Path
    port: int = 5000
    workers: int = 1
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
        if self.s3_endpoint:
            env["MLFLOW_S3_ENDPOINT_URL"] = self.s3_endpoint
            env = {**TEST_CREDENTIALS, **env}
        return env

    def start(self, timeout: float = 180) -> None:
        ensure_port_free(self.port, "mlflow server")
        cmd = [
            str(Path(sys.executable).with_name("mlflow")), "server",
            "--backend-store-uri", self.backend_store_uri,
            "--artifacts-destination", self.artifacts_destination,
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(self.workers),
        ]  # fmt: skip
        if self.workers > 1:  # uvicorn restarts a worker silent for 5 s: too short under load
            cmd += ["--uvicorn-opts", "--timeout-worker-healthcheck 60"]
        self.proc = _popen(cmd, self.log, self.environment())
        _wait_http(f"{self.url}/health", self.proc, self.log, timeout)

    def stop(self) -> None:
        _stop(self.proc)


@dataclass
class TeamStack:
    """PostgreSQL + S3 endpoint + mlflow server, each started here unless given."""

    directory: Path
    mlflow_port: int = 5000
    mlflow_workers: int = 1
    s3_port: int = 9000
    pg_port: int = 5432
    bucket: str = BUCKET
    backend_store_uri: str | None = None
    s3_endpoint: str | None = None
    postgres: Postgres | None = None
    s3: S3Endpoint | None = None
    mlflow: MlflowServer | None = None

    @property
    def env(self) -> dict[str, str]:
        """What the pipeline, the service and DVC need to use the stack."""
        endpoint = self.s3.url if self.s3 else self.s3_endpoint
        env = {"MLFLOW_TRACKING_URI": self.mlflow.url}
        if endpoint:
            env["MLFLOW_S3_ENDPOINT_URL"] = endpoint
        if self.s3 is not None:
            env |= TEST_CREDENTIALS
        return env

    @contextlib.contextmanager
    def running(self) -> Iterator[TeamStack]:
        """Start what is missing, yield, stop what was started (in reverse order)."""
        with contextlib.ExitStack() as started:
            uri = self.backend_store_uri
            if uri is None:
                self.postgres = Postgres(self.directory / "postgres", self.pg_port)
                self.postgres.start()
                started.callback(self.postgres.stop)
                uri = self.postgres.uri
            endpoint = self.s3_endpoint
            if endpoint is None:
                self.s3 = S3Endpoint(self.directory / "logs/s3.log", self.s3_port, self.bucket)
                started.callback(self.s3.stop)
                self.s3.start()
                endpoint = self.s3.url
            else:
                ensure_bucket(endpoint, self.bucket)
            self.mlflow = MlflowServer(
                uri,
                f"s3://{self.bucket}/mlartifacts",
                endpoint,
                self.directory / "logs/mlflow.log",
                self.mlflow_port,
                self.mlflow_workers,
            )
            started.callback(self.mlflow.stop)
            self.mlflow.start()
            yield self


def configure_dvc_remote(
    repo: Path, endpoint: str, url: str = f"s3://{BUCKET}/dvc", name: str = "team"
) -> None:
    """Make ``url`` at ``endpoint`` the default DVC remote of ``repo`` (in .dvc/config, to commit);
    credentials stay in the environment (or `dvc remote modify --local`)."""
    dvc = [sys.executable, "-m", "dvc"]
    existing = subprocess.run(
        [*dvc, "remote", "list"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.split()
    verb = ["modify", name, "url", url] if name in existing else ["add", "-d", name, url]
    for args in (verb, ["default", name], ["modify", name, "endpointurl", endpoint]):
        out = subprocess.run([*dvc, "remote", *args], cwd=repo, capture_output=True, text=True)
        if out.returncode:
            raise StackError(f"dvc remote {' '.join(args)} failed: {out.stdout}{out.stderr}")
    bucket = url.removeprefix("s3://").split("/", 1)[0]
    ensure_bucket(endpoint, bucket)


def write_env(path: Path, env: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"export {k}={v}\n" for k, v in env.items()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start PostgreSQL, the S3 endpoint and mlflow server")
    up.add_argument("--dir", type=Path, default=Path(".team"), help="state and logs")
    up.add_argument("--port", type=int, default=5000, help="mlflow server")
    up.add_argument("--workers", type=int, default=1, help="mlflow server processes")
    up.add_argument("--s3-port", type=int, default=9000, help="moto_server")
    up.add_argument("--pg-port", type=int, default=5432, help="PostgreSQL")
    up.add_argument("--bucket", default=BUCKET)
    up.add_argument("--backend-store-uri", help="use this database instead of starting one")
    up.add_argument("--s3-endpoint", help="use this S3 endpoint instead of starting moto_server")
    remote = sub.add_parser("dvc-remote", help="configure the S3 DVC remote of this repository")
    remote.add_argument("--endpoint", default=os.environ.get("MLFLOW_S3_ENDPOINT_URL"))
    remote.add_argument("--url", default=f"s3://{BUCKET}/dvc")
    remote.add_argument("--name", default="team")
    args = parser.parse_args(argv)

    if args.command == "dvc-remote":
        if not args.endpoint:
            sys.exit("dvc-remote: give --endpoint or set MLFLOW_S3_ENDPOINT_URL (source .team/env)")
        configure_dvc_remote(Path.cwd(), args.endpoint, args.url, args.name)
        print(f"dvc remote {args.name} → {args.url} at {args.endpoint} (default); now: dvc push")
        return

    directory = args.dir.resolve()
    if os.geteuid() == 0 and args.backend_store_uri is None:
        # the postgres user must reach the cluster: a private root-owned path would stop it
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o755)
    stack = TeamStack(
        directory,
        mlflow_port=args.port,
        mlflow_workers=args.workers,
        s3_port=args.s3_port,
        pg_port=args.pg_port,
        bucket=args.bucket,
        backend_store_uri=args.backend_store_uri,
        s3_endpoint=args.s3_endpoint,
    )
    stopping = False

    def interrupt(signum, frame) -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    try:
        with stack.running():
            write_env(directory / "env", stack.env)
            mlf, endpoint = stack.mlflow, stack.env.get("MLFLOW_S3_ENDPOINT_URL")
            print(f"mlflow server  {mlf.url}  (runs + registry: {mlf.backend_store_uri})")
            print(f"artifacts      {mlf.artifacts_destination} at {endpoint}")
            print(f"environment    source {directory / 'env'}  (then dvc repro, make dvc-remote)")
            print("Ctrl-C stops what was started here", flush=True)
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        print("stopped")
    except StackError as exc:
        sys.exit(f"team stack: {exc}")


if __name__ == "__main__":
    main()
