"""Training speed of GNOLR and of the per-level BCE two-towers, at the same batch size and threads.

    .venv/bin/python benchmarks/export_arrays.py syn.npz --features data/features  # arrays of a run
    .venv/bin/python benchmarks/export_arrays.py ml.npz --source movielens-100k
    .venv/bin/python benchmarks/train_speed.py syn.npz ml.npz --accelerator cpu --epochs 2

Each model, in params.yaml's ``gnolr`` configuration (the one ``dvc repro`` trains), trains
``--epochs`` epochs (no early stop) per batch size through the product's own
path (``models.gnolr.fit.fit_gnolr``, Lightning, the device chosen by ``--accelerator``). GNOLR is one
model for all T levels; the per-level baseline is T single-level models, so one of its epochs
passes over the data T times. The table gives impressions per second (rows × epochs / wall
seconds, what a user waits for), seconds per epoch and the best validation AUC product. The arrays
file (``export_arrays.py``) lets a machine without the feature pipeline's data and stack (a GPU
box, see ``gpu_train.sh``) run it.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from evaluation.validation import LevelAUC
from models.data import Interactions
from models.gnolr.config import GNOLRConfig
from models.gnolr.fit import fit_gnolr, fit_per_level


def _default_gnolr() -> dict:
    """params.yaml's ``gnolr`` section: the configuration ``dvc repro`` trains."""
    root = Path(__file__).resolve().parents[1]
    return yaml.safe_load((root / "params.yaml").read_text())["gnolr"]


def train(model: str, z, batch: int, epochs: int, accelerator: str) -> tuple[float, float, str]:
    """(wall seconds, best validation AUC product or per-level mean, device) of one training."""
    split = {
        s: Interactions(z[f"{s}_user_idx"], z[f"{s}_item_idx"], z[f"{s}_level"])
        for s in ("train", "valid")
    }
    names = [str(x) for x in z["levels"]]
    n_users, n_items = int(z["n"][0]), int(z["n"][1])
    cfg = GNOLRConfig.model_validate(
        {**_default_gnolr(), "batch_size": batch, "max_epochs": epochs, "patience": epochs}
    )
    start = time.perf_counter()
    if model == "gnolr":
        res = fit_gnolr(
            split["train"],
            split["valid"],
            n_users,
            n_items,
            names,
            cfg,
            LevelAUC(names),
            progress=False,
            accelerator=accelerator,
        )
        return time.perf_counter() - start, res.info["best_valid_auc_product"], res.info["device"]
    fits = fit_per_level(
        split["train"],
        split["valid"],
        n_users,
        n_items,
        names,
        cfg,
        lambda name, c: LevelAUC([name]),
        progress=False,
        accelerator=accelerator,
    )
    scores = [f.info["best_valid_auc_product"] for f in fits]
    res = fits[-1]
    return time.perf_counter() - start, float(np.prod(scores)), res.info["device"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, nargs="+", help=".npz arrays, one per dataset")
    parser.add_argument(
        "--models",
        nargs="+",
        default=["gnolr", "bce_per_level"],
        choices=["gnolr", "bce_per_level"],
    )
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[2048])
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.machine()
    print(f"torch {torch.__version__}, {device}, torch threads {torch.get_num_threads()}")
    print(
        "| dataset | model | device | batch | train rows | s/epoch | impressions/s "
        "| valid AUC product |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for path in args.data:
        z = np.load(path)
        rows = len(z["train_level"])
        for batch in args.batch_sizes:
            for model in args.models:
                seconds, score, dev = train(model, z, batch, args.epochs, args.accelerator)
                print(
                    f"| {path.stem} | {model} | {dev} | {batch} | {rows:,} | "
                    f"{seconds / args.epochs:.1f} | {rows * args.epochs / seconds:,.0f} | "
                    f"{score:.4f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
