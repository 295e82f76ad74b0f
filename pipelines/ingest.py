"""Stage `ingest`: source → validated event table, quarantine and a data report.

Outputs (atomically, in data/ingest/): events.parquet, quarantine.parquet, world.npz (synthetic
only), user_features.parquet / item_features.parquet (where the source has side features);
metrics in data/metrics/ingest.json. Too many bad rows fail the stage; the rejected rows are then
kept in data/rejected/quarantine.parquet so nothing is lost.
"""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from features.contract import ContractError, check_bad_fraction, to_arrow, validate
from features.sources import load_events, load_side_features
from pipelines.common import atomic_dir, write_json
from pipelines.params import load_params

OUT = Path("data/ingest")
METRICS = Path("data/metrics/ingest.json")
REJECTED = Path("data/rejected/quarantine.parquet")


def main() -> None:
    params = load_params()
    raw, world = load_events(params.source)
    valid, quarantine, report = validate(raw, params.contract.names())
    try:
        check_bad_fraction(report, params.contract.max_bad_fraction, str(REJECTED))
    except ContractError:
        REJECTED.parent.mkdir(parents=True, exist_ok=True)
        quarantine.write_parquet(REJECTED)
        raise
    with atomic_dir(OUT) as tmp:
        pq.write_table(to_arrow(valid), tmp / "events.parquet")
        quarantine.write_parquet(tmp / "quarantine.parquet")
        if world is not None:
            world.save(tmp / "world.npz")
        users, items = load_side_features(params.source, world)
        if users is not None:
            users.write_parquet(tmp / "user_features.parquet")
        if items is not None:
            items.write_parquet(tmp / "item_features.parquet")
    counts = valid.group_by(pl.col("event").cast(pl.String)).len()
    summary = {
        **report.as_dict(),
        "source": params.source.kind,
        "events_by_type": dict(
            zip(counts["event"].to_list(), counts["len"].to_list(), strict=True)
        ),
        "n_users": valid["user_id"].n_unique(),
        "n_items": valid["item_id"].n_unique(),
    }
    write_json(METRICS, summary)
    print(
        f"ingest: {report.n_valid:,} valid events from '{params.source.kind}', "
        f"{report.n_bad:,} quarantined {report.bad_by_reason or ''} → {OUT}/"
    )


if __name__ == "__main__":
    try:
        main()
    except (ContractError, ValueError) as exc:
        sys.exit(f"ingest failed: {exc}")
