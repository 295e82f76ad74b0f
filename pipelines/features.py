"""Stage `features`: event table → vocabularies, ordinal levels, temporal split, propensities.

Outputs (atomically, in data/features/): users, items, train, valid, test (.parquet), meta.json
and, where the source has side features, user_side.npz / item_side.npz (codes per feature);
metrics in data/metrics/features.json.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import mlflow
import polars as pl

from features import side_features
from features.contract import Col
from features.training_sets import build_training_sets
from pipelines.outputs import atomic_dir, write_json
from pipelines.params import load_params
from pipelines.tracking import log_dataset, split_metrics, start_run

INGEST = Path("data/ingest")
IN = INGEST / "events.parquet"
OUT = Path("data/features")
METRICS = Path("data/metrics/features.json")


class Steps:
    """Per-step progress lines: ``features [i/n] <what> … <seconds since start>``."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.start = total, 0, time.perf_counter()

    def __call__(self, what: str) -> None:
        self.done += 1
        elapsed = time.perf_counter() - self.start
        print(f"features [{self.done}/{self.total}] {what} ({elapsed:.1f} s)", flush=True)


def main() -> None:
    params = load_params()
    step = Steps(4)
    sets = build_training_sets(pl.scan_parquet(IN), params.contract.names(), params.features)
    step(f"levels, vocabularies and {params.features.split.method} split of {IN}")
    with atomic_dir(OUT) as tmp:
        sets.users.write_parquet(tmp / "users.parquet")
        sets.items.write_parquet(tmp / "items.parquet")
        for name, frame in sets.splits.items():
            frame.write_parquet(tmp / f"{name}.parquet")
        step(f"wrote vocabularies and splits {', '.join(sets.splits)}")
        for side, vocab, key, index in (
            ("user", sets.users, Col.USER, Col.USER_IDX),
            ("item", sets.items, Col.ITEM, Col.ITEM_IDX),
        ):
            table = INGEST / f"{side}_features.parquet"
            if table.exists():
                codes = side_features.encode(vocab, pl.read_parquet(table), key, index)
                side_features.save(tmp / f"{side}_side.npz", codes)
                sets.meta[f"{side}_features"] = side_features.cardinalities(codes)
        step("encoded side features")
        write_json(tmp / "meta.json", sets.meta)
    write_json(METRICS, {k: sets.meta[k] for k in ("n_users", "n_items", "rows", "base_rates")})
    with start_run(params, "features", "features", model="data"):
        log_dataset(OUT, f"{params.source.kind}-features", [f"{s}.parquet" for s in sets.splits])
        facts = {"n_users": sets.meta["n_users"], "n_items": sets.meta["n_items"]}
        facts |= {f"rows/{s}": n for s, n in sets.meta["rows"].items()}
        facts |= {f"base_rate/{level}": p for level, p in sets.meta["base_rates"].items()}
        mlflow.log_metrics(split_metrics("data", facts))
    step(f"wrote {OUT}/meta.json and {METRICS}")
    rows = ", ".join(f"{k} {v:,}" for k, v in sets.meta["rows"].items())
    print(
        f"features: {sets.meta['n_users']:,} users × {sets.meta['n_items']:,} items; rows {rows} → "
        f"{OUT}/ (users, items, {', '.join(sets.splits)} .parquet, meta.json), {METRICS}"
    )


if __name__ == "__main__":
    try:
        main()
    except ValueError as exc:
        sys.exit(f"features failed: {exc}")
