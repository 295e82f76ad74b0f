"""Stage `evaluate`: one metric set for GNOLR and the popularity baseline.

AUC and GAUC per level on the test impressions; Recall/NDCG/MRR@K per level over the full
catalogue, excluding each user's training positives, through the same retrieval path as the
service; on simulated data also NDCG@K against the true probabilities (serving/evaluation.py).
Writes data/metrics/evaluate.json and logs ``test/<metric>/<level>`` (``@`` spelled ``_at_``) to one
run per model tagged stage=evaluate, model=<gnolr|popularity|relmf>, and to the training runs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import mlflow
import polars as pl
from mlflow.exceptions import MlflowException

from evaluation.protocol import TestData, evaluate_scorer, simulator_gain
from features.contract import Col
from features.seen import SeenItems
from features.sources.synthetic import World
from models.baselines import PopularityScorer, popularity_counts
from models.gnolr.network import GNOLREmbeddings
from models.relmf.network import MFEmbeddings
from pipelines.outputs import write_json
from pipelines.params import load_params
from pipelines.tracking import log_dataset, split_metrics, start_run
from serving.recommend import level_ranker

FEATURES = Path("data/features")
MODEL = Path("data/models/gnolr")
RELMF = Path("data/models/relmf/embeddings.npz")
WORLD = Path("data/ingest/world.npz")
METRICS = Path("data/metrics/evaluate.json")


def load_test_data(features_dir: Path) -> tuple[TestData, pl.DataFrame]:
    """The test split as :class:`TestData`, and the training rows (for baselines)."""
    meta = json.loads((features_dir / "meta.json").read_text())
    cols = [Col.USER_IDX, Col.ITEM_IDX, Col.LEVEL]
    train = pl.read_parquet(features_dir / "train.parquet", columns=cols)
    test = pl.read_parquet(features_dir / "test.parquet", columns=[*cols, Col.PROPENSITY])
    data = TestData(
        *(test[c].to_numpy() for c in cols),
        seen=SeenItems.from_training(train, meta["n_users"]),
        names=meta["levels"],
        n_items=meta["n_items"],
        propensity=test[Col.PROPENSITY].to_numpy(),
    )
    return data, train


def evaluate(
    features_dir: Path,
    embeddings: GNOLREmbeddings,
    world: World | None,
    ks: list[int],
    relmf: MFEmbeddings | None = None,
) -> dict:
    """Metrics of GNOLR, popularity (and Rel-MF when given) on the test split, by model name."""
    data, train = load_test_data(features_dir)
    names = list(data.names)
    counts = popularity_counts(
        train[Col.ITEM_IDX].to_numpy(), train[Col.LEVEL].to_numpy(), data.n_items, len(names)
    )
    gain = None
    if world is not None:
        users = pl.read_parquet(features_dir / "users.parquet")
        gain = simulator_gain(users, pl.read_parquet(features_dir / "items.parquet"), world, names)
    scorers = {"gnolr": embeddings, "popularity": PopularityScorer(counts, data.seen.n_users)}
    if relmf is not None:
        scorers["relmf"] = relmf
    return {
        name: evaluate_scorer(scorer, data, ks, level_ranker(scorer, data.seen), gain)
        for name, scorer in scorers.items()
    }


def training_runs() -> dict[str, str]:
    """The MLflow run id of each trained model that was evaluated, by model name."""
    runs = {}
    for name, info in (("gnolr", MODEL / "info.json"), ("relmf", RELMF.parent / "info.json")):
        if info.exists() and (run_id := json.loads(info.read_text()).get("run_id")):
            runs[name] = run_id
    return runs


def log_results(params, results: dict[str, dict], train_runs: dict[str, str]) -> None:
    """One MLflow run per model (tags stage=evaluate, model=<name>, train_run=<its training run>)
    with ``test/<metric>/<level>`` metrics; the same metrics also go to the model's training run,
    so training runs compare side by side with their parameters."""
    for name, metrics in results.items():
        scheme = split_metrics("test", metrics)
        with start_run(params, "evaluate", f"evaluate-{name}", model=name):
            log_dataset(FEATURES, f"{params.source.kind}-features", ["test.parquet"], "evaluation")
            if name in train_runs:
                mlflow.set_tag("train_run", train_runs[name])
            mlflow.log_metrics(scheme)
        if name in train_runs:
            try:
                with mlflow.start_run(run_id=train_runs[name]):
                    mlflow.log_metrics(scheme)
            except MlflowException as exc:  # e.g. a model trained against another store
                print(f"evaluate: {name}'s training run {train_runs[name]} not updated: {exc}")


def main() -> None:
    params = load_params()
    embeddings = GNOLREmbeddings.load(MODEL / "embeddings.npz")
    world = World.load(WORLD) if WORLD.exists() else None
    relmf = MFEmbeddings.load(RELMF) if RELMF.exists() else None
    results = evaluate(FEATURES, embeddings, world, params.evaluate.ks, relmf)
    write_json(METRICS, results)
    log_results(params, results, training_runs())
    deepest = params.contract.levels[-1]
    keys = (f"auc/{deepest}", f"ndcg_at_10/{deepest}", f"gt_ndcg_at_10/{deepest}")
    for model, m in results.items():
        line = ", ".join(f"{key} {m[key]:.4f}" for key in keys if key in m)
        print(f"evaluate: {model:<10} {line}")
    print(
        f"evaluate: {len(results)} models × {len(next(iter(results.values())))} metrics → "
        f"{METRICS} and MLflow runs tagged stage=evaluate"
    )


if __name__ == "__main__":
    try:
        main()
    except ValueError as exc:
        sys.exit(f"evaluate failed: {exc}")
