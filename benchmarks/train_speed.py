"""GNOLR training speed on the features of the last `dvc repro`, on CPU or CUDA.

    .venv/bin/python benchmarks/train_speed.py --export data/features bench.npz   # arrays only
    .venv/bin/python benchmarks/train_speed.py bench.npz --accelerator cpu --batch-sizes 2048

Trains ``--epochs`` epochs per batch size through the product's own path (``models.train.fit_gnolr``,
Lightning, the device chosen by ``--accelerator``) and prints a Markdown table of samples/s and the
best validation AUC product. The arrays file lets a machine without Polars run it.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from models.gnolr import GNOLRConfig
from models.train import Interactions, fit_gnolr


def export(features: Path, out: Path) -> None:
    import polars as pl

    meta = json.loads((features / "meta.json").read_text())
    arrays = {
        "levels": np.array(meta["levels"]),
        "n": np.array([meta["n_users"], meta["n_items"]]),
        "base_rates": np.array([meta["base_rates"][name] for name in meta["levels"]]),
    }
    for split in ("train", "valid"):
        f = pl.read_parquet(features / f"{split}.parquet")
        for col in ("user_idx", "item_idx", "level"):
            arrays[f"{split}_{col}"] = f[col].to_numpy()
    np.savez_compressed(out, **arrays)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--export", type=Path, help="write the arrays of this features dir to DATA")
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[2048])
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    if args.export:
        export(args.export, args.data)
        return
    z = np.load(args.data)
    split = {
        s: Interactions(z[f"{s}_user_idx"], z[f"{s}_item_idx"], z[f"{s}_level"])
        for s in ("train", "valid")
    }
    device = (
        torch.cuda.get_device_name(0)
        if torch.cuda.is_available()
        else platform.processor() or "cpu"
    )
    print(
        f"torch {torch.__version__}, device: {device}, threads {torch.get_num_threads()}, "
        f"train rows {len(split['train'].users):,}"
    )
    print("| accelerator | batch | epochs | seconds | samples/s | best valid AUC product |")
    print("|---|---|---|---|---|---|")
    for batch in args.batch_sizes:
        cfg = GNOLRConfig(batch_size=batch, max_epochs=args.epochs, patience=args.epochs, lr=1e-3)
        start = time.perf_counter()
        res = fit_gnolr(
            split["train"],
            split["valid"],
            int(z["n"][0]),
            int(z["n"][1]),
            z["base_rates"].tolist(),
            [str(x) for x in z["levels"]],
            cfg,
            progress=False,
            accelerator=args.accelerator,
        )
        seconds = time.perf_counter() - start
        print(
            f"| {res.info['device']} | {batch} | {res.info['epochs_run']} | {seconds:.1f} | "
            f"{res.info['train_samples_per_second']:,.0f} | {res.info['best_valid_auc_product']:.4f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
