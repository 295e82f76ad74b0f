"""Stage `index`: FAISS index of GNOLR's item vectors plus everything the service loads.

Writes the serving bundle (see serving/bundle.py) atomically to data/serving/ and the index's
recall@K against exact search and its queries/s to data/metrics/index.json. An index whose recall
is below ``index.recall_floor`` is refused: the stage fails and the previous bundle stays. MLflow
run (stage=index, model=gnolr, tag index_kind): ``test/recall_at_<k>``, ``test/qps``, ``test/n_items``,
``test/dim``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import mlflow
import numpy as np
import polars as pl

from features.contract import Col
from features.seen import SeenItems
from models.baselines import popularity_counts, popularity_order
from models.gnolr.network import GNOLREmbeddings
from models.plove.network import PLoveScorer
from pipelines.outputs import atomic_dir, file_digest, write_json
from pipelines.params import load_params
from pipelines.tracking import log_dataset, split_metrics, start_run
from serving.bundle import write_bundle
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
    index, kind = build_index(vectors, cfg, seed=params.seed)
    rng = np.random.default_rng(params.seed)
    sample = rng.choice(
        len(embeddings.users), size=min(cfg.recall_queries, len(embeddings.users)), replace=False
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
                "train_run": info.get("run_id") or "",
                "refused": str(refused).lower(),
            }
        )
        mlflow.log_metrics(split_metrics("test", metrics))
    if refused:
        sys.exit(
            f"index refused: {kind} recall@{cfg.recall_k} = {quality['recall']:.3f} is below "
            f"index.recall_floor = {cfg.recall_floor}; raise ef_search/nprobe or use kind: flat"
        )

    train = pl.read_parquet(
        FEATURES / "train.parquet", columns=[Col.ITEM_IDX, Col.USER_IDX, Col.LEVEL]
    )
    seen = SeenItems.from_training(train, len(embeddings.users))
    counts = popularity_counts(
        train[Col.ITEM_IDX].to_numpy(), train[Col.LEVEL].to_numpy(), len(vectors), 1
    )
    plove = PLoveScorer.load(PLOVE) if (PLOVE / "scorer.npz").exists() else None
    manifest = {
        "model_version": f"gnolr-{file_digest(MODEL / 'embeddings.npz')}",
        "mlflow_run_id": info.get("run_id"),
        "dataset_digest": info.get("dataset_digest"),
        "levels": info["levels"],
        "reactions": list(params.contract.reactions),
        "index_kind": kind,
        "ef_search": cfg.hnsw_ef_search,
        "nprobe": cfg.ivf_nprobe,
    }
    with atomic_dir(OUT) as tmp:
        write_bundle(
            tmp,
            embeddings,
            index,
            pl.read_parquet(FEATURES / "users.parquet"),
            pl.read_parquet(FEATURES / "items.parquet"),
            seen,
            popularity_order(counts[:, 0]),
            manifest,
            plove,
        )
    print(
        f"index: {kind} over {len(vectors):,} items, recall@{cfg.recall_k} {quality['recall']:.3f}, "
        f"{quality['qps']:,.0f} queries/s → {OUT}/, {METRICS} (model {manifest['model_version']})"
    )


if __name__ == "__main__":
    main()
