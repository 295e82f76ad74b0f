"""The durable feedback log: atomic appends across processes, torn tails, day files, the reader."""

import json
import multiprocessing as mp
import os
import time
from datetime import UTC, datetime

import pytest

from features.feedback_log import FeedbackLog, ReadStats, read_records

NOON = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)  # a fixed day, so no test depends on the clock


def test_appended_records_read_back_in_order(tmp_path):
    log = FeedbackLog(tmp_path / "fb")
    log.append([{"n": 0, "s": "é ☃"}, {"n": 1}])
    log.append([{"n": 2}])
    assert log.append([]) == 0
    stats = ReadStats()
    assert list(read_records(tmp_path / "fb", stats)) == [{"n": 0, "s": "é ☃"}, {"n": 1}, {"n": 2}]
    assert (stats.records, stats.skipped_lines) == (3, 0)


def test_a_torn_tail_is_skipped_and_never_swallows_the_next_batch(tmp_path):
    log = FeedbackLog(tmp_path)
    log.append([{"n": 0}], when=NOON)  # one day for all: the test must not depend on the clock
    with open(log.path_for(NOON), "ab") as fh:  # a writer killed in the middle of its write
        fh.write(b'{"n": 1, "user_id": "u')
    stats = ReadStats()
    assert [r["n"] for r in read_records(tmp_path, stats)] == [0]
    assert stats.skipped_lines == 1  # the fragment has no newline: incomplete
    log.append([{"n": 2}, {"n": 3}], when=NOON)
    stats = ReadStats()
    assert [r["n"] for r in read_records(tmp_path, stats)] == [0, 2, 3]
    assert stats.skipped_lines == 1  # now a complete but unparseable line


def test_one_file_per_utc_day_read_oldest_first(tmp_path):
    log = FeedbackLog(tmp_path)
    log.append([{"day": 2}], when=datetime(2026, 1, 2, 0, 30, tzinfo=UTC))
    log.append([{"day": 1}], when=datetime(2026, 1, 1, 23, 59, tzinfo=UTC))
    assert [p.name for p in log.files()] == ["events-20260101.jsonl", "events-20260102.jsonl"]
    assert [r["day"] for r in read_records(tmp_path)] == [1, 2]


def test_a_missing_directory_reads_as_empty(tmp_path):
    assert list(read_records(tmp_path / "nothing")) == []


def test_non_finite_numbers_are_refused_before_anything_is_written(tmp_path):
    log = FeedbackLog(tmp_path)
    with pytest.raises(ValueError):
        log.append([{"ok": 1}, {"propensity": float("nan")}])
    assert list(read_records(tmp_path)) == []


def _writer(directory: str, worker: int, n_batches: int, go) -> None:
    log = FeedbackLog(directory)
    pad = "x" * 3000  # batches of ~15 kB: far above PIPE_BUF, so only the lock keeps them whole
    go.wait(60)  # every writer starts once all are ready, so that their appends overlap
    for b in range(n_batches):
        log.append([{"w": worker, "b": b, "i": i, "pad": pad} for i in range(5)], when=NOON)


def test_concurrent_processes_never_interleave_records(tmp_path):
    n_workers, n_batches = 4, 60
    # spawned, not forked: a child forked from pytest inherits its thread pools mid-state (a DDP
    # rank forked that way aborted CI with "malloc(): unaligned tcache chunk detected")
    ctx = mp.get_context("spawn")
    go = ctx.Barrier(n_workers)
    procs = [
        ctx.Process(target=_writer, args=(str(tmp_path), w, n_batches, go))
        for w in range(n_workers)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    lines = FeedbackLog(tmp_path).path_for(NOON).read_bytes().split(b"\n")
    assert lines[-1] == b""
    records = [json.loads(line) for line in lines[:-1]]  # every line is one whole record
    keys = [(r["w"], r["b"], r["i"]) for r in records]
    assert sorted(keys) == [
        (w, b, i) for w in range(n_workers) for b in range(n_batches) for i in range(5)
    ]
    # each batch is contiguous: its 5 records were written by one write under the lock
    for n in range(0, len(records), 5):
        assert len({(r["w"], r["b"]) for r in records[n : n + 5]}) == 1


def test_the_file_is_created_readable_by_others(tmp_path):
    log = FeedbackLog(tmp_path)
    log.append([{"n": 0}])
    (path,) = log.files()
    assert os.stat(path).st_mode & 0o044


def test_non_durable_appends_are_visible_at_once_and_flushed_in_the_background(tmp_path):
    log = FeedbackLog(tmp_path, sync_interval_s=0.01)
    log.append([{"n": 0}], durable=False)
    assert [r["n"] for r in read_records(tmp_path)] == [0]  # written before append returned
    for _ in range(200):  # the group-commit thread fsyncs the file and forgets it
        with log._dirty_lock:
            if not log._dirty:
                break
        time.sleep(0.01)
    assert not log._dirty
    log.append([{"n": 1}], durable=False)
    log.flush()
    assert not log._dirty and [r["n"] for r in read_records(tmp_path)] == [0, 1]
