"""Training speed of GNOLR and of the per-level BCE two-towers, at the same batch size and threads.

    .venv/bin/python benchmarks/train_speed.py syn.npz --export data/features  # arrays of a run
    .venv/bin/python benchmarks/train_speed.py ml.npz --export-source movielens-100k
    .venv/bin/python benchmarks/train_speed.py syn.npz ml.npz --accelerator cpu --epochs 2

Each model, in params.yaml's ``gnolr`` configuration (the one ``dvc repro`` trains), trains
``--epochs`` epochs (no early stop) per batch size through the product's own
path (``models.gnolr.fit.fit_gnolr``, Lightning, the device chosen by ``--accelerator``). GNOLR is one
model for all T levels; the per-level baseline is T single-level models, so one of its epochs
passes over the data T times. The table gives impressions per second (rows × epochs / wall
seconds, what a user waits for), seconds per epoch and the best validation AUC product. The arrays
file lets a machine without the feature pipeline's data and stack (a GPU box, see
``gpu_train.sh``) run it.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from evaluation.validation import LevelAUC
from features.contract import Col
from models.data import Interactions
from models.gnolr.config import GNOLRConfig
from models.gnolr.fit import fit_gnolr, fit_per_level


def export(features: Path, out: Path) -> None:
    """Write the train/valid arrays and level facts of a features directory to ``out`` (.npz)."""
    import polars as pl

    meta = json.loads((features / "meta.json").read_text())
    arrays = {
        "levels": np.array(meta["levels"]),
        "n": np.array([meta["n_users"], meta["n_items"]]),
        "base_rates": np.array([meta["base_rates"][name] for name in meta["levels"]]),
    }
    for split in ("train", "valid"):
        f = pl.read_parquet(features / f"{split}.parquet")
        for col in (Col.USER_IDX, Col.ITEM_IDX, Col.LEVEL):
            arrays[f"{split}_{col}"] = f[col].to_numpy()
    np.savez_compressed(out, **arrays)


def export_source(kind: str, out: Path) -> None:
    """Build the training sets of source ``kind`` (params.yaml otherwise) and export them."""
    import tempfile

    from features.training_sets import training_sets_from_source
    from pipelines.outputs import write_json
    from pipelines.params import load_params

    params = load_params()
    params.source.kind = kind
    sets = training_sets_from_source(params.source, params.contract, params.features)[0]
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("train", "valid"):
            sets.splits[name].write_parquet(Path(tmp) / f"{name}.parquet")
        write_json(Path(tmp) / "meta.json", sets.meta)
        export(Path(tmp), out)


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
    parser.add_argument("--export", type=Path, help="write the arrays of this features dir to DATA")
    parser.add_argument("--export-source", help="write the arrays of this source kind to DATA")
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
    if args.export or args.export_source:
        if args.export:
            export(args.export, args.data[0])
        else:
            export_source(args.export_source, args.data[0])
        return
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
