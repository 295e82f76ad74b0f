"""`python -m experiments.compare`: GNOLR, its ablations and the baselines under one protocol.

Builds the training sets of the configured source in memory (as `ingest` + `features` do), trains
every model with the same params, evaluates each through the service's retrieval path
(evaluation/protocol.py with serving/recommend.py's rankers), logs one MLflow run per model under a
parent run, and writes a Markdown results table (rows = models, columns = metrics per level) to
``results/compare_<source>.md``.

    python -m experiments.compare                          # the source in params.yaml
    python -m experiments.compare --source movielens-100k  # MovieLens-100K with graded levels
    python -m experiments.compare --source movielens-100k --protocol stratified

``--protocol stratified`` is the protocol of the Microsoft Recommenders MovieLens table: every
rating is a positive (one level), each user's ratings are split at random 75/25 (here 70 train /
5 validation for early stopping / 25 test), and the top 10 excludes training items.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import mlflow
import numpy as np

from evaluation.protocol import TestData, evaluate_scorer, simulator_gain
from evaluation.validation import LevelAUC
from features.contract import Col
from features.seen import SeenItems
from features.split import SplitConfig
from features.training_sets import TrainingSets, training_sets_from_source
from models.baselines import (
    BPRConfig,
    PerLevelScorer,
    PopularityScorer,
    Scorer,
    fit_bpr,
    popularity_counts,
)
from models.data import Interactions
from models.gnolr.fit import fit_gnolr, fit_per_level
from pipelines.outputs import write_json
from pipelines.params import Params, load_params
from pipelines.tracking import start_run
from serving.recommend import level_ranker

# GNOLR variants as overrides of the `gnolr` params (methods.md §1 ablations, plus multi-task BCE).
VARIANTS: dict[str, dict] = {
    "gnolr": {},
    "gnolr_v0": {"scoring": "independent"},
    "gnolr_v1": {"loss": "full"},
    "naive_olr": {"scoring": "shared", "loss": "full"},
    "mt_bce": {"scoring": "independent", "loss": "bce"},
}
MODELS = [*VARIANTS, "bce_per_level", "bpr", "popularity"]


def train_model(
    name: str, sets: TrainingSets, params: Params, side: tuple[dict, dict] = ({}, {})
) -> tuple[Scorer, dict]:
    """Train one model of :data:`MODELS`; returns its scorer and timing facts."""
    meta = sets.meta
    names = meta["levels"]
    rates = [meta["base_rates"][n] for n in names]
    train, valid = (Interactions.from_frame(sets.splits[s]) for s in ("train", "valid"))
    n_users, n_items = meta["n_users"], meta["n_items"]
    start = time.perf_counter()
    if name in VARIANTS:
        cfg = params.gnolr.model_copy(update=VARIANTS[name])
        fit = fit_gnolr(
            train,
            valid,
            n_users,
            n_items,
            rates,
            names,
            cfg,
            LevelAUC(names),
            progress=False,
            user_features=side[0],
            item_features=side[1],
        )
        return fit.embeddings, {**fit.info, "seconds": time.perf_counter() - start}
    if name == "bce_per_level":
        fits = fit_per_level(
            train,
            valid,
            n_users,
            n_items,
            rates,
            names,
            params.gnolr.model_copy(update={"gamma": "auto"}),
            LevelAUC,
            progress=False,
            user_features=side[0],
            item_features=side[1],
        )
        epochs = sum(f.info["epochs_run"] for f in fits)
        scorer = PerLevelScorer([f.embeddings for f in fits])
        return scorer, {"seconds": time.perf_counter() - start, "epochs_run": epochs}
    if name == "bpr":
        pos = train.levels >= 1
        scorer = fit_bpr(
            train.users[pos], train.items[pos], n_users, n_items, BPRConfig(), len(names)
        )
        return scorer, {"seconds": time.perf_counter() - start, "epochs_run": BPRConfig().epochs}
    if name == "popularity":
        counts = popularity_counts(train.items, train.levels, n_items, len(names))
        return PopularityScorer(counts, n_users), {"seconds": time.perf_counter() - start}
    raise ValueError(f"unknown model {name!r}; choose from {MODELS}")


def results_table(results: dict[str, dict], names: list[str], k: int = 10) -> str:
    """Markdown: one row per model, AUC, GAUC, NDCG@k, Recall@k (and truth NDCG@k) per level."""
    metrics = ["auc", "gauc", f"ndcg_at_{k}", f"recall_at_{k}"]
    if any(f"gt_ndcg_at_{k}/{names[0]}" in r for r in results.values()):
        metrics.append(f"gt_ndcg_at_{k}")
    cols = [f"{m}/{n}" for m in metrics for n in names]
    lines = [
        "| model | " + " | ".join(cols) + " | train s |",
        "|---|" + "---:|" * (len(cols) + 1),
    ]
    for model, r in results.items():
        best = {c: max(v.get(c, float("nan")) for v in results.values()) for c in cols}
        cells = []
        for c in cols:
            v = r.get(c, float("nan"))
            cell = f"{v:.4f}" if np.isfinite(v) else "–"
            cells.append(f"**{cell}**" if np.isfinite(v) and v == best[c] else cell)
        lines.append(f"| {model} | " + " | ".join(cells) + f" | {r.get('train_seconds', 0):.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", help="override source.kind")
    parser.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    parser.add_argument("--max-epochs", type=int, help="override gnolr.max_epochs")
    parser.add_argument("--protocol", choices=["temporal", "stratified"], default="temporal")
    parser.add_argument("--out", type=Path, default=Path("results"))
    args = parser.parse_args()
    params = load_params()
    if args.source:
        params.source.kind = args.source
    if args.protocol == "stratified":
        params.contract.levels, params.contract.reactions = ["click"], []
        params.features.split = SplitConfig(
            method="stratified_random", valid_fraction=0.05, test_fraction=0.25, seed=params.seed
        )
    if args.max_epochs:
        params.gnolr.max_epochs = args.max_epochs
    sets, world, user_side, item_side = training_sets_from_source(
        params.source, params.contract, params.features
    )
    names = sets.meta["levels"]
    test = sets.splits["test"]
    data = TestData(
        test[Col.USER_IDX].to_numpy(),
        test[Col.ITEM_IDX].to_numpy(),
        test[Col.LEVEL].to_numpy(),
        SeenItems.from_training(sets.splits["train"], sets.meta["n_users"]),
        names,
        sets.meta["n_items"],
    )
    gain = simulator_gain(sets.users, sets.items, world, names) if world is not None else None

    results: dict[str, dict] = {}
    with start_run(params, "compare", f"compare-{params.source.kind}") as parent:
        for name in args.models:
            print(f"compare: training {name} ...", flush=True)
            scorer, info = train_model(name, sets, params, (user_side, item_side))
            ranker = level_ranker(scorer, data.seen)
            metrics = evaluate_scorer(scorer, data, params.evaluate.ks, ranker, gain)
            results[name] = {**metrics, "train_seconds": info["seconds"]}
            with mlflow.start_run(run_name=name, nested=True):
                mlflow.set_tags({"stage": "compare", "model": name, "source": params.source.kind})
                mlflow.log_metrics({f"test/{k}": v for k, v in metrics.items() if np.isfinite(v)})
                mlflow.log_metric("train/seconds", info["seconds"])
            print(f"compare: {name} done in {info['seconds']:.0f} s", flush=True)
        table = results_table(results, names)
        header = (
            f"# Model comparison on `{params.source.kind}`\n\n"
            f"Test split of the {args.protocol} protocol; {sets.meta['rows']['test']:,} test impressions, "
            f"{sets.meta['n_items']:,} items ranked per user (training positives excluded). "
            f"Best value per column in bold. Generated by `python -m experiments.compare"
            f"{' --source ' + params.source.kind if args.source else ''}"
            f"{' --protocol stratified' if args.protocol == 'stratified' else ''}` "
            f"(MLflow run {parent.info.run_id}).\n\n"
        )
        args.out.mkdir(parents=True, exist_ok=True)
        stem = f"compare_{params.source.kind}" + (
            "_stratified" if args.protocol == "stratified" else ""
        )
        out = args.out / f"{stem}.md"
        out.write_text(header + table + "\n")
        write_json(args.out / f"{stem}.json", results)
        mlflow.log_artifact(str(out))
    print(table)
    print(f"compare: table → {out}")


if __name__ == "__main__":
    main()
