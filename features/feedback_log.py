"""The durable feedback log: append-only JSON lines, one file per UTC day.

Writing (:meth:`FeedbackLog.append`): a batch of records is serialised to one byte string (one JSON
object per line) and appended with a single ``write`` on an ``O_APPEND`` descriptor while holding an
exclusive ``fcntl.flock`` on the file, so records from concurrent processes (BentoML workers, other
services) never interleave. With ``durable=True`` (``/feedback``) the file is then ``fsync``-ed before
:meth:`append` returns: a caller that acknowledges after :meth:`append` only acknowledges records
that are on disk. ``fsync`` runs after the lock is released (it flushes every writer's pages of the
file, so it still covers this batch) to let concurrent writers overlap their flushes. With
``durable=False`` (served slates, by default) the ``write`` is done before returning — the records
survive the process being killed — and a background thread fsyncs within ``sync_interval_s``
(group commit: one flush for all requests in the window), so a request does not wait for the disk.

A writer killed in the middle of a ``write`` can leave a torn last line. The next writer, under the
lock, sees that the file does not end with a newline and ends that fragment first, so its own
records start on a fresh line; readers skip the fragment (it was never acknowledged). A failed
``write`` is rolled back with ``ftruncate`` under the lock.

Reading (:func:`read_records`): every complete, parseable line of every file, in file order;
undecodable lines (torn fragments) are counted in :class:`ReadStats` and skipped.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

PREFIX = "events-"
SUFFIX = ".jsonl"


def _encode(records: Iterable[dict]) -> bytes:
    return b"".join(
        json.dumps(r, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode() + b"\n"
        for r in records
    )


class FeedbackLog:
    """Append-only log under ``directory`` (created if missing): ``events-YYYYMMDD.jsonl`` per UTC day.

    ``sync_interval_s`` is how long a ``durable=False`` append may wait for its ``fsync`` (done by
    a background thread that flushes every file written since its last pass, so concurrent
    requests share one flush).
    """

    def __init__(self, directory: str | Path, sync_interval_s: float = 0.05) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.sync_interval_s = sync_interval_s
        self._dirty: set[Path] = set()
        self._dirty_lock = threading.Lock()
        self._wake = threading.Event()
        self._flusher: threading.Thread | None = None

    def path_for(self, when: datetime | None = None) -> Path:
        when = when or datetime.now(UTC)
        return self.directory / f"{PREFIX}{when.astimezone(UTC):%Y%m%d}{SUFFIX}"

    def append(
        self, records: list[dict], when: datetime | None = None, durable: bool = True
    ) -> int:
        """Append ``records`` atomically; returns the number of bytes written.

        ``durable=True``: the records are fsync'd before this returns. ``durable=False``: they are
        written (in the kernel: they survive the process being killed) and fsync'd by the
        background thread within ``sync_interval_s`` — only an OS crash in that window loses them.
        Raises :class:`OSError` when the data could not be written or flushed (nothing is then
        acknowledged; a retry may duplicate records, which the ingest contract's dedup removes).
        """
        if not records:
            return 0
        data = _encode(records)
        path = self.path_for(when)
        created = not path.exists()
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    data = b"\n" + data  # end a torn fragment left by a killed writer
                try:
                    view = memoryview(data)
                    while view:  # regular files take the whole buffer; loop for safety
                        view = view[os.write(fd, view) :]
                except OSError:
                    os.ftruncate(fd, size)
                    raise
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        if created:  # make the new file's directory entry durable too
            _fsync_path(self.directory)
        if not durable:
            self._schedule(path)
        return len(data)

    def _schedule(self, path: Path) -> None:
        with self._dirty_lock:
            self._dirty.add(path)
            if self._flusher is None or not self._flusher.is_alive():
                self._flusher = threading.Thread(
                    target=self._flush_loop, name="feedback-log-fsync", daemon=True
                )
                self._flusher.start()
        self._wake.set()

    def _flush_loop(self) -> None:
        while True:
            self._wake.wait()
            time.sleep(self.sync_interval_s)  # let concurrent requests join this flush
            self._wake.clear()
            with contextlib.suppress(OSError):  # retried on the next pass; logged by callers
                self.flush()

    def flush(self) -> None:
        """fsync every file written with ``durable=False`` since the last flush."""
        with self._dirty_lock:
            paths, self._dirty = self._dirty, set()
        for path in paths:
            try:
                _fsync_path(path)
            except OSError:
                with self._dirty_lock:
                    self._dirty.add(path)
                raise

    def files(self) -> list[Path]:
        return log_files(self.directory)


def _fsync_path(path: Path) -> None:
    """fsync a file or directory by path (any descriptor flushes the file's dirty pages)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def log_files(directory: str | Path) -> list[Path]:
    """The log's files in time order (their names sort by day)."""
    return sorted(Path(directory).glob(f"{PREFIX}*{SUFFIX}"))


@dataclass
class ReadStats:
    records: int = 0
    skipped_lines: int = 0  # torn or unparseable lines


def read_records(directory: str | Path, stats: ReadStats | None = None) -> Iterator[dict]:
    """Every complete record of the log under ``directory``, oldest file first.

    A line is complete when it ends with a newline and decodes to a JSON object; anything else (a
    torn write) is skipped and counted in ``stats``. A missing directory yields nothing.
    """
    stats = stats if stats is not None else ReadStats()
    for path in log_files(directory):
        with open(path, "rb") as fh:
            for line in fh:
                if not line.endswith(b"\n"):
                    stats.skipped_lines += 1
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    stats.skipped_lines += bool(line.strip())
                    continue
                if not isinstance(record, dict):
                    stats.skipped_lines += 1
                    continue
                stats.records += 1
                yield record
