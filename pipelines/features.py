"""Stage `features`: event table → vocabularies, ordinal levels, temporal split, propensities.

Outputs (atomically, in data/features/): users, items, train, valid, test (.parquet) and meta.json;
metrics in data/metrics/features.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl

from features.training_sets import build_training_sets
from pipelines.common import atomic_dir, write_json
from pipelines.params import load_params

IN = Path("data/ingest/events.parquet")
OUT = Path("data/features")
METRICS = Path("data/metrics/features.json")


def main() -> None:
    params = load_params()
    sets = build_training_sets(pl.scan_parquet(IN), params.contract.names(), params.features)
    with atomic_dir(OUT) as tmp:
        sets.users.write_parquet(tmp / "users.parquet")
        sets.items.write_parquet(tmp / "items.parquet")
        for name, frame in sets.splits.items():
            frame.write_parquet(tmp / f"{name}.parquet")
        write_json(tmp / "meta.json", sets.meta)
    write_json(METRICS, {k: sets.meta[k] for k in ("n_users", "n_items", "rows", "base_rates")})
    rows = ", ".join(f"{k} {v:,}" for k, v in sets.meta["rows"].items())
    print(
        f"features: {sets.meta['n_users']:,} users × {sets.meta['n_items']:,} items; rows {rows} → {OUT}/"
    )


if __name__ == "__main__":
    try:
        main()
    except ValueError as exc:
        sys.exit(f"features failed: {exc}")
