"""Export a run's train/valid arrays for ``train_speed.py`` (and ``gpu_train.sh``) as one .npz.

    .venv/bin/python benchmarks/export_arrays.py syn.npz --features data/features  # the last dvc repro
    .venv/bin/python benchmarks/export_arrays.py ml.npz --source movielens-100k    # built from a source

The file holds ``{train,valid}_{user_idx,item_idx,level}``, the level names, ``n`` (users, items)
and the base rates: all that training needs, so the machine that trains needs no Polars pipeline.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import polars as pl

from features.contract import Col
from features.training_sets import training_sets_from_source
from pipelines.outputs import write_json
from pipelines.params import load_params


def export(features: Path, out: Path) -> None:
    """Write the train/valid arrays and level facts of a features directory to ``out`` (.npz)."""
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
    params = load_params()
    params.source.kind = kind
    sets = training_sets_from_source(params.source, params.contract, params.features)[0]
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("train", "valid"):
            sets.splits[name].write_parquet(Path(tmp) / f"{name}.parquet")
        write_json(Path(tmp) / "meta.json", sets.meta)
        export(Path(tmp), out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the .npz to write")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--features", type=Path, help="a features directory (data/features)")
    where.add_argument("--source", help="a source kind of params.yaml (e.g. movielens-100k)")
    args = parser.parse_args()
    if args.features:
        export(args.features, args.out)
    else:
        export_source(args.source, args.out)


if __name__ == "__main__":
    main()
