"""FAISS indexes over item vectors: the kind follows catalogue size, quality is measured, not assumed."""

from __future__ import annotations

import time
from typing import Literal

import faiss
import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class QdrantConfig(BaseModel):
    """Where ``index.backend: qdrant`` puts the item vectors (serving/qdrant_index.py)."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        "http://localhost:6333",
        min_length=1,
        description="a Qdrant server URL, ':memory:' (one process: tests) or a local directory "
        "(embedded mode: one process at a time)",
    )
    collection: str = Field(
        "ladder-items",
        pattern=r"^[A-Za-z0-9_-]+$",
        description="the alias moved to each new version's collection <collection>-<version>",
    )
    hnsw_ef: int = Field(128, ge=1, description="search-time HNSW beam of a Qdrant server")


class IndexConfig(BaseModel):
    """Which index to build, where, and the recall it must reach (params.yaml → ``index``)."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["faiss", "qdrant"] = Field(
        "faiss", description="faiss: an index file in the bundle; qdrant: a vector database"
    )
    qdrant: QdrantConfig = Field(default_factory=QdrantConfig)
    keep_versions: int = Field(
        2, ge=1, description="bundle versions kept in data/serving (the current one included)"
    )
    kind: Literal["auto", "flat", "hnsw", "ivf", "ivfpq"] = "auto"
    auto_exact_max_items: int = Field(
        50_000, ge=1, description="auto: exact search up to this size"
    )
    hnsw_m: int = Field(32, ge=4)
    hnsw_ef_construction: int = Field(200, ge=8)
    hnsw_ef_search: int = Field(256, ge=8)
    ivf_nlist: int = Field(1024, ge=1)
    ivf_nprobe: int = Field(32, ge=1)
    pq_m: int = Field(8, ge=1, description="sub-quantisers of IVF-PQ (must divide the dimension)")
    recall_k: int = Field(100, ge=1)
    recall_floor: float = Field(
        0.9, ge=0, le=1, description="refuse to publish below this recall@k"
    )
    recall_queries: int = Field(500, ge=1)


def choose_kind(n_items: int, cfg: IndexConfig) -> str:
    """``cfg.kind``, or for ``auto`` exact search up to ``auto_exact_max_items`` and HNSW above."""
    if cfg.kind != "auto":
        return cfg.kind
    return "flat" if n_items <= cfg.auto_exact_max_items else "hnsw"


def build_index(vectors: np.ndarray, cfg: IndexConfig, seed: int = 0) -> tuple[faiss.Index, str]:
    """An inner-product index over ``vectors`` (n, D) float32, and its kind."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    kind = choose_kind(n, cfg)
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = cfg.hnsw_ef_construction
        index.hnsw.efSearch = cfg.hnsw_ef_search
    elif kind in ("ivf", "ivfpq"):
        nlist = max(1, min(cfg.ivf_nlist, n // 39))  # FAISS wants ≥ 39 training points per list
        quantizer = faiss.IndexFlatIP(dim)
        if kind == "ivf":
            index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        else:
            if dim % cfg.pq_m:
                raise ValueError(f"index.pq_m={cfg.pq_m} must divide the vector dimension {dim}")
            index = faiss.IndexIVFPQ(quantizer, dim, nlist, cfg.pq_m, 8, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        index.train(vectors)
        index.nprobe = min(cfg.ivf_nprobe, nlist)
    else:
        raise ValueError(f"unknown index kind {kind!r}")
    index.add(vectors)
    return index, kind


def recall_and_qps(
    index: faiss.Index, vectors: np.ndarray, queries: np.ndarray, k: int
) -> dict[str, float]:
    """recall@k of ``index`` against exact inner-product search, and its single-query throughput."""
    k = min(k, len(vectors))
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(np.ascontiguousarray(vectors, dtype=np.float32))
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    _, truth = exact.search(queries, k)
    start = time.perf_counter()
    found = np.vstack([index.search(q[None, :], k)[1] for q in queries])
    seconds = time.perf_counter() - start
    hits = sum(len(np.intersect1d(t, f[f >= 0])) for t, f in zip(truth, found, strict=True))
    return {"recall": hits / (k * len(queries)), "qps": len(queries) / max(seconds, 1e-9)}
