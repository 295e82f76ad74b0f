"""The serving bundle: everything the service loads. :func:`write_bundle` writes it (the `index`
stage, the serving benchmark), :func:`load_bundle` reads it (the service, the batch stage).

Files in the bundle directory: ``index.faiss`` (item vectors), ``embeddings.npz`` (GNOLR
sub-embeddings, γ, thresholds), ``users.parquet`` / ``items.parquet`` (id maps), ``seen.npz``
(training items per user), ``popular.npy`` (fallback order), ``plove/`` (the calibrated P[Love],
when there is one) and ``manifest.json`` (``model_version``, ``levels``, ``reactions``, the index
kind and its search knobs, whether P[Love] is served, where the model came from).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import polars as pl

from features.contract import Col
from features.seen import SeenItems
from models.gnolr.network import GNOLREmbeddings
from models.plove.network import PLoveScorer
from serving.retrieval import Retriever

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


def write_bundle(
    directory: str | Path,
    embeddings: GNOLREmbeddings,
    index: faiss.Index,
    users: pl.DataFrame,
    items: pl.DataFrame,
    seen: SeenItems,
    popular: np.ndarray,
    manifest: dict,
    plove: PLoveScorer | None = None,
) -> None:
    """Write a bundle into the (new, empty) ``directory``; the caller makes it appear atomically.

    ``users`` / ``items`` are the id maps (``user_id, user_idx`` / ``item_id, item_idx``);
    ``popular`` the fallback order of item indices; ``manifest`` must name ``model_version`` and
    ``levels``. The manifest records whether P[Love] is served.
    """
    missing = [key for key in ("model_version", "levels") if key not in manifest]
    if missing:
        raise ValueError(f"a bundle manifest needs {missing}")
    directory = Path(directory)
    faiss.write_index(index, str(directory / "index.faiss"))
    embeddings.save(directory / "embeddings.npz")
    users.select(Col.USER, Col.USER_IDX).write_parquet(directory / "users.parquet")
    items.select(Col.ITEM, Col.ITEM_IDX).write_parquet(directory / "items.parquet")
    seen.save(directory / "seen.npz")
    np.save(directory / "popular.npy", np.asarray(popular, dtype=np.int64))
    if plove is not None:
        plove.save(directory / "plove")
    text = json.dumps({**manifest, "plove": plove is not None}, indent=2, sort_keys=True)
    (directory / "manifest.json").write_text(text + "\n")


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
