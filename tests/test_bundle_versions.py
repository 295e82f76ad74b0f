"""Versioned serving bundles (immutable versions + an atomic CURRENT pointer) and a LiveBundle that
follows them by polling, keeping the old bundle when a new version fails to load."""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from serving.bundle import (
    CURRENT,
    VERSIONS,
    bundle_dir,
    current_version,
    load_bundle,
    publish_version,
)
from serving.resolve import BundleNotFoundError, LiveBundle


@pytest.fixture(scope="module")
def plain(pipeline_dir) -> Path:
    """The pipeline's current bundle version (a complete bundle directory)."""
    return bundle_dir(pipeline_dir / "data/serving")


def stage(plain: Path, root: Path, version: str, marker: int, broken: bool = False) -> Path:
    """A staged copy of ``plain`` named ``version`` whose popular order starts with ``marker``."""
    root.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=".staged.", dir=root.parent))
    shutil.rmtree(staged)
    shutil.copytree(plain, staged)
    popular = np.load(staged / "popular.npy")
    np.save(staged / "popular.npy", np.concatenate([[marker], popular[popular != marker]]))
    manifest = json.loads((staged / "manifest.json").read_text())
    manifest |= {"model_version": version, "marker": marker}
    (staged / "manifest.json").write_text(json.dumps(manifest))
    if broken:
        (staged / "index.faiss").unlink()
    return staged


def test_the_index_stage_published_a_version_and_the_pointer_names_it(pipeline_dir, plain):
    root = pipeline_dir / "data/serving"
    version = current_version(root)
    assert version is not None and plain == root / VERSIONS / version
    assert json.loads((plain / "manifest.json").read_text())["model_version"] == version
    assert load_bundle(root).model_version == version


def test_publishing_moves_the_pointer_and_keeps_the_newest_versions(plain, tmp_path):
    root = tmp_path / "serving"
    for n, name in enumerate(["v1", "v2", "v3"]):
        version, kept = publish_version(root, stage(plain, root, name, n), keep=2)
        assert version == name and current_version(root) == name
        assert load_bundle(root).model_version == name
        assert load_bundle(root).popular[0] == n
    assert kept == ["v3", "v2"]
    assert sorted(p.name for p in (root / VERSIONS).iterdir()) == ["v2", "v3"]
    # the same version again: nothing is replaced, the staged copy is discarded
    staged = stage(plain, root, "v3", 99)
    publish_version(root, staged, keep=2)
    assert not staged.exists() and load_bundle(root).popular[0] == 2
    # an earlier version becomes current again (a rollback) and survives pruning
    publish_version(root, stage(plain, root, "v2", 1), keep=1)
    assert current_version(root) == "v2" and [p.name for p in (root / VERSIONS).iterdir()] == ["v2"]


def test_a_version_directory_must_hold_its_own_version(plain, tmp_path):
    root = tmp_path / "serving"
    publish_version(root, stage(plain, root, "v1", 0))
    manifest = root / VERSIONS / "v1/manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "model_version": "v9"}))
    with pytest.raises(ValueError, match="v9"):
        load_bundle(root)
    (root / CURRENT).write_text("\n")
    with pytest.raises(FileNotFoundError, match="no version name"):
        load_bundle(root)


def test_a_reader_always_loads_exactly_one_complete_version(plain, tmp_path):
    """One thread publishes new versions while another loads the root: every load is internally
    consistent (version n's manifest marker, n % 50, is the head of its popular order)."""
    root = tmp_path / "serving"
    publish_version(root, stage(plain, root, "v0", 0))
    stop, problems, loads, failed = threading.Event(), [], [], []

    def publish() -> None:
        n = 1
        while not stop.is_set():
            publish_version(root, stage(plain, root, f"v{n}", n % 50), keep=3)
            n += 1
            time.sleep(0.03)

    writer = threading.Thread(target=publish)
    writer.start()
    try:
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline and len(loads) < 40:
            try:
                b = load_bundle(root)
            except Exception as exc:  # pruned under a slow reader: a failed load, never a mix
                failed.append(repr(exc))
                continue
            loads.append(b.model_version)
            marker = int(b.model_version[1:]) % 50
            if b.manifest["marker"] != marker or b.popular[0] != marker:
                problems.append(b.model_version)
    finally:
        stop.set()
        writer.join()
    assert len(set(loads)) > 3, (loads, failed)  # the pointer really moved under the reader
    assert not problems


def test_a_live_bundle_follows_the_pointer_and_keeps_the_old_one_when_the_new_fails(
    plain, tmp_path
):
    root = tmp_path / "serving"
    publish_version(root, stage(plain, root, "v1", 1))
    interval = 0.2
    live = LiveBundle(str(root), poll_seconds=interval)
    try:
        assert live.current.model_version == "v1" and live.status()["source_version"] == "v1"

        def served_within(version: str, seconds: float) -> bool:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                if live.current.model_version == version:
                    return True
                time.sleep(0.02)
            return False

        publish_version(root, stage(plain, root, "v2", 2))
        assert served_within("v2", 10 * interval)
        assert live.current.popular[0] == 2 and live.error is None

        publish_version(root, stage(plain, root, "v3", 3, broken=True))
        time.sleep(3 * interval)
        assert live.current.model_version == "v2"  # the broken version never served
        assert "v3" in live.error and "index.faiss" in live.error
        assert live.failed_version == "v3"

        publish_version(root, stage(plain, root, "v4", 4))
        assert served_within("v4", 10 * interval) and live.error is None
    finally:
        live.stop()


def test_a_missing_bundle_is_named(tmp_path):
    with pytest.raises(BundleNotFoundError, match="no manifest.json"):
        LiveBundle(str(tmp_path / "nothing"))
