"""Durability that a process kill cannot show: an ``os.fsync`` spy proves the feedback log reaches
the disk before ``/feedback`` acknowledges and that the background group commit really fsyncs.

A SIGKILL test cannot see a missing fsync (the page cache outlives the process), so these tests
record every ``fsync`` — which file, and how many bytes it held at that moment — and make it fail.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from features.feedback_log import FeedbackLog, read_records
from serving.bundle import bundle_dir
from tests.asgi import serving

NOON = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)  # one day file, whatever the clock says


class FsyncSpy:
    """Wraps ``os.fsync``: records (path, size at the fsync) and can be told to fail."""

    def __init__(self, real) -> None:
        self.real = real
        self.calls: list[tuple[str, int]] = []
        self.fail = False

    def __call__(self, fd: int) -> None:
        self.calls.append((os.readlink(f"/proc/self/fd/{fd}"), os.fstat(fd).st_size))
        if self.fail:
            raise OSError(5, "Input/output error (injected)")
        self.real(fd)

    def synced(self, path: Path) -> int:
        """The largest size ``path`` had when it was fsync'd (-1: never)."""
        return max((size for p, size in self.calls if p == str(path)), default=-1)


@pytest.fixture
def spy(monkeypatch) -> FsyncSpy:
    spy = FsyncSpy(os.fsync)
    monkeypatch.setattr(os, "fsync", spy)
    return spy


def test_a_durable_append_is_fsynced_whole_before_it_returns(tmp_path, spy):
    log = FeedbackLog(tmp_path)
    log.append([{"n": 0}], durable=True)
    path = log.files()[0]
    assert spy.synced(path) == path.stat().st_size > 0
    assert str(tmp_path) in {p for p, _ in spy.calls}  # and the new file's directory entry


def test_a_durable_append_whose_fsync_fails_raises(tmp_path, spy):
    spy.fail = True
    with pytest.raises(OSError, match="injected"):
        FeedbackLog(tmp_path).append([{"n": 0}], durable=True)


def test_the_background_commit_fsyncs_every_written_byte(tmp_path, spy):
    log = FeedbackLog(tmp_path, sync_interval_s=0.01)
    log.append([{"n": 0}], when=NOON, durable=False)
    log.append([{"n": 1}], when=NOON, durable=False)
    path = log.path_for(NOON)
    deadline = time.monotonic() + 10
    while spy.synced(path) < path.stat().st_size and time.monotonic() < deadline:
        time.sleep(0.01)
    assert spy.synced(path) == path.stat().st_size  # both batches, by the thread, unasked


def test_a_failed_background_fsync_is_retried_not_forgotten(tmp_path, spy):
    log = FeedbackLog(tmp_path, sync_interval_s=3600)  # the thread sleeps; flush by hand
    log.append([{"n": 0}], durable=False)
    path = log.files()[0]
    spy.fail = True
    with pytest.raises(OSError):
        log.flush()
    spy.fail = False
    spy.calls.clear()
    log.flush()  # the path stayed pending: this pass fsyncs it
    assert spy.synced(path) == path.stat().st_size


@pytest.fixture
def feedback_client(pipeline_dir, tmp_path):
    with serving(pipeline_dir / "data/serving", tmp_path / "log") as client:
        yield client, tmp_path / "log"


def _click(pipeline_dir: Path) -> dict:
    import polars as pl

    serving_dir = bundle_dir(pipeline_dir / "data/serving")  # the CURRENT version
    user = pl.read_parquet(serving_dir / "users.parquet")["user_id"][0]
    item = pl.read_parquet(serving_dir / "items.parquet")["item_id"][0]
    now = datetime.now(UTC).isoformat()  # the service refuses events far from its clock
    return {"user_id": user, "item_id": item, "event": "click", "ts": now}


def test_feedback_is_acknowledged_only_once_fsynced(feedback_client, pipeline_dir, spy):
    client, log_dir = feedback_client
    click = _click(pipeline_dir)
    response = client.post("/feedback", json={"events": [click]})
    assert response.status_code == 200, response.text
    (path,) = FeedbackLog(log_dir).files()
    assert spy.synced(path) == path.stat().st_size  # fsynced with the event, before the 200
    # If the disk cannot flush, the client must not be told the event is safe.
    spy.fail = True
    refused = client.post("/feedback", json={"events": [click]})
    assert refused.status_code == 503, refused.text
    assert "feedback log unavailable" in refused.json()["error"], refused.text
    assert len(list(read_records(log_dir))) >= 1
