"""Pinned wheels as data carriers: download with pip, verify the sha256, read members with zipfile.

Public data sets ship inside some wheels (MovieLens 100K in ``recbole``, the Open Bandit Dataset
sample in ``obp``). The wheel is fetched with ``pip download --no-deps --only-binary=:all:`` — never
installed — checked against a pinned sha256 and kept in a cache directory, so a second call reads
the cached file without touching the network.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import NamedTuple


class PinnedWheel(NamedTuple):
    """A wheel named by package, exact version and the sha256 of its file."""

    package: str
    version: str
    sha256: str


RECBOLE = PinnedWheel(
    "recbole", "1.2.1", "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
)
OBP = PinnedWheel(
    "obp", "0.4.1", "87dec9caf4283c25ab13036532e0a24566f1c7bdcad1653a8ded43b2f5ef8208"
)

_STDERR_TAIL_LINES = 20


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _wheel_prefix(package: str, version: str) -> str:
    # Wheel file names spell the project with underscores (PEP 427 / PEP 491).
    return f"{package.replace('-', '_').replace('.', '_').lower()}-{version}-"


def _cached(cache_dir: Path, package: str, version: str) -> list[Path]:
    prefix = _wheel_prefix(package, version)
    return sorted(p for p in cache_dir.glob("*.whl") if p.name.lower().startswith(prefix))


def _pip_download(package: str, version: str, dest: Path) -> Path:
    """Run ``pip download`` of one wheel into the empty folder ``dest``; return the wheel's path."""
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", f"{package}=={version}", "-d", str(dest),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-_STDERR_TAIL_LINES:])
        raise RuntimeError(
            f"pip download of {package}=={version} failed (exit {proc.returncode}):\n{tail}"
        )
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise RuntimeError(
            f"pip download of {package}=={version} produced {[p.name for p in wheels]}, "
            "expected exactly one wheel"
        )
    return wheels[0]


def fetch_wheel(package: str, version: str, sha256: str, cache_dir: Path) -> Path:
    """Path of the wheel ``package==version`` in ``cache_dir``, whose sha256 is ``sha256``.

    A cached wheel with the right hash is returned as is; one with a wrong hash is deleted.
    Otherwise the wheel is downloaded into a temporary folder inside ``cache_dir``, verified, and
    renamed into place (atomic, so readers never see a partial file). Raises ``ValueError`` naming
    the expected and actual hash on mismatch (the downloaded file is not kept) and ``RuntimeError``
    with the tail of pip's stderr when pip fails.
    """
    expected = sha256.lower()
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    for path in _cached(cache_dir, package, version):
        if sha256_of(path) == expected:
            return path
        path.unlink()  # a corrupt or foreign file: never serve it

    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".download-") as tmp:
        wheel = _pip_download(package, version, Path(tmp))
        actual = sha256_of(wheel)
        if actual != expected:
            raise ValueError(
                f"sha256 mismatch for {wheel.name} ({package}=={version}): "
                f"expected {expected}, got {actual}; the file was discarded"
            )
        target = cache_dir / wheel.name
        os.replace(wheel, target)
    return target


def read_member(wheel: Path, member: str) -> bytes:
    """Bytes of the archive member ``member`` (a path inside the wheel) of ``wheel``.

    Raises ``FileNotFoundError`` naming the member and the wheel when the member is absent.
    """
    with zipfile.ZipFile(wheel) as zf:
        try:
            return zf.read(member)
        except KeyError:
            folder = member.rsplit("/", 1)[0] + "/"
            near = [n for n in zf.namelist() if n.startswith(folder)][:10]
            hint = f"; members under {folder}: {near}" if near else ""
            raise FileNotFoundError(f"{member!r} is not in {Path(wheel).name}{hint}") from None
