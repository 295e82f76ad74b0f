"""Atomic stage outputs: a directory, a JSON file or a CSV appears whole or not at all."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import polars as pl


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling directory that replaces ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(path)
        path.chmod(0o755)  # mkdtemp makes it private
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling file path; it is fsync'd and renamed onto ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private
        os.replace(tmp, path)
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
