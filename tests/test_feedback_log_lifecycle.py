"""The feedback log's life on a real disk: retention (archive, age, size), archives read like day
files, the Polars reader, disk faults on write and in the background fsync, free-space reporting."""

import errno
import gzip
import json
import logging
import os
import threading
import time
from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest
from pydantic import ValidationError

from features import feedback_log
from features.feedback_log import (
    FeedbackLog,
    ReadStats,
    RetentionConfig,
    apply_retention,
    archive_day,
    read_frame,
    read_records,
)
from features.sources.feedback import FIELDS, load_feedback

TODAY = date(2026, 3, 10)


def day(n: int) -> datetime:
    """Noon of the day ``n`` days before TODAY."""
    return datetime(2026, 3, 10 - n, 12, tzinfo=UTC)


def event(n: int, **extra) -> dict:
    return {
        "user_id": f"u{n}",
        "item_id": "i",
        "event": "click",
        "ts": "2026-03-01T00:00:00.000000+00:00",
        **extra,
    }


def a_log_of_days(tmp_path, days=(5, 4, 3, 1, 0), per_day=3) -> FeedbackLog:
    log = FeedbackLog(tmp_path)
    for d in days:
        log.append([event(d * 10 + i, slate_id=f"d{d}") for i in range(per_day)], when=day(d))
    return log


def names(tmp_path) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir())


# --- retention -------------------------------------------------------------------------------


def test_day_files_old_enough_are_archived_and_read_back_the_same(tmp_path):
    log = a_log_of_days(tmp_path)
    before = list(read_records(tmp_path))
    done = apply_retention(tmp_path, RetentionConfig(archive_after_days=2), today=TODAY)
    assert done["archived"] == [f"events-2026030{d}.jsonl" for d in (5, 6, 7)]
    assert names(tmp_path) == [
        "events-20260305.jsonl.gz",
        "events-20260306.jsonl.gz",
        "events-20260307.jsonl.gz",
        "events-20260309.jsonl",  # yesterday and today stay plain
        "events-20260310.jsonl",
    ]
    assert list(read_records(tmp_path)) == before
    assert [p.name for p in log.files()][0] == "events-20260305.jsonl.gz"
    frame = load_feedback(tmp_path)
    assert frame["user_id"].to_list() == [r["user_id"] for r in before]


def test_a_late_write_to_an_archived_day_is_merged_into_its_archive(tmp_path):
    log = a_log_of_days(tmp_path, days=(5,))
    apply_retention(tmp_path, RetentionConfig(), today=TODAY)
    log.append([event(99)], when=day(5))  # a day file again, beside its archive
    with open(log.path_for(day(5)), "ab") as fh:
        fh.write(b'{"user_id": "torn')  # and a writer killed mid-write
    assert [r["user_id"] for r in read_records(tmp_path)] == ["u50", "u51", "u52", "u99"]
    apply_retention(tmp_path, RetentionConfig(), today=TODAY)
    assert names(tmp_path) == ["events-20260305.jsonl.gz"]
    stats = ReadStats()
    assert [r["user_id"] for r in read_records(tmp_path, stats)] == ["u50", "u51", "u52", "u99"]
    assert stats.skipped_lines == 1  # the fragment, ended by a newline, never merges
    with gzip.open(tmp_path / "events-20260305.jsonl.gz") as fh:
        assert fh.read().endswith(b"\n")


def test_archives_older_than_max_age_are_deleted(tmp_path, caplog):
    a_log_of_days(tmp_path)
    policy = RetentionConfig(archive_after_days=2, max_age_days=4)
    with caplog.at_level(logging.INFO, logger="features.feedback_log"):
        done = apply_retention(tmp_path, policy, today=TODAY)
    assert done["deleted"] == ["events-20260305.jsonl.gz"]  # 5 days > 4
    assert "events-20260305.jsonl.gz" not in names(tmp_path)
    assert "deleted events-20260305.jsonl.gz (5 days old > max_age_days 4)" in caplog.text
    assert "archived events-20260306.jsonl" in caplog.text


