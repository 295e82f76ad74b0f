"""Stage `train_gnolr`: fit GNOLR with Lightning and log the run to MLflow.

Outputs (atomically, in data/models/gnolr/): embeddings.npz (sub-embeddings, γ, thresholds),
model.pt (state dict), info.json (run id, logged model URI, γ, thresholds, epochs, speed). MLflow
run (stage=train_gnolr, model=gnolr): params, data input, Lightning's per-epoch ``train/*`` and
``valid/*`` metrics, the files under ``gnolr/`` and the pyfunc model ``gnolr``.

``scale.train`` (docs/scaling-out.md): with ``strategy: ddp`` this process launches the ranks
itself, or — started by torchrun / SLURM, one process per rank — every rank trains and only rank 0
logs to MLflow and writes the outputs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import mlflow
import polars as pl
import torch

from evaluation.validation import LevelAUC
from features import side_features
from models.data import Interactions
from models.fitting import global_rank
from models.gnolr.fit import fit_gnolr
from models.pyfunc import GNOLRPairs, log_pair_model
from pipelines.outputs import atomic_dir, write_json
from pipelines.params import load_params
from pipelines.stage_logger import stage_logger
from pipelines.tracking import log_dataset, start_run

FEATURES = Path("data/features")
OUT = Path("data/models/gnolr")


def main() -> None:
    params = load_params()
    meta = json.loads((FEATURES / "meta.json").read_text())
    train, valid = (
        Interactions.from_frame(pl.read_parquet(FEATURES / f"{split}.parquet"))
        for split in ("train", "valid")
    )

    user_side = side_features.load(FEATURES / "user_side.npz")
    item_side = side_features.load(FEATURES / "item_side.npz")

    def fit(logger):
        return fit_gnolr(
            train,
            valid,
            meta["n_users"],
            meta["n_items"],
            meta["levels"],
            params.gnolr,
            LevelAUC(meta["levels"]),
            logger=logger,
            user_features=user_side,
            item_features=item_side,
            **params.scale.train.trainer_kwargs(),
        )

    if global_rank() != 0:  # one rank of a torchrun / SLURM job: train only
        fit(None)
        return
    with start_run(params, "train_gnolr", "gnolr") as run:
        digest = log_dataset(
            FEATURES, f"{params.source.kind}-features", ["train.parquet", "valid.parquet"]
        )
        result = fit(stage_logger(params, run))
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
            model = log_pair_model(
                "gnolr",
                GNOLRPairs(meta["levels"]),
                {"embeddings": str(tmp / "embeddings.npz")},
                [f"p_{name}" for name in meta["levels"]],
                meta["n_users"],
                meta["n_items"],
            )
            info["model_uri"] = model.model_uri
            write_json(tmp / "info.json", info)
            mlflow.log_artifacts(str(tmp), artifact_path="gnolr")
    print(
        f"train_gnolr: best epoch {info['best_epoch']} of {info['epochs_run']}, valid AUC product "
        f"{info['best_valid_auc_product']:.4f}, γ={[round(g, 3) for g in info['gamma']]}, "
        f"{info['train_samples_per_second']:,.0f} samples/s → {OUT}/ (MLflow run {run.info.run_id}, "
        f"model {info['model_uri']})"
    )


if __name__ == "__main__":
    try:
        main()
    except ValueError as exc:
        sys.exit(f"train_gnolr failed: {exc}")
