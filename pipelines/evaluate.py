"""Stage `evaluate`: one metric set for GNOLR and the popularity baseline.

AUC per level on the test impressions; Recall/NDCG/MRR@K per level over the full catalogue,
excluding each user's training items, through the same retrieval path as the service; on simulated
data also NDCG@K against the true probabilities. Writes data/metrics/evaluate.json and logs
``test/<metric>`` to each model's MLflow run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import mlflow
import numpy as np
import polars as pl

from features.sources.synthetic import World, parse_index
from models.evaluation import auc_by_level, ground_truth_ndcg, ranking_metrics
from models.gnolr import GNOLREmbeddings
from models.popularity import popularity_counts
from pipelines.common import start_run, tracking_uri, write_json
from pipelines.params import load_params
from serving.retrieval import Retriever, SeenItems

FEATURES = Path("data/features")
MODEL = Path("data/models/gnolr")
WORLD = Path("data/ingest/world.npz")
METRICS = Path("data/metrics/evaluate.json")


def recommender(retriever: Retriever, user_vectors: np.ndarray, seen: SeenItems, batch: int = 1024):
    """A ``(users, k) -> top items`` function over ``retriever`` that excludes seen items."""

    def recommend(users: np.ndarray, k: int) -> np.ndarray:
        out = []
        for start in range(0, users.size, batch):
            chunk = users[start : start + batch]
            ids, _ = retriever.search(user_vectors[chunk], k, exclude=[seen[u] for u in chunk])
            out.append(ids)
        return np.concatenate(out) if out else np.zeros((0, k), np.int64)

    return recommend


def evaluate(
    features_dir: Path, embeddings: GNOLREmbeddings, world: World | None, ks: list[int]
) -> dict:
    """Metrics of GNOLR and popularity on the test split, keyed by model name."""
    meta = json.loads((features_dir / "meta.json").read_text())
    names, n_items, n_users = meta["levels"], meta["n_items"], meta["n_users"]
    train = pl.read_parquet(
        features_dir / "train.parquet", columns=["user_idx", "item_idx", "level"]
    )
    test = pl.read_parquet(features_dir / "test.parquet", columns=["user_idx", "item_idx", "level"])
    tu, ti, tl = (test[c].to_numpy() for c in ("user_idx", "item_idx", "level"))
    positives = train.filter(pl.col("level") >= 1)
    seen = SeenItems.from_pairs(
        positives["user_idx"].to_numpy(), positives["item_idx"].to_numpy(), n_users
    )
    pop = popularity_counts(
        train["item_idx"].to_numpy(), train["level"].to_numpy(), n_items, len(names)
    )

    gnolr_rec = recommender(Retriever(embeddings.item_vectors()), embeddings.user_vectors(), seen)
    results = {
        "gnolr": auc_by_level(embeddings.probabilities(tu, ti), tl, names),
        "popularity": auc_by_level(pop[ti], tl, names),
    }
    results["gnolr"].update(ranking_metrics(gnolr_rec, tu, ti, tl, names, n_items, ks))
    ones = np.ones((n_users, 1), np.float32)
    pop_recs = {c: recommender(Retriever(pop[:, c : c + 1]), ones, seen) for c in range(len(names))}
    for c, name in enumerate(names):
        level_metrics = ranking_metrics(pop_recs[c], tu, ti, tl, [name], n_items, ks)
        results["popularity"].update(
            {k: v for k, v in level_metrics.items() if k.endswith(f"/{name}")}
        )

    if world is not None:
        users_df = pl.read_parquet(features_dir / "users.parquet").sort("user_idx")
        items_df = pl.read_parquet(features_dir / "items.parquet").sort("item_idx")
        sim_user = parse_index(users_df["user_id"].to_list())
        sim_item = parse_index(items_df["item_id"].to_list())

        def true_gain(users: np.ndarray) -> dict[str, np.ndarray]:
            probs = world.true_probabilities(world.affinity_matrix(sim_user[users])[:, :, sim_item])
            return {name: probs[name] for name in names}

        eval_users = np.unique(tu)
        exclude = [seen[u] for u in eval_users]
        results["gnolr"].update(
            ground_truth_ndcg(gnolr_rec, eval_users, true_gain, exclude, names, ks)
        )
        for c, name in enumerate(names):
            gt = ground_truth_ndcg(pop_recs[c], eval_users, true_gain, exclude, [name], ks)
            results["popularity"].update(gt)
    return results


def main() -> None:
    params = load_params()
    embeddings = GNOLREmbeddings.load(MODEL / "embeddings.npz")
    world = World.load(WORLD) if WORLD.exists() else None
    results = evaluate(FEATURES, embeddings, world, params.evaluate.ks)
    write_json(METRICS, results)
    info = json.loads((MODEL / "info.json").read_text())
    mlflow.set_tracking_uri(tracking_uri())
    with mlflow.start_run(run_id=info["run_id"]):
        mlflow.log_metrics({f"test/{k}": v for k, v in results["gnolr"].items() if np.isfinite(v)})
    with start_run(params, "evaluate", "popularity"):
        mlflow.log_metrics(
            {f"test/{k}": v for k, v in results["popularity"].items() if np.isfinite(v)}
        )
    deepest = params.contract.levels[-1]
    for model, m in results.items():
        line = ", ".join(
            f"{key} {m[key]:.4f}"
            for key in (f"auc/{deepest}", f"ndcg_at_10/{deepest}", f"gt_ndcg_at_10/{deepest}")
            if key in m
        )
        print(f"evaluate: {model:<10} {line}")
    print(f"evaluate: all metrics → {METRICS}")


if __name__ == "__main__":
    try:
        main()
    except ValueError as exc:
        sys.exit(f"evaluate failed: {exc}")