def test_the_oldest_archives_go_first_when_the_log_is_above_max_bytes(tmp_path, caplog):
    a_log_of_days(tmp_path, per_day=200)
    apply_retention(tmp_path, RetentionConfig(), today=TODAY)
    sizes = {p.name: p.stat().st_size for p in tmp_path.iterdir()}
    recent = sizes["events-20260309.jsonl"] + sizes["events-20260310.jsonl"]
    cap = recent + sizes["events-20260307.jsonl.gz"]  # room for the newest archive only
    done = apply_retention(tmp_path, RetentionConfig(max_bytes=cap), today=TODAY)
    assert done["deleted"] == ["events-20260305.jsonl.gz", "events-20260306.jsonl.gz"]
    # below what the recent day files need: every archive goes, the day files stay, a warning says so
    with caplog.at_level(logging.WARNING, logger="features.feedback_log"):
        apply_retention(tmp_path, RetentionConfig(max_bytes=1), today=TODAY)
    assert names(tmp_path) == ["events-20260309.jsonl", "events-20260310.jsonl"]
    assert "above max_bytes 1, with no archive left to delete" in caplog.text


def test_retention_settings_are_validated():
    with pytest.raises(ValidationError, match="archive_after_days"):
        RetentionConfig(archive_after_days=0)
    with pytest.raises(ValidationError, match="at least archive_after_days"):
        RetentionConfig(archive_after_days=5, max_age_days=3)
    with pytest.raises(ValidationError, match="extra"):
        RetentionConfig(max_days=3)


def test_the_log_applies_its_retention_in_the_background(tmp_path):
    old = FeedbackLog(tmp_path)
    old.append([event(1)], when=datetime(2020, 1, 1, tzinfo=UTC))
    log = FeedbackLog(tmp_path, retention=RetentionConfig(archive_after_days=1))
    log.append([event(2)])  # the first write starts the background thread, which applies it
    archive = tmp_path / "events-20200101.jsonl.gz"
    plain = tmp_path / "events-20200101.jsonl"
    for _ in range(300):  # the archive is renamed into place before the day file is unlinked
        if archive.exists() and not plain.exists():
            break
        time.sleep(0.01)
    assert archive.exists() and not plain.exists()
    assert [r["user_id"] for r in read_records(tmp_path)] == ["u1", "u2"]


def test_retention_ages_days_by_the_logs_clock_not_the_real_date(tmp_path):
    today = datetime(2026, 3, 2, 12, tzinfo=UTC)  # long before the real date: its file stays
    log = FeedbackLog(
        tmp_path, retention=RetentionConfig(archive_after_days=1), clock=lambda: today
    )
    log.append([event(1)], when=today - timedelta(days=1))
    log.append([event(2)])  # no ``when``: the clock's day; starts the background retention
    assert log.path_for() == tmp_path / "events-20260302.jsonl"
    archive = tmp_path / "events-20260301.jsonl.gz"
    for _ in range(300):
        if archive.exists() and not (tmp_path / "events-20260301.jsonl").exists():
            break
        time.sleep(0.01)
    log._apply_retention()  # the pass again, in this thread: it has finished when it returns
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "events-20260301.jsonl.gz",
        "events-20260302.jsonl",
    ]
    assert [r["user_id"] for r in read_records(tmp_path)] == ["u1", "u2"]


def _append_many(log: FeedbackLog, worker: int, n: int, when: datetime) -> None:
    for i in range(n):
        log.append([event(i, w=worker)], when=when, durable=False)


def test_writers_racing_the_archiver_lose_nothing(tmp_path):
    """Writers appending to a day while it is archived again and again: every record survives once
    (a writer that finds its file archived under it opens a new one)."""
    when = day(5)
    log = FeedbackLog(tmp_path)
    writers = [threading.Thread(target=_append_many, args=(log, w, 150, when)) for w in range(3)]
    for t in writers:
        t.start()
    while any(t.is_alive() for t in writers):
        plain = log.path_for(when)
        if plain.exists():
            archive_day(plain)
    for t in writers:
        t.join()
    records = list(read_records(tmp_path))
    assert sorted((r["w"], r["user_id"]) for r in records) == sorted(
        (w, f"u{i}") for w in range(3) for i in range(150)
    )


# --- the Polars reader -----------------------------------------------------------------------


def messy_log(tmp_path) -> None:
    log = FeedbackLog(tmp_path)
    log.append([event(0, position=3, propensity=0.25, slate_id="s0", model_version="v1")])
    with open(log.path_for(), "ab") as fh:
        fh.write(b'{"user_id": "torn", "ite')  # a killed writer
    log.append(
        [
            event(1, position="first", propensity=0.5),  # mistyped: NaN, so it is quarantined
            event(2, position=None, propensity=5e-324),
            event(3, user_id=7),  # a number where text belongs
        ]
    )
    with open(log.path_for(), "ab") as fh:
        fh.write(b"[1, 2]\n\n   \nnull\n")
    log.append([event(4)], when=datetime(2026, 2, 1, tzinfo=UTC))
    apply_retention(tmp_path, RetentionConfig(), today=datetime.now(UTC).date())


