"""Stage `train_relmf`: fit matrix factorisation with the Rel-MF loss and log the run to MLflow.

Positives are the training rows with ``level ≥ relmf.level``; every other (user, item) pair is
unlabeled (Y = 0). The exposure propensity θ is the per-item estimate of the features stage
(``items.parquet: propensity`` = max((n_i / max_j n_j)^η, floor), η = ``features.propensity.eta``)
— not the row-level logged serving probability, which is a per-slot probability and belongs to the
off-policy estimators (models/ope.py). Training stops early on the validation IPS-DCG@k.

Outputs (atomically, in data/models/relmf/): embeddings.npz (:class:`models.mf.MFEmbeddings`),
model.pt (state dict), info.json (run id, epochs, validation and test IPS metrics),
propensity.json (distribution of θ over the catalogue and over the training positives, share
below M) and propensity.csv (its log10 histogram), all also logged to MLflow. For DVC:
data/metrics/relmf.json (metrics) and data/metrics/relmf_propensity.csv (the histogram, a plot,
also the run's artifact ``plots/relmf_propensity.csv``). MLflow run (stage=train_relmf,
model=relmf): params, data input, metrics of :func:`run_metrics` and the pyfunc model ``relmf``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import mlflow
import numpy as np
import polars as pl
import torch

from evaluation.ips import IPSRankingMetrics
from evaluation.validation import IPSDCG
from features.contract import Col
from features.propensity import propensity_histogram, propensity_report
from features.seen import SeenItems
from models.data import Pairs
from models.fitting import global_rank
from models.pyfunc import RelMFPairs, log_pair_model
from models.relmf.config import RelMFConfig
from models.relmf.fit import fit_relmf
from pipelines.outputs import atomic_dir, write_csv, write_json
from pipelines.params import Params, load_params
from pipelines.stage_logger import stage_logger
from pipelines.tracking import log_dataset, log_plot, split_metrics, start_run
from serving.recommend import ranker
from serving.retrieval import Retriever

FEATURES = Path("data/features")
OUT = Path("data/models/relmf")
METRICS = Path("data/metrics/relmf.json")
PLOT = Path("data/metrics/relmf_propensity.csv")
TEST_KS = (10, 20)


def load_config(path: str | Path = "params.yaml") -> tuple[Params, RelMFConfig]:
    """The pipeline's params, validated, and their ``relmf`` section."""
    params = load_params(path)
    return params, params.relmf


def read_positives(path: Path, level: int, exclude: Pairs | None = None) -> Pairs:
    """Distinct (user, item) pairs of a split with ``level ≥ level``, minus ``exclude``."""
    pair = [Col.USER_IDX, Col.ITEM_IDX]
    frame = (
        pl.read_parquet(path, columns=[*pair, Col.LEVEL])
        .filter(pl.col(Col.LEVEL) >= level)
        .select(pair)
        .unique()
    )
    if exclude is not None and exclude.users.size:
        seen = pl.DataFrame(
            {Col.USER_IDX: exclude.users, Col.ITEM_IDX: exclude.items},
            schema={c: frame.schema[c] for c in pair},
        )
        frame = frame.join(seen, on=pair, how="anti")
    return Pairs(frame[Col.USER_IDX].to_numpy(), frame[Col.ITEM_IDX].to_numpy())


def item_propensity(features_dir: Path) -> np.ndarray:
    """θ per item index from items.parquet, shape (n_items,)."""
    items = pl.read_parquet(features_dir / "items.parquet", columns=[Col.ITEM_IDX, Col.PROPENSITY])
    return items.sort(Col.ITEM_IDX)[Col.PROPENSITY].to_numpy()


def ips_test_metrics(result, train: Pairs, test: Pairs, theta: np.ndarray, cfg: RelMFConfig):
    """IPS-DCG@k and IPS-Recall@k of the test positives through the service's retrieval path."""
    emb = result.embeddings
    seen = SeenItems.from_pairs(train.users, train.items, len(emb.user_factors))
    recommend = ranker(Retriever(emb.item_vectors()), emb.user_vectors(), seen)
    out = {}
    for k in TEST_KS:
        metric = IPSRankingMetrics(k, cfg.valid_floor)
        out.update(
            metric.evaluate_recommender(recommend, test.users, test.items, theta[test.items])
        )
    return out


