"""The serving bundle: everything the service loads. :func:`write_bundle` writes it (the `index`
stage, the serving benchmark), :func:`load_bundle` reads it (the service, the batch stage).

Files in a bundle directory: ``index.faiss`` (item vectors; absent when the index lives in a
vector database, ``manifest["index_backend"] == "qdrant"``), ``embeddings.npz`` (GNOLR
sub-embeddings, γ, thresholds), ``users.parquet`` / ``items.parquet`` (id maps), ``seen.npz``
(training items per user), ``popular.npy`` (fallback order), ``plove/`` (the calibrated P[Love],
when there is one) and ``manifest.json`` (``model_version``, ``levels``, ``reactions``, the index
kind and its search knobs, whether P[Love] is served, where the model came from).

Versioned bundles. The `index` stage does not rewrite a bundle in place: it publishes each bundle
as an immutable version under one root (``data/serving``)::

    data/serving/CURRENT              one line: the name of the version being served
    data/serving/versions/<version>/  one complete bundle; <version> is its model_version

:func:`publish_version` moves a complete staged bundle into ``versions/`` (one ``rename``), then
replaces ``CURRENT`` atomically (a temporary file renamed over it) and prunes old versions, always
keeping the current one and the one before it. A reader resolves ``CURRENT`` once and loads that
directory (:func:`bundle_dir`), so it always reads exactly one complete version, whatever the
writer does meanwhile. A plain bundle directory (``manifest.json`` at its top, as the registry and
the benchmarks hold them) loads as before.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import polars as pl

from features.contract import Col
from features.seen import SeenItems
from models.gnolr.network import GNOLREmbeddings
from models.plove.network import PLoveScorer
from serving import qdrant_index
from serving.retrieval import Retriever

CURRENT = "CURRENT"
VERSIONS = "versions"
MANIFEST = "manifest.json"
INDEX_FILE = "index.faiss"
REQUIRED = (
    "embeddings.npz",
    "users.parquet",
    "items.parquet",
    "seen.npz",
    "popular.npy",
    "manifest.json",
)


@dataclass
class Bundle:
    embeddings: GNOLREmbeddings
    retriever: Retriever
    user_index: dict[str, int]
    item_ids: np.ndarray  # item_idx → external id
    item_index: dict[str, int]
    seen: SeenItems
    popular: np.ndarray  # item indices, most popular first
    manifest: dict
    plove: PLoveScorer | None = None

    @property
    def model_version(self) -> str:
        return self.manifest["model_version"]

    @property
    def levels(self) -> list[str]:
        return self.manifest["levels"]


def content_digest(directory: str | Path, skip: tuple[str, ...] = ()) -> str:
    """sha256 (16 hex digits) over the relative paths and bytes of every file under ``directory``
    except the top-level names in ``skip``."""
    directory = Path(directory)
    h = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        rel = path.relative_to(directory)
        if rel.parts[0] in skip:
            continue
        h.update(str(rel).encode() + b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def write_bundle(
    directory: str | Path,
    embeddings: GNOLREmbeddings,
    index: faiss.Index | None,
    users: pl.DataFrame,
    items: pl.DataFrame,
    seen: SeenItems,
    popular: np.ndarray,
    manifest: dict,
    plove: PLoveScorer | None = None,
) -> str:
    """Write a bundle into the (new, empty) ``directory``; returns its ``model_version``.

    ``index`` is the FAISS index, or None when the vectors live in a vector database (the manifest
    then says where: ``index_backend``, ``qdrant_url``, ``qdrant_alias``). ``users`` / ``items``
    are the id maps (``user_id, user_idx`` / ``item_id, item_idx``); ``popular`` the fallback order
    of item indices; ``manifest`` must name ``levels``. Without a ``model_version`` in it the
    version is ``gnolr-<content digest>`` of the files and the manifest, so one version name always
    means one content. The manifest records whether P[Love] is served.
    """
    if "levels" not in manifest:
        raise ValueError("a bundle manifest needs ['levels']")
    if index is None and manifest.get("index_backend", "faiss") == "faiss":
        raise ValueError("a FAISS bundle needs its index")
    directory = Path(directory)
    if index is not None:
        faiss.write_index(index, str(directory / INDEX_FILE))
    embeddings.save(directory / "embeddings.npz")
    users.select(Col.USER, Col.USER_IDX).write_parquet(directory / "users.parquet")
    items.select(Col.ITEM, Col.ITEM_IDX).write_parquet(directory / "items.parquet")
    seen.save(directory / "seen.npz")
    np.save(directory / "popular.npy", np.asarray(popular, dtype=np.int64))
    if plove is not None:
        plove.save(directory / "plove")
    manifest = {**manifest, "plove": plove is not None}
    if "model_version" not in manifest:
        h = hashlib.sha256(content_digest(directory).encode())
        h.update(json.dumps(manifest, sort_keys=True).encode())
        manifest["model_version"] = f"gnolr-{h.hexdigest()[:16]}"
    text = json.dumps(manifest, indent=2, sort_keys=True)
    (directory / MANIFEST).write_text(text + "\n")
    return manifest["model_version"]


def current_version(root: str | Path) -> str | None:
    """The version ``root/CURRENT`` names, or None when ``root`` is not a versioned bundle root."""
    pointer = Path(root) / CURRENT
    try:
        name = pointer.read_text().strip()
    except FileNotFoundError:
        return None
    if not name or "/" in name or name.startswith("."):
        raise FileNotFoundError(f"{pointer} holds no version name: {name!r}")
    return name


def bundle_dir(path: str | Path) -> Path:
    """The directory of one complete bundle: ``path`` itself when it holds ``manifest.json``, else
    ``path/versions/<CURRENT>`` of a versioned root."""
    path = Path(path)
    version = current_version(path)
    if version is not None:
        return path / VERSIONS / version
    return path


def _replace_pointer(root: Path, version: str) -> None:
    """Write ``CURRENT`` = ``version`` atomically: a synced temporary file renamed over it."""
    tmp = root / f".{CURRENT}.{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        fh.write(version + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, root / CURRENT)
    fd = os.open(root, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish_version(root: str | Path, staged: str | Path, keep: int = 2) -> tuple[str, list[str]]:
    """Make the complete bundle in ``staged`` the current version of ``root``.

    ``staged`` (on the same file system, written by :func:`write_bundle`) is renamed to
    ``root/versions/<model_version>`` — or discarded when that version is already there (same name,
    same content) — then ``CURRENT`` is replaced atomically and versions beyond the ``keep`` most
    recently published are deleted (never the current one). Returns (version, versions kept).
    """
    root, staged = Path(root), Path(staged)
    version = json.loads((staged / MANIFEST).read_text())["model_version"]
    target = root / VERSIONS / version
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        shutil.rmtree(staged)
    else:
        staged.chmod(0o755)  # a mkdtemp staging directory is private
        staged.rename(target)
    os.utime(target)  # the publication time orders the versions for pruning
    _replace_pointer(root, version)
    by_age = sorted(
        (p for p in (root / VERSIONS).iterdir() if p.is_dir()),
        key=lambda p: p.stat().st_mtime_ns,
        reverse=True,
    )
    kept = [version] + [p.name for p in by_age if p.name != version][: max(keep, 1) - 1]
    for p in by_age:
        if p.name not in kept:
            shutil.rmtree(p, ignore_errors=True)
    return version, kept


def _open_index(directory: Path, manifest: dict):
    """The bundle's index: its FAISS file, or its pinned collection in the vector database."""
    backend = manifest.get("index_backend", "faiss")
    if backend == "qdrant":
        name = qdrant_index.collection_name(manifest["qdrant_alias"], manifest["model_version"])
        return qdrant_index.QdrantIndex(
            qdrant_index.connect(manifest["qdrant_url"]), name, manifest.get("qdrant_hnsw_ef")
        )
    if backend != "faiss":
        raise ValueError(f"bundle {directory}: unknown index_backend {backend!r}")
    if not (directory / INDEX_FILE).exists():
        raise FileNotFoundError(f"serving bundle {directory} lacks {INDEX_FILE}")
    index = faiss.read_index(str(directory / INDEX_FILE))
    if "ef_search" in manifest and hasattr(index, "hnsw"):
        index.hnsw.efSearch = manifest["ef_search"]
    if "nprobe" in manifest and hasattr(index, "nprobe"):
        index.nprobe = manifest["nprobe"]
    return index