@pytest.mark.parametrize("block_bytes", [1 << 20, 64], ids=["one block", "tiny blocks"])
def test_the_polars_reader_matches_the_json_reader(tmp_path, block_bytes):
    messy_log(tmp_path)
    assert any(p.name.endswith(".gz") for p in tmp_path.iterdir())
    expected_stats = ReadStats()
    expected = list(read_records(tmp_path, expected_stats))
    stats = ReadStats()
    frame = read_frame(tmp_path, FIELDS, stats, block_bytes=block_bytes)
    assert (stats.records, stats.skipped_lines) == (expected_stats.records, 3)
    assert expected_stats.skipped_lines == 3  # the fragment, [1, 2] and null; blank lines are none
    assert frame["user_id"].to_list() == ["u4", "u0", "u1", "u2", "7"]
    assert frame["user_id"].to_list() == [str(r["user_id"]) for r in expected]
    assert frame["slate_id"].to_list() == [None, "s0", None, None, None]
    position = frame["position"].to_list()
    assert position[:2] == [None, 3.0] and position[3:] == [None, None]
    assert frame["position"].is_nan().to_list()[2]  # "first"
    assert frame["propensity"].to_list() == [None, 0.25, 0.5, 5e-324, None]
    assert frame.schema == pl.Schema(FIELDS)


def test_an_empty_or_missing_log_reads_as_an_empty_frame(tmp_path):
    assert read_frame(tmp_path / "none", FIELDS).schema == pl.Schema(FIELDS)
    assert load_feedback(tmp_path).height == 0


# --- faults ----------------------------------------------------------------------------------


def test_a_failed_write_is_rolled_back_and_the_error_kept(tmp_path, monkeypatch):
    log = FeedbackLog(tmp_path)
    log.append([event(0)])
    before = log.path_for().read_bytes()

    def half_then_enospc(fd, data):
        os.write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(feedback_log, "_write_all", half_then_enospc)
    with pytest.raises(OSError) as info:
        log.append([event(1), event(2)])
    assert info.value.errno == errno.ENOSPC
    assert log.path_for().read_bytes() == before  # no half record left behind


def test_a_full_device_reports_enospc_even_though_the_rollback_fails_too(tmp_path):
    log = FeedbackLog(tmp_path)
    log.path_for().symlink_to("/dev/full")  # every write: ENOSPC; ftruncate: EINVAL
    with pytest.raises(OSError) as info:
        log.append([event(0)])
    assert info.value.errno == errno.ENOSPC


def test_background_fsync_failures_are_logged_counted_and_retried(tmp_path, monkeypatch, caplog):
    seen = []
    log = FeedbackLog(tmp_path, sync_interval_s=0.01, on_sync_failure=seen.append)
    log.append([event(0)])  # the day file exists: only the background fsync is left to fail

    def eio(fd):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(feedback_log, "_sync", eio)
    with caplog.at_level(logging.ERROR, logger="features.feedback_log"):
        log.append([event(1)], durable=False)
        for _ in range(300):
            if seen:
                break
            time.sleep(0.01)
    assert log.sync_failures >= 1 and seen[0].errno == errno.EIO
    assert "background fsync failed" in caplog.text and "Input/output error" in caplog.text
    assert log._dirty == {log.path_for()}  # still queued
    monkeypatch.undo()
    log.flush()
    assert not log._dirty
    assert [r["user_id"] for r in read_records(tmp_path)] == ["u0", "u1"]


def test_free_bytes_is_the_filesystems_free_space(tmp_path):
    log = FeedbackLog(tmp_path)
    stats = os.statvfs(tmp_path)
    assert abs(log.free_bytes() - stats.f_bavail * stats.f_frsize) < 1 << 30


def test_records_json_cannot_hold_are_refused_before_writing(tmp_path):
    log = FeedbackLog(tmp_path)
    with pytest.raises(ValueError):
        log.append([event(0, user_id="\ud800")])  # a lone surrogate
    assert list(read_records(tmp_path)) == []


def test_archives_are_plain_gzip(tmp_path):
    a_log_of_days(tmp_path, days=(3,))
    apply_retention(tmp_path, RetentionConfig(), today=TODAY)
    lines = gzip.decompress((tmp_path / "events-20260307.jsonl.gz").read_bytes()).splitlines()
    assert [json.loads(x)["user_id"] for x in lines] == ["u30", "u31", "u32"]
