"""``scale.data.address`` joins a Ray cluster that is already running instead of starting one.

A head node is started with ``ray start --head --block`` in its own process group (2 CPUs, no
dashboard) and interrupted (SIGINT) as a group at the end; the ingest of a small log through the
stage's :func:`features.ray_engine.cluster` must run on it and match the embedded path.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from features.contract import EventNames, validate
from features.engine import DataEngineConfig
from features.sources.synthetic import SyntheticConfig, simulate


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def head_node(tmp_path):
    pytest.importorskip("ray.data", reason="the `scale` extra (ray[data]) is not installed")
    port = _free_port()
    ray_cli = Path(sys.executable).with_name("ray")
    cmd = [str(ray_cli), "start", "--head", f"--port={port}", "--num-cpus=2"]
    cmd += ["--include-dashboard=false", "--disable-usage-stats", "--block"]
    # Ray's own temp dir, short: its socket paths must stay under 107 bytes.
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    cmd += [f"--temp-dir={ray_tmp}"]
    log = open(tmp_path / "head.log", "w")  # noqa: SIM115  (closed below)
    # No token authentication on this throw-away loopback cluster (the driver's default mode).
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    # SIGINT back to its default in the child: a pytest-xdist worker ignores SIGINT, and an
    # ignored signal stays ignored across exec, so the head would never see the stop below
    head = subprocess.Popen(
        cmd,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if head.poll() is not None:
                pytest.fail(f"ray start exited: {(tmp_path / 'head.log').read_text()[-2000:]}")
            if "Ray runtime started" in (tmp_path / "head.log").read_text():
                break
            time.sleep(0.5)
        else:
            pytest.fail("the Ray head did not start within 90 s")
        yield address, head
    finally:
        # SIGINT: `ray start --block` shuts the node down in ~1.5 s; on SIGTERM it waits ~33 s
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGINT)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(head.pid, signal.SIGKILL)
        log.close()
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_ingest_joins_a_running_cluster_at_its_address(head_node, tmp_path):
    import ray

    from features import ray_engine

    raw, _ = simulate(
        SyntheticConfig(n_users=50, n_items=40, n_impressions=1_000, bad_row_fraction=0.02, seed=3),
        progress=False,
    )
    names = EventNames()
    address, head = head_node
    cfg = DataEngineConfig(engine="ray", address=address, buckets=2)
    with ray_engine.cluster(cfg):
        # The head's GCS (its node IP may replace 127.0.0.1), not a new local cluster.
        assert ray.get_runtime_context().gcs_address.endswith(address.split(":")[1])
        assert ray.cluster_resources()["CPU"] == 2
        summary = ray_engine.ingest(ray_engine.frame_input(raw, cfg), names, cfg, tmp_path / "out")
    assert not ray.is_initialized() and head.poll() is None  # disconnected; the cluster lives on
    valid, quarantine, report = validate(raw, names)
    assert summary.report == report
    events = pl.read_parquet(tmp_path / "out/events.parquet")
    assert_frame_equal(events.sort(pl.all()), valid.sort(pl.all()))
