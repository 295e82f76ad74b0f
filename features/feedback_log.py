"""The durable feedback log: append-only JSON lines, one file per UTC day, old days archived.

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
A background fsync that fails is logged (one ERROR line per failure), counted in
:attr:`FeedbackLog.sync_failures`, passed to ``on_sync_failure`` and retried on the next pass.

A writer killed in the middle of a ``write`` can leave a torn last line. The next writer, under the
lock, sees that the file does not end with a newline and ends that fragment first, so its own
records start on a fresh line; readers skip the fragment (it was never acknowledged). A failed
``write`` (disk full, I/O error) is rolled back with ``ftruncate`` under the lock and its
:class:`OSError` raised — never masked by a failing rollback.

Retention (:class:`RetentionConfig`, params.yaml → ``feedback_log``): a day file at least
``archive_after_days`` old is compressed to ``events-YYYYMMDD.jsonl.gz`` (readers read archives
like day files); archives older than ``max_age_days`` are deleted, then the oldest archives while
the log is above ``max_bytes``. Each action is logged. Archiving holds the day file's lock, so no
writer appends to a file being archived (a writer that finds its file archived opens a new one), and
readers take a shared lock per day, so they see a day either before or after its archiving.

Reading: :func:`read_records` yields every complete, parseable record (dicts, for tools and tests);
:func:`read_frame` returns the same records as a Polars frame, parsed by Polars in blocks (no Python
object per record) — what ingest uses. Undecodable lines (torn fragments) are counted in
:class:`ReadStats` and skipped.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import io
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]  # returns the current time, timezone-aware


def utc_now() -> datetime:
    """The real clock (:data:`Clock`): ``datetime.now(UTC)``; tests pass a fixed one instead."""
    return datetime.now(UTC)


PREFIX = "events-"
SUFFIX = ".jsonl"
ARCHIVE_SUFFIX = ".jsonl.gz"
_NAME = re.compile(r"^events-(\d{8})\.jsonl(\.gz)?$")
BLOCK_BYTES = 64 << 20  # readers parse the log this many bytes at a time


class RetentionConfig(BaseModel):
    """params.yaml → ``feedback_log``: how long the service's feedback log keeps what, on disk."""

    model_config = ConfigDict(extra="forbid")

    archive_after_days: int = Field(
        2, ge=1, description="gzip a day file once it is this many days old (today is never)"
    )
    max_age_days: int | None = Field(
        None, ge=1, description="delete archives older than this many days; null: keep them"
    )
    max_bytes: int | None = Field(
        None, ge=0, description="delete the oldest archives while the log is larger; null: no cap"
    )
    check_interval_s: float = Field(
        3600, gt=0, description="how often the service's log applies the policy"
    )

    @classmethod
    def from_params_file(cls, path: str | Path) -> RetentionConfig:
        """The ``feedback_log`` section of a params.yaml (the defaults when it has none)."""
        path = Path(path)
        raw = yaml.safe_load(path.read_text()) if path.is_file() else None
        return cls.model_validate((raw or {}).get("feedback_log") or {})

    @model_validator(mode="after")
    def _archives_before_deletion(self) -> RetentionConfig:
        if self.max_age_days is not None and self.max_age_days < self.archive_after_days:
            raise ValueError(
                f"max_age_days ({self.max_age_days}) must be at least archive_after_days "
                f"({self.archive_after_days}): only archives are deleted"
            )
        return self


