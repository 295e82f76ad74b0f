"""The serving bundle: everything the service loads, written by the `index` stage.

Files in the bundle directory: ``index.faiss`` (item vectors), ``embeddings.npz`` (GNOLR
sub-embeddings, γ, thresholds), ``users.parquet`` / ``items.parquet`` (id maps), ``seen.npz``
(training items per user), ``popular.npy`` (fallback order) and ``manifest.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import polars as pl

from models.gnolr import GNOLREmbeddings
from models.plove import PLoveScorer
from serving.retrieval import Retriever, SeenItems

REQUIRED = (
    "index.faiss",
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


def load_bundle(directory: str | Path) -> Bundle:
    """Load a serving bundle; a missing file raises :class:`FileNotFoundError` naming it."""
    directory = Path(directory)
    missing = [f for f in REQUIRED if not (directory / f).exists()]
    if missing:
        raise FileNotFoundError(
            f"serving bundle {directory} lacks {missing}; run `dvc repro` first"
        )
    embeddings = GNOLREmbeddings.load(directory / "embeddings.npz")
    index = faiss.read_index(str(directory / "index.faiss"))
    manifest = json.loads((directory / "manifest.json").read_text())
    if "ef_search" in manifest and hasattr(index, "hnsw"):
        index.hnsw.efSearch = manifest["ef_search"]
    if "nprobe" in manifest and hasattr(index, "nprobe"):
        index.nprobe = manifest["nprobe"]
    users = pl.read_parquet(directory / "users.parquet").sort("user_idx")
    items = pl.read_parquet(directory / "items.parquet").sort("item_idx")
    item_ids = np.asarray(items["item_id"].to_list(), dtype=object)
    return Bundle(
        embeddings=embeddings,
        retriever=Retriever(embeddings.item_vectors(), index),
        user_index=dict(zip(users["user_id"].to_list(), users["user_idx"].to_list(), strict=True)),
        item_ids=item_ids,
        item_index={item: i for i, item in enumerate(item_ids)},
        seen=SeenItems.load(directory / "seen.npz"),
        popular=np.load(directory / "popular.npy"),
        manifest=manifest,
        plove=PLoveScorer.load(directory / "plove") if (directory / "plove").exists() else None,
    )