def run_metrics(info: dict, report: dict) -> dict[str, float]:
    """The run's summary metrics in the ``<split>/<metric>`` scheme: ``test/ips_*`` from the test
    split, ``valid/best_ips_dcg_at_<k>``, and the training positives' θ report as
    ``train/propensity_<stat>``."""
    test = {k.removeprefix("test/"): v for k, v in info.items() if k.startswith("test/")}
    best = {
        k.replace("best_valid_", "best_"): v for k, v in info.items() if k.startswith("best_valid_")
    }
    return {
        **split_metrics("test", test),
        **split_metrics("valid", best),
        **split_metrics("train", report["train_positives"], prefix="propensity_"),
    }


def main() -> None:
    params, cfg = load_config()
    meta = json.loads((FEATURES / "meta.json").read_text())
    if cfg.level > len(meta["levels"]):
        raise ValueError(f"relmf.level {cfg.level} exceeds the {len(meta['levels'])} levels")
    train = read_positives(FEATURES / "train.parquet", cfg.level)
    valid = read_positives(FEATURES / "valid.parquet", cfg.level, exclude=train)
    test = read_positives(FEATURES / "test.parquet", cfg.level, exclude=train)
    theta = item_propensity(FEATURES)
    n_users, n_items = meta["n_users"], meta["n_items"]

    def fit(logger):
        return fit_relmf(
            train,
            n_users,
            n_items,
            theta,
            cfg,
            IPSDCG(valid, theta, cfg.valid_k, cfg.valid_floor) if valid.users.size else None,
            n_levels=len(meta["levels"]),
            logger=logger,
            progress=logger is not None,
            **params.scale.train.trainer_kwargs(),
        )

    if global_rank() != 0:  # one rank of a torchrun / SLURM job: train only
        fit(None)
        return
    with start_run(params, "train_relmf", "relmf") as run:
        digest = log_dataset(
            FEATURES,
            f"{params.source.kind}-features",
            ["train.parquet", "valid.parquet", "items.parquet"],
        )
        result = fit(stage_logger(params, run))
        report = {
            "items": propensity_report(theta, cfg.loss.clip),
            "train_positives": propensity_report(theta[train.items], cfg.loss.clip),
            "estimator": cfg.loss.estimator,
        }
        histogram = propensity_histogram({"items": theta, "train_positives": theta[train.items]})
        test_metrics = ips_test_metrics(result, train, test, theta, cfg) if test.users.size else {}
        info = {
            **result.info,
            **{f"test/{k}": v for k, v in test_metrics.items()},
            "run_id": run.info.run_id,
            "dataset_digest": digest,
            "levels": meta["levels"],
            "level": cfg.level,
        }
        mlflow.log_metrics(run_metrics(info, report))
        with atomic_dir(OUT) as tmp:
            result.embeddings.save(tmp / "embeddings.npz")
            torch.save(result.model.state_dict(), tmp / "model.pt")
            model = log_pair_model(
                "relmf",
                RelMFPairs(),
                {"embeddings": str(tmp / "embeddings.npz")},
                ["p_relevance"],
                n_users,
                n_items,
            )
            info["model_uri"] = model.model_uri
            write_json(tmp / "info.json", info)
            write_json(tmp / "propensity.json", report)
            pl.DataFrame(histogram).write_csv(tmp / "propensity.csv")
            mlflow.log_artifacts(str(tmp), artifact_path="relmf")
        write_json(METRICS, {k: v for k, v in info.items() if isinstance(v, int | float)} | report)
        write_csv(PLOT, histogram)
        log_plot(PLOT)
    valid_key = f"best_valid_ips_dcg_at_{cfg.valid_k}"
    print(
        f"train_relmf: {cfg.loss.estimator} (M={cfg.loss.clip}, {cfg.loss.local_loss}), "
        f"{info['n_positives']:,} positives, {report['train_positives']['fraction_below_clip']:.1%} "
        f"with θ < M; epochs {info['epochs_run']}, valid IPS-DCG@{cfg.valid_k} "
        f"{info.get(valid_key, float('nan')):.4f} → {OUT}/, {METRICS}, {PLOT} (MLflow run "
        f"{run.info.run_id}, model {info['model_uri']})"
    )


if __name__ == "__main__":
    try:
        main()
    except ValueError as exc:
        sys.exit(f"train_relmf failed: {exc}")
