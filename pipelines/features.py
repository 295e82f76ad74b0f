"""Stage `features`: event table → vocabularies, ordinal levels, temporal split, propensities.

Outputs (atomically, in data/features/): users, items, train, valid, test (.parquet), meta.json
and, where the source has side features, user_side.npz / item_side.npz (codes per feature);
metrics in data/metrics/features.json. With ``scale.data.engine: ray`` the splits are partitioned
by user bucket (``train.parquet/part-*.parquet``; features/ray_engine.py), with the same rows.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import mlflow
import polars as pl

from features import ray_engine, side_features
from features.contract import Col
from features.split import SPLITS
from features.training_sets import build_training_sets
from pipelines.outputs import atomic_dir, write_json
from pipelines.params import Params, load_params
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


def training_sets(params: Params, out: Path) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    """Build the training sets with the configured engine, writing every split to ``out``;
    returns the user and item tables and the meta facts."""
    names, cfg = params.contract.names(), params.features
    if params.scale.data.engine == "ray":
        with ray_engine.cluster(params.scale.data):
            return ray_engine.build_training_sets(IN, names, cfg, out)
    sets = build_training_sets(pl.scan_parquet(IN), names, cfg)
    for name, frame in sets.splits.items():
        frame.write_parquet(out / f"{name}.parquet")
    return sets.users, sets.items, sets.meta


def main() -> None:
    params = load_params()
    step = Steps(4)
    with atomic_dir(OUT) as tmp:
        users, items, meta = training_sets(params, tmp)
        step(
            f"levels, vocabularies, {params.features.split.method} split of {IN} and the splits "
            f"{', '.join(SPLITS)} ({params.scale.data.engine})"
        )
        users.write_parquet(tmp / "users.parquet")
        items.write_parquet(tmp / "items.parquet")
        step("wrote the vocabularies")
        for side, vocab, key, index in (
            ("user", users, Col.USER, Col.USER_IDX),
            ("item", items, Col.ITEM, Col.ITEM_IDX),
        ):
            table = INGEST / f"{side}_features.parquet"
            if table.exists():
                codes = side_features.encode(vocab, pl.read_parquet(table), key, index)
                side_features.save(tmp / f"{side}_side.npz", codes)
                meta[f"{side}_features"] = side_features.cardinalities(codes)
        step("encoded side features")
        write_json(tmp / "meta.json", meta)
    write_json(METRICS, {k: meta[k] for k in ("n_users", "n_items", "rows", "base_rates")})
    with start_run(params, "features", "features", model="data"):
        log_dataset(OUT, f"{params.source.kind}-features", [f"{s}.parquet" for s in SPLITS])
        facts = {"n_users": meta["n_users"], "n_items": meta["n_items"]}
        facts |= {f"rows/{s}": n for s, n in meta["rows"].items()}
        facts |= {f"base_rate/{level}": p for level, p in meta["base_rates"].items()}
        mlflow.log_metrics(split_metrics("data", facts))
    step(f"wrote {OUT}/meta.json and {METRICS}")
    rows = ", ".join(f"{k} {v:,}" for k, v in meta["rows"].items())
    print(
        f"features: {meta['n_users']:,} users × {meta['n_items']:,} items; rows {rows} → "
        f"{OUT}/ (users, items, {', '.join(SPLITS)} .parquet, meta.json), {METRICS}"
    )


if __name__ == "__main__":
    try:
        main()
    except (ValueError, ray_engine.RayUnavailableError) as exc:
        sys.exit(f"features failed: {exc}")