def load_bundle(path: str | Path) -> Bundle:
    """Load a serving bundle: a bundle directory, or the current version of a versioned root.

    A missing file raises :class:`FileNotFoundError` naming it; a version directory whose manifest
    names another version is refused (versions are immutable).
    """
    path = Path(path)
    directory = bundle_dir(path)
    missing = [f for f in REQUIRED if not (directory / f).exists()]
    if missing:
        raise FileNotFoundError(
            f"serving bundle {directory} lacks {missing}; run `dvc repro` first"
        )
    manifest = json.loads((directory / MANIFEST).read_text())
    if directory.parent.name == VERSIONS and manifest.get("model_version") != directory.name:
        raise ValueError(
            f"bundle version {directory} holds model_version {manifest.get('model_version')!r}"
        )
    embeddings = GNOLREmbeddings.load(directory / "embeddings.npz")
    index = _open_index(directory, manifest)
    users = pl.read_parquet(directory / "users.parquet").sort(Col.USER_IDX)
    items = pl.read_parquet(directory / "items.parquet").sort(Col.ITEM_IDX)
    item_ids = np.asarray(items[Col.ITEM].to_list(), dtype=object)
    return Bundle(
        embeddings=embeddings,
        retriever=Retriever(embeddings.item_vectors(), index),
        user_index=dict(zip(users[Col.USER].to_list(), users[Col.USER_IDX].to_list(), strict=True)),
        item_ids=item_ids,
        item_index={item: i for i, item in enumerate(item_ids)},
        seen=SeenItems.load(directory / "seen.npz"),
        popular=np.load(directory / "popular.npy"),
        manifest=manifest,
        plove=PLoveScorer.load(directory / "plove") if (directory / "plove").exists() else None,
    )
