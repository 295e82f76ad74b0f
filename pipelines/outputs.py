"""Atomic stage outputs: a directory, a JSON file or a CSV appears whole or not at all.

Crash safety, all the way down: the new files (and, for a directory, every file and folder in it)
are fsync'd before the rename that publishes them, and the parent directory is fsync'd after it, so
a power cut leaves the old output or the new one, never an empty file under the new name. A
directory replaces the old one by ``renameat2(RENAME_EXCHANGE)`` where the kernel has it (Linux ≥
3.15: the path never stops existing); elsewhere the old one is renamed aside first, and a run killed
between the two renames has it put back by the next run. Temporaries are named
``.<name>.tmp-<pid>-<random>``: those of a process that is gone (SIGKILL, OOM, power cut) are
removed when the next run writes the same output.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import polars as pl

_LIBC = ctypes.CDLL(None, use_errno=True)
_RENAMEAT2 = getattr(_LIBC, "renameat2", None)
if _RENAMEAT2 is not None:
    _RENAMEAT2.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
AT_FDCWD = -100
RENAME_EXCHANGE = 2


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """fsync every file and directory under ``root`` (itself included), deepest first."""
    for folder, _, files in os.walk(root, topdown=False):
        for name in files:
            if not os.path.islink(os.path.join(folder, name)):
                _fsync(Path(folder, name))
        _fsync(Path(folder))


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (both must exist); False where the kernel or filesystem cannot."""
    if _RENAMEAT2 is None:
        return False
    if _RENAMEAT2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _temporary_name(path: Path) -> str:
    return f".{path.name}.tmp-{os.getpid()}-"


def remove_stale(path: str | Path) -> list[Path]:
    """Clean up after a killed writer of ``path``; returns what was removed.

    Removes the temporaries of processes that no longer run (and the unnamed ones of the previous
    scheme, ``.<name>.<8 random characters>``), and puts back ``.<name>.old`` when a kill between
    the two renames of the fallback swap left ``path`` missing.
    """
    path = Path(path)
    old = path.with_name(f".{path.name}.old")
    if old.exists() and not path.exists():
        os.rename(old, path)
        _fsync(path.parent)
    ours = re.compile(rf"^\.{re.escape(path.name)}\.(?:tmp-(\d+)-.+|[a-z0-9_]{{8}}|old)$")
    removed = []
    for entry in path.parent.glob(f".{path.name}.*"):
        match = ours.match(entry.name)
        if match is None or (match[1] is not None and _alive(int(match[1]))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling directory that replaces ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path)
    tmp = Path(tempfile.mkdtemp(prefix=_temporary_name(path), dir=path.parent))
    try:
        yield tmp
        tmp.chmod(0o755)  # mkdtemp makes it private
        _fsync_tree(tmp)
        if not path.exists():
            os.rename(tmp, path)
        elif not _exchange(tmp, path):  # tmp now holds the old tree, removed below
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.rename(path, old)
            os.rename(tmp, path)  # a kill before this line: remove_stale puts old back
            _fsync(path.parent)
            shutil.rmtree(old, ignore_errors=True)
        _fsync(path.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling file path; it is fsync'd and renamed onto ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path)
    fd, tmp = tempfile.mkstemp(prefix=_temporary_name(path), dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        _fsync(Path(tmp))
        os.chmod(tmp, 0o644)  # mkstemp makes it private
        os.replace(tmp, path)
        _fsync(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _finite(value):
    """JSON has no NaN or infinity: write them as null."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str | Path, data: dict) -> None:
    """Write JSON atomically; NaN and ±inf become null."""
    with atomic_file(path) as tmp:
        text = json.dumps(_finite(data), indent=2, sort_keys=True, default=float)
        tmp.write_text(text + "\n")


def write_csv(path: str | Path, rows: list[dict] | pl.DataFrame, header: list[str] | None = None):
    """Write rows as CSV atomically; with no rows, only ``header`` (a DVC plot must exist)."""
    with atomic_file(path) as tmp:
        if len(rows) == 0 and header is not None:
            tmp.write_text(",".join(header) + "\n")
        else:
            (rows if isinstance(rows, pl.DataFrame) else pl.DataFrame(rows)).write_csv(tmp)


def file_digest(*paths: str | Path) -> str:
    """sha256 over the bytes of the given files, first 16 hex digits; a directory (a partitioned
    table) counts as its files in path order."""
    h = hashlib.sha256()
    for p in paths:
        files = sorted(f for f in Path(p).rglob("*") if f.is_file()) if Path(p).is_dir() else [p]
        for file in files:
            with open(file, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()[:16]


def markdown_table(rows: list[dict], columns: list[str], fmt: dict[str, str] | None = None) -> str:
    """A Markdown table of ``rows`` (dicts) in ``columns``, each cell formatted by ``fmt[column]``."""
    fmt = fmt or {}
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(format(r[c], fmt.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)
