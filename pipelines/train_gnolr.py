"""Stage `train_gnolr`: fit GNOLR with Lightning and log the run to MLflow.

Outputs (atomically, in data/models/gnolr/): embeddings.npz (sub-embeddings, γ, thresholds),
model.pt (state dict), info.json (run id, γ, thresholds, epochs, speed).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import mlflow
import torch
from lightning.pytorch.loggers import MLFlowLogger

from features import side_features
from pipelines.common import (
    atomic_dir,
    log_dataset,
    read_interactions,
    start_run,
    tracking_uri,
    write_json,
)
from pipelines.params import load_params

FEATURES = Path("data/features")
OUT = Path("data/models/gnolr")


def main() -> None:
    params = load_params()
    meta = json.loads((FEATURES / "meta.json").read_text())
    train = read_interactions(FEATURES / "train.parquet")
    valid = read_interactions(FEATURES / "valid.parquet")
    from models.train import fit_gnolr

    with start_run(params, "train_gnolr", "gnolr") as run:
        digest = log_dataset(
            FEATURES, f"{params.source.kind}-features", ["train.parquet", "valid.parquet"]
        )
        logger = MLFlowLogger(
            experiment_name=params.mlflow.experiment,
            tracking_uri=tracking_uri(),
            run_id=run.info.run_id,
        )
        user_side = side_features.load(FEATURES / "user_side.npz")
        item_side = side_features.load(FEATURES / "item_side.npz")
        result = fit_gnolr(
            train,
            valid,
            meta["n_users"],
            meta["n_items"],
            [meta["base_rates"][name] for name in meta["levels"]],
            meta["levels"],
            params.gnolr,
            logger=logger,
            user_features=user_side,
            item_features=item_side,
        )
        info = {
            "user_features": sorted(user_side) if params.gnolr.use_features else [],
            "item_features": sorted(item_side) if params.gnolr.use_features else [],
            **result.info,
            "run_id": run.info.run_id,
            "dataset_digest": digest,
            "levels": meta["levels"],
        }
        mlflow.log_metrics(
            {
                "train/samples_per_second": info["train_samples_per_second"],
                "train/best_epoch": info["best_epoch"],
                "valid/best_auc_product": info["best_valid_auc_product"],
            }
        )
        mlflow.log_dict(
            {"gamma": info["gamma"], "thresholds": info["thresholds"]}, "gnolr/link.json"
        )
        with atomic_dir(OUT) as tmp:
            result.embeddings.save(tmp / "embeddings.npz")
            torch.save(result.model.state_dict(), tmp / "model.pt")
            write_json(tmp / "info.json", info)
            mlflow.log_artifacts(str(tmp), artifact_path="gnolr")
    print(
        f"train_gnolr: best epoch {info['best_epoch']} of {info['epochs_run']}, valid AUC product "
        f"{info['best_valid_auc_product']:.4f}, γ={[round(g, 3) for g in info['gamma']]}, "
        f"{info['train_samples_per_second']:,.0f} samples/s → {OUT}/ (MLflow run {run.info.run_id})"
    )


if __name__ == "__main__":
    try:
        main()
    except ValueError as exc:
        sys.exit(f"train_gnolr failed: {exc}")
