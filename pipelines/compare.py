"""`python -m pipelines.compare`: GNOLR, its ablations and the baselines under one protocol.

Builds the training sets of the configured source in memory (as `ingest` + `features` do), trains
every model with the same params, evaluates each through the service's retrieval path
(serving/evaluation.py), logs one MLflow run per model under a parent run, and writes a Markdown
results table (rows = models, columns = metrics per level) to ``results/compare_<source>.md``.

    python -m pipelines.compare                          # the source in params.yaml
    python -m pipelines.compare --source movielens-100k  # MovieLens-100K with graded levels
    python -m pipelines.compare --source movielens-100k --protocol stratified

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
import polars as pl

from features import side_features
from features.contract import Col, validate
from features.sources import load_events, load_side_features
from features.split import SplitConfig
from features.training_sets import TrainingSets, build_training_sets
from models.baselines import BPRConfig, PerLevelScorer, PopularityScorer, Scorer, fit_bpr
from models.popularity import popularity_counts
from models.train import Interactions, fit_gnolr, fit_per_level
from pipelines.common import start_run, write_json
from pipelines.evaluate import true_gain_fn
from pipelines.params import Params, load_params
from serving.evaluation import TestData, evaluate_scorer
from serving.retrieval import SeenItems

# GNOLR variants as overrides of the `gnolr` params (methods.md §1 ablations, plus multi-task BCE).
VARIANTS: dict[str, dict] = {
    "gnolr": {},
    "gnolr_v0": {"scoring": "independent"},
    "gnolr_v1": {"loss": "full"},
    "naive_olr": {"scoring": "shared", "loss": "full"},
    "mt_bce": {"scoring": "independent", "loss": "bce"},
}
MODELS = [*VARIANTS, "bce_per_level", "bpr", "popularity"]


def interactions(frame: pl.DataFrame) -> Interactions:
    return Interactions(
        frame["user_idx"].to_numpy(), frame["item_idx"].to_numpy(), frame["level"].to_numpy()
    )


def prepare(params: Params) -> tuple[TrainingSets, object, dict, dict]:
    """The source's training sets, ground truth (simulated data) and side-feature codes, in memory."""
    raw, world = load_events(params.source, progress=False)
    names = params.contract.names()
    raw = raw.filter(pl.col("event").is_in(list(names.all)))  # e.g. only clicks in `stratified`
    valid, _, report = validate(raw, names)
    print(f"compare: {report.n_valid:,} valid events from {params.source.kind}")
    sets = build_training_sets(valid.lazy(), params.contract.names(), params.features)
    users, items = load_side_features(params.source, world)
    user_side = (
        side_features.encode(sets.users, users, Col.USER, "user_idx") if users is not None else {}
    )
    item_side = (
        side_features.encode(sets.items, items, Col.ITEM, "item_idx") if items is not None else {}
    )
    return sets, world, user_side, item_side


def train_model(
    name: str, sets: TrainingSets, params: Params, side: tuple[dict, dict] = ({}, {})
) -> tuple[Scorer, dict]:
    """Train one model of :data:`MODELS`; returns its scorer and timing facts."""
    meta = sets.meta
    names = meta["levels"]
    rates = [meta["base_rates"][n] for n in names]
    train, valid = interactions(sets.splits["train"]), interactions(sets.splits["valid"])
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
    sets, world, user_side, item_side = prepare(params)
    names = sets.meta["levels"]
    train = sets.splits["train"]
    pos = train.filter(pl.col("level") >= 1)
    test = sets.splits["test"]
    data = TestData(
        test["user_idx"].to_numpy(),
        test["item_idx"].to_numpy(),
        test["level"].to_numpy(),
        SeenItems.from_pairs(
            pos["user_idx"].to_numpy(), pos["item_idx"].to_numpy(), sets.meta["n_users"]
        ),
        names,
        sets.meta["n_items"],
    )
    gain = true_gain_fn(sets.users, sets.items, world, names) if world is not None else None

    results: dict[str, dict] = {}
    with start_run(params, "compare", f"compare-{params.source.kind}") as parent:
        for name in args.models:
            print(f"compare: training {name} ...", flush=True)
            scorer, info = train_model(name, sets, params, (user_side, item_side))
            metrics = evaluate_scorer(scorer, data, params.evaluate.ks, gain)
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
            f"Best value per column in bold. Generated by `python -m pipelines.compare"
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
