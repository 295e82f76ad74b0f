"""Stage `index`: the item index of GNOLR's vectors plus everything the service loads.

Publishes the serving bundle (see serving/bundle.py) as a new immutable version of data/serving/
(``versions/<model_version>/`` + the ``CURRENT`` pointer, replaced atomically; the previous version
stays for workers still loading it and for a rollback) and writes the index's recall@K against
exact search and its queries/s to data/metrics/index.json. ``index.backend: faiss`` (default) puts
a FAISS index file in the bundle; ``qdrant`` writes the vectors to a new Qdrant collection
``<index.qdrant.collection>-<model_version>`` and, once the bundle is published, moves the alias
``<index.qdrant.collection>`` to it (serving/qdrant_index.py). Either way the recall is measured
through the index the service will query. An index whose recall is below ``index.recall_floor`` is
refused: the stage fails and the current version stays. MLflow run (stage=index, model=gnolr, tags
index_kind, index_backend, model_version): ``test/recall_at_<k>``, ``test/qps``, ``test/n_items``,
``test/dim``.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import polars as pl

from features.contract import Col
from features.seen import SeenItems
from models.baselines import popularity_counts, popularity_order
from models.gnolr.network import GNOLREmbeddings
from models.plove.network import PLoveScorer
from pipelines.outputs import write_json
from pipelines.params import load_params
from pipelines.tracking import log_dataset, split_metrics, start_run
from serving import qdrant_index
from serving.bundle import VERSIONS, publish_version, write_bundle
from serving.index import build_index, recall_and_qps

FEATURES = Path("data/features")
MODEL = Path("data/models/gnolr")
PLOVE = Path("data/models/plove")
OUT = Path("data/serving")
METRICS = Path("data/metrics/index.json")


def main() -> None:
    params = load_params()
    cfg = params.index
    embeddings = GNOLREmbeddings.load(MODEL / "embeddings.npz")
    info = json.loads((MODEL / "info.json").read_text())
    vectors = embeddings.item_vectors()
    train = pl.read_parquet(
        FEATURES / "train.parquet", columns=[Col.ITEM_IDX, Col.USER_IDX, Col.LEVEL]
    )
    seen = SeenItems.from_training(train, len(embeddings.users))
    counts = popularity_counts(
        train[Col.ITEM_IDX].to_numpy(), train[Col.LEVEL].to_numpy(), len(vectors), 1
    )
    plove = PLoveScorer.load(PLOVE) if (PLOVE / "scorer.npz").exists() else None
    manifest = {
        "mlflow_run_id": info.get("run_id"),
        "dataset_digest": info.get("dataset_digest"),
        "levels": info["levels"],
        "reactions": list(params.contract.reactions),
        "index_backend": cfg.backend,
    }
    if cfg.backend == "faiss":
        index, kind = build_index(vectors, cfg, seed=params.seed)
        manifest |= {"ef_search": cfg.hnsw_ef_search, "nprobe": cfg.ivf_nprobe}
    else:
        index, kind = None, "qdrant"
        manifest |= {
            "qdrant_url": cfg.qdrant.url,
            "qdrant_alias": cfg.qdrant.collection,
            "qdrant_hnsw_ef": cfg.qdrant.hnsw_ef,
        }
    manifest["index_kind"] = kind

    OUT.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{OUT.name}.", dir=OUT.parent))
    try:
        version = write_bundle(
            staging,
            embeddings,
            index,
            pl.read_parquet(FEATURES / "users.parquet"),
            pl.read_parquet(FEATURES / "items.parquet"),
            seen,
            popularity_order(counts[:, 0]),
            manifest,
            plove,
        )
        collection = None
        if cfg.backend == "qdrant":
            client = qdrant_index.connect(cfg.qdrant.url)
            collection = qdrant_index.collection_name(cfg.qdrant.collection, version)
            qdrant_index.write_collection(client, collection, vectors)
            index = qdrant_index.QdrantIndex(client, collection, cfg.qdrant.hnsw_ef)
        rng = np.random.default_rng(params.seed)
        sample = rng.choice(
            len(embeddings.users),
            size=min(cfg.recall_queries, len(embeddings.users)),
            replace=False,
        )
        quality = recall_and_qps(index, vectors, embeddings.user_vectors(sample), cfg.recall_k)
        metrics = {
            "kind": kind,
            "n_items": len(vectors),
            "dim": vectors.shape[1],
            f"recall_at_{cfg.recall_k}": quality["recall"],
            "qps": quality["qps"],
        }
        write_json(METRICS, metrics)
        refused = quality["recall"] < cfg.recall_floor
        with start_run(params, "index", "index-gnolr", model="gnolr"):
            log_dataset(MODEL, "gnolr-embeddings", ["embeddings.npz"], "index")
            mlflow.set_tags(
                {
                    "index_kind": kind,
                    "index_backend": cfg.backend,
                    "model_version": version,
                    "train_run": info.get("run_id") or "",
                    "refused": str(refused).lower(),
                }
            )
            mlflow.log_metrics(split_metrics("test", metrics))
        if refused:
            if collection is not None and not (OUT / VERSIONS / version).exists():
                client.delete_collection(collection)
            sys.exit(
                f"index refused: {kind} recall@{cfg.recall_k} = {quality['recall']:.3f} is below "
                f"index.recall_floor = {cfg.recall_floor}; raise ef_search/nprobe or use kind: flat"
            )
        version, kept = publish_version(OUT, staging, cfg.keep_versions)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    where = f"{OUT}/versions/{version} (CURRENT; kept {len(kept)})"
    if collection is not None:
        qdrant_index.move_alias(client, cfg.qdrant.collection, collection)
        qdrant_index.prune_collections(client, cfg.qdrant.collection, kept)
        where += f", Qdrant {cfg.qdrant.url} {collection} ← alias {cfg.qdrant.collection}"
    print(
        f"index: {kind} over {len(vectors):,} items, recall@{cfg.recall_k} {quality['recall']:.3f}, "
        f"{quality['qps']:,.0f} queries/s → {where}, {METRICS} (model {version})"
    )


if __name__ == "__main__":
    main()