def _encode(records: Iterable[dict]) -> bytes:
    return b"".join(
        json.dumps(r, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode() + b"\n"
        for r in records
    )


# The two system calls a disk can fail, as seams for fault-injection tests.
def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:  # regular files take the whole buffer; loop for safety
        view = view[os.write(fd, view) :]


def _sync(fd: int) -> None:
    os.fsync(fd)


class FeedbackLog:
    """Append-only log under ``directory`` (created if missing): ``events-YYYYMMDD.jsonl`` per UTC day.

    ``sync_interval_s`` is how long a ``durable=False`` append may wait for its ``fsync`` (done by
    a background thread that flushes every file written since its last pass, so concurrent
    requests share one flush). With a ``retention`` policy, the same thread applies it once the log
    is first written to and then every ``retention.check_interval_s``. ``on_sync_failure`` is called
    with each background fsync's :class:`OSError` (e.g. to count it in a metric). ``clock`` (the real
    UTC clock) gives the day of an append without ``when`` and the "today" retention ages days from.
    """

    def __init__(
        self,
        directory: str | Path,
        sync_interval_s: float = 0.05,
        retention: RetentionConfig | None = None,
        on_sync_failure: Callable[[OSError], None] | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self.directory = Path(directory)
        self.clock = clock
        self.directory.mkdir(parents=True, exist_ok=True)
        self.sync_interval_s = sync_interval_s
        self.retention = retention
        self.on_sync_failure = on_sync_failure
        self.sync_failures = 0
        self._dirty: set[Path] = set()
        self._dirty_lock = threading.Lock()
        self._wake = threading.Event()
        self._background: threading.Thread | None = None
        self._next_retention = 0.0  # monotonic time of the next retention pass

    def path_for(self, when: datetime | None = None) -> Path:
        when = when or self.clock()
        return self.directory / f"{PREFIX}{when.astimezone(UTC):%Y%m%d}{SUFFIX}"

    def append(
        self, records: list[dict], when: datetime | None = None, durable: bool = True
    ) -> int:
        """Append ``records`` atomically; returns the number of bytes written.

        ``durable=True``: the records are fsync'd before this returns. ``durable=False``: they are
        written (in the kernel: they survive the process being killed) and fsync'd by the
        background thread within ``sync_interval_s`` — only an OS crash in that window loses them.
        Raises :class:`OSError` when the data could not be written or flushed (nothing is then
        acknowledged; a retry may duplicate records, which the ingest contract's dedup removes),
        :class:`ValueError` for a record JSON cannot hold (NaN, a lone surrogate) — before anything
        is written.
        """
        if not records:
            return 0
        data = _encode(records)
        path = self.path_for(when)
        created, fd = self._open_locked(path)
        try:
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    data = b"\n" + data  # end a torn fragment left by a killed writer
                try:
                    _write_all(fd, data)
                except OSError:
                    with contextlib.suppress(OSError):  # the write's error is the one to report
                        os.ftruncate(fd, size)
                    raise
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
            if durable:
                _sync(fd)
        finally:
            os.close(fd)
        if created:  # make the new file's directory entry durable too
            _fsync_path(self.directory)
        self._schedule(None if durable else path)
        return len(data)

    def _open_locked(self, path: Path) -> tuple[bool, int]:
        """``(created, fd)`` of ``path`` opened for appending and locked exclusively.

        A file archived while this writer waited for its lock has no name any more (``st_nlink``
        0): writing there would lose the records, so the day file is opened again.
        """
        while True:
            created = not path.exists()
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if os.fstat(fd).st_nlink > 0:
                    return created, fd
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)

    def _schedule(self, path: Path | None) -> None:
        with self._dirty_lock:
            if path is not None:
                self._dirty.add(path)
            if self._background is None or not self._background.is_alive():
                self._background = threading.Thread(
                    target=self._background_loop, name="feedback-log", daemon=True
                )
                self._background.start()
        if path is not None:
            self._wake.set()

    def _background_loop(self) -> None:
        while True:
            timeout = None
            if self.retention is not None:
                if time.monotonic() >= self._next_retention:
                    self._apply_retention()
                timeout = max(0.0, self._next_retention - time.monotonic())
            if not self._wake.wait(timeout=timeout):
                continue  # time for retention, nothing to flush
            time.sleep(self.sync_interval_s)  # let concurrent requests join this flush
            self._wake.clear()
            try:
                self.flush()
            except OSError as exc:
                self._sync_failed(exc)

    def _apply_retention(self) -> None:
        self._next_retention = time.monotonic() + self.retention.check_interval_s
        try:
            apply_retention(self.directory, self.retention, self.clock().astimezone(UTC).date())
        except OSError as exc:
            log.error("feedback log retention failed in %s: %s", self.directory, exc)

    def _sync_failed(self, exc: OSError) -> None:
        self.sync_failures += 1
        log.error(
            "feedback log background fsync failed (%s); the file stays queued for the next pass "
            "(failure %d of this process)",
            exc,
            self.sync_failures,
        )
        if self.on_sync_failure is not None:
            self.on_sync_failure(exc)

    def flush(self) -> None:
        """fsync every file written with ``durable=False`` since the last flush."""
        with self._dirty_lock:
            paths, self._dirty = self._dirty, set()
        for n, path in enumerate(sorted(paths)):
            try:
                _fsync_path(path)
            except FileNotFoundError:
                continue  # archived meanwhile: the archive was fsync'd when it was written
            except OSError:
                with self._dirty_lock:
                    self._dirty.update(sorted(paths)[n:])
                raise

    def free_bytes(self) -> int:
        """Bytes available to this process on the log's filesystem."""
        stats = os.statvfs(self.directory)
        return stats.f_bavail * stats.f_frsize

    def files(self) -> list[Path]:
        return log_files(self.directory)


def _fsync_path(path: Path) -> None:
    """fsync a file or directory by path (any descriptor flushes the file's dirty pages)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        _sync(fd)
    finally:
        os.close(fd)


def day_of(path: Path) -> date | None:
    """The UTC day of a log file's name (``events-YYYYMMDD.jsonl[.gz]``), None for other names."""
    match = _NAME.match(path.name)
    return None if match is None else datetime.strptime(match[1], "%Y%m%d").date()


def log_files(directory: str | Path) -> list[Path]:
    """The log's day files and archives, oldest day first (a day's archive before its file)."""
    found = [p for p in Path(directory).glob(f"{PREFIX}*") if day_of(p) is not None]
    return sorted(found, key=lambda p: (day_of(p), p.name.endswith(SUFFIX)))


# --------------------------------------------------------------------------- retention


def archive_day(plain: Path) -> Path | None:
    """Compress the day file ``plain`` into its ``.gz`` archive; returns the archive (None when
    another process archived it first).

    Under the day file's exclusive lock: the archive is rewritten as its old bytes plus one more
    gzip member holding the day file (a multi-member gzip reads as one stream), ending with a
    newline so a torn fragment cannot merge with what follows; it is fsync'd and renamed into place,
    then the day file is unlinked.
    """
    archive = plain.with_name(plain.name + ".gz")
    fd = os.open(plain, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_nlink == 0:
            return None
        tmp_fd, tmp = tempfile.mkstemp(prefix=f".{archive.name}.", dir=plain.parent)
        try:
            with os.fdopen(tmp_fd, "wb") as out:
                if archive.exists():
                    with open(archive, "rb") as old:
                        shutil.copyfileobj(old, out)
                with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as gz:
                    last = b"\n"
                    with os.fdopen(os.dup(fd), "rb") as src:
                        src.seek(0)
                        for block in iter(lambda: src.read(1 << 20), b""):
                            gz.write(block)
                            last = block[-1:]
                    if last != b"\n":
                        gz.write(b"\n")
                out.flush()
                _sync(out.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, archive)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        _fsync_path(plain.parent)
        plain.unlink()
        _fsync_path(plain.parent)
        return archive
    finally:
        os.close(fd)


def apply_retention(
    directory: str | Path, policy: RetentionConfig, today: date | None = None
) -> dict[str, list[str]]:
    """Archive, then delete by age, then by size; returns the file names per action.

    Day files younger than ``archive_after_days`` are never touched, whatever the size cap says.
    """
    directory = Path(directory)
    today = today or datetime.now(UTC).date()
    done: dict[str, list[str]] = {"archived": [], "deleted": []}
    for path in log_files(directory):
        age = (today - day_of(path)).days
        due = path.name.endswith(SUFFIX) and age >= policy.archive_after_days
        if due and archive_day(path) is not None:
            log.info("feedback log: archived %s (%d days old)", path.name, age)
            done["archived"].append(path.name)
    archives = [p for p in log_files(directory) if p.name.endswith(ARCHIVE_SUFFIX)]
    if policy.max_age_days is not None:
        for path in list(archives):
            age = (today - day_of(path)).days
            if age > policy.max_age_days:
                path.unlink(missing_ok=True)
                archives.remove(path)
                log.warning(
                    "feedback log: deleted %s (%d days old > max_age_days %d)",
                    path.name,
                    age,
                    policy.max_age_days,
                )
                done["deleted"].append(path.name)
    if policy.max_bytes is not None:
        total = sum(p.stat().st_size for p in log_files(directory))
        while total > policy.max_bytes and archives:
            path = archives.pop(0)
            size = path.stat().st_size
            path.unlink(missing_ok=True)
            total -= size
            log.warning(
                "feedback log: deleted %s (%d bytes; the log is above max_bytes %d)",
                path.name,
                size,
                policy.max_bytes,
            )
            done["deleted"].append(path.name)
        if total > policy.max_bytes:
            log.warning(
                "feedback log is %d bytes, above max_bytes %d, with no archive left to delete",
                total,
                policy.max_bytes,
            )
    if done["archived"] or done["deleted"]:
        _fsync_path(directory)
    return done


# --------------------------------------------------------------------------- reading


@dataclass
class ReadStats:
    records: int = 0
    skipped_lines: int = 0  # torn or unparseable lines


def _days(directory: Path) -> list[date]:
    return sorted({day_of(p) for p in log_files(directory)})


@contextlib.contextmanager
def _day_streams(directory: Path, day: date) -> Iterator[list[io.BufferedIOBase]]:
    """The day's archive and day file as binary streams, under a shared lock on the day file, so
    an archiving in progress is seen before or after, never halfway (see :func:`archive_day`)."""
    plain = directory / f"{PREFIX}{day:%Y%m%d}{SUFFIX}"
    archive = plain.with_name(plain.name + ".gz")
    with contextlib.ExitStack() as stack:
        current = None
        with contextlib.suppress(FileNotFoundError):
            current = stack.enter_context(open(plain, "rb"))
        if current is not None:
            fcntl.flock(current.fileno(), fcntl.LOCK_SH)
            if os.fstat(current.fileno()).st_nlink == 0:  # archived while this reader waited
                current = None
        streams: list[io.BufferedIOBase] = []
        with contextlib.suppress(FileNotFoundError):
            streams.append(stack.enter_context(gzip.open(archive, "rb")))
        if current is not None:
            streams.append(current)
        yield streams


def _blocks(stream: io.BufferedIOBase, block_bytes: int) -> Iterator[tuple[bytes, bool]]:
    """``(bytes, complete)`` pieces of ``stream``: whole lines, then a last piece without a newline
    (``complete=False``: a torn fragment) if the stream ends with one."""
    carry = b""
    for block in iter(lambda: stream.read(block_bytes), b""):
        block = carry + block
        cut = block.rfind(b"\n") + 1
        carry = block[cut:]
        if cut:
            yield block[:cut], True
    if carry:
        yield carry, False


def _log_blocks(
    directory: str | Path, stats: ReadStats, block_bytes: int = BLOCK_BYTES
) -> Iterator[bytes]:
    """Blocks of complete lines of the whole log, oldest day first; torn tails are counted."""
    directory = Path(directory)
    for day in _days(directory):
        with _day_streams(directory, day) as streams:
            for stream in streams:
                for block, complete in _blocks(stream, block_bytes):
                    if complete:
                        yield block
                    elif block.strip():
                        stats.skipped_lines += 1


def read_records(directory: str | Path, stats: ReadStats | None = None) -> Iterator[dict]:
    """Every complete record of the log under ``directory`` (day files and archives), oldest first.

    A line is complete when it ends with a newline and decodes to a JSON object; anything else (a
    torn write) is skipped and counted in ``stats``. A missing directory yields nothing.
    """
    stats = stats if stats is not None else ReadStats()
    for block in _log_blocks(directory, stats):
        for line in block.splitlines():
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


def read_frame(
    directory: str | Path,
    fields: dict[str, pl.DataType],
    stats: ReadStats | None = None,
    block_bytes: int = BLOCK_BYTES,
) -> pl.DataFrame:
    """The records of :func:`read_records` as a frame of ``fields`` (missing keys are null).

    String fields take any JSON scalar as text; numeric fields take numbers, and anything else
    (text, an object) becomes NaN, so a validator sees a value that is there but wrong. Parsed by
    Polars one block of lines at a time; a block holding an undecodable line falls back to
    :mod:`json` for that block only.
    """
    stats = stats if stats is not None else ReadStats()
    frames = [_parse_block(b, fields, stats) for b in _log_blocks(directory, stats, block_bytes)]
    frames = [f for f in frames if f.height]
    return pl.concat(frames) if frames else pl.DataFrame(schema=fields)


def _parse_block(block: bytes, fields: dict[str, pl.DataType], stats: ReadStats) -> pl.DataFrame:
    # JSON lines never hold a raw 0x1f or quote-delimited fields: read each line as one text cell
    lines = pl.read_csv(
        io.BytesIO(block),
        has_header=False,
        separator="\x1f",
        quote_char=None,
        schema={"line": pl.String},
        truncate_ragged_lines=True,
        encoding="utf8-lossy",
    )["line"].str.strip_chars()
    lines = lines.filter(lines.str.len_bytes() > 0)
    objects = lines.filter(lines.str.starts_with("{"))
    stats.skipped_lines += lines.len() - objects.len()
    if objects.is_empty():
        return pl.DataFrame(schema=fields)
    try:
        frame = objects.str.json_decode(pl.Struct(fields)).struct.unnest()
    except pl.exceptions.PolarsError:
        frame = _parse_lines_with_json(objects, fields, stats)
    stats.records += frame.height
    return frame


def _parse_lines_with_json(
    lines: pl.Series, fields: dict[str, pl.DataType], stats: ReadStats
) -> pl.DataFrame:
    """The slow path of :func:`_parse_block`, for a block with a torn or mistyped line."""
    rows = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            stats.skipped_lines += 1
            continue
        if not isinstance(record, dict):
            stats.skipped_lines += 1
            continue
        rows.append({k: _coerce(record.get(k), dtype) for k, dtype in fields.items()})
    return pl.DataFrame(rows, schema=fields, orient="row") if rows else pl.DataFrame(schema=fields)


def _coerce(value, dtype: pl.DataType):
    if value is None:
        return None
    if dtype.is_numeric():
        return float(value) if isinstance(value, int | float) else float("nan")
    return value if isinstance(value, str) else json.dumps(value)
