"""Stage `batch_recommend`: top-k items for every known user (or a subset), through the service's path.

Writes ``data/batch/recommendations.parquet`` (columns ``user_id, rank (0-based), item_id, score,
model_version``; :func:`serving.batch.batch_recommend`) from the serving bundle ``data/serving``.
Settings come from ``params.yaml: batch`` (the defaults without a params.yaml); command-line flags
override them:

    python -m pipelines.batch_recommend [--bundle DIR --out DIR --k 50 --users u1,u2 ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import mlflow

from pipelines.outputs import atomic_dir
from pipelines.params import Params, load_params
from pipelines.tracking import split_metrics, start_run
from serving.batch import batch_recommend
from serving.bundle import load_bundle
from serving.config import BatchConfig

BUNDLE = Path("data/serving")
OUT = Path("data/batch")
FILE = "recommendations.parquet"


def main(argv: list[str] | None = None) -> None:
    params = load_params() if Path("params.yaml").exists() else Params()
    cfg = params.batch
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", type=Path, default=BUNDLE, help="serving bundle directory")
    parser.add_argument("--out", type=Path, default=OUT, help="output directory")
    parser.add_argument("--k", type=int, default=cfg.k)
    parser.add_argument(
        "--exclude-seen", action=argparse.BooleanOptionalAction, default=cfg.exclude_seen
    )
    parser.add_argument(
        "--users",
        default=cfg.users if isinstance(cfg.users, str) else ",".join(cfg.users),
        help="'all' or comma-separated user ids",
    )
    parser.add_argument("--batch-size", type=int, default=cfg.batch_size)
    args = parser.parse_args(argv)
    cfg = BatchConfig(
        k=args.k,
        exclude_seen=args.exclude_seen,
        users="all" if args.users == "all" else [u for u in args.users.split(",") if u],
        batch_size=args.batch_size,
    )
    bundle = load_bundle(args.bundle)
    users = None if cfg.users == "all" else cfg.users
    table = batch_recommend(bundle, users, cfg.k, cfg.exclude_seen, cfg.batch_size)
    with atomic_dir(args.out) as tmp:
        table.write_parquet(tmp / FILE)
    with start_run(params, "batch_recommend", "batch-recommend", model="gnolr"):
        mlflow.set_tag("model_version", bundle.model_version)
        facts = {"batch_rows": table.height, "batch_users": table["user_id"].n_unique(), "k": cfg.k}
        mlflow.log_metrics(split_metrics("data", facts))
    print(
        f"batch_recommend: {table.height:,} rows for {table['user_id'].n_unique():,} users "
        f"(k={cfg.k}, model {bundle.model_version}) → {args.out / FILE}"
    )


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError) as exc:
        sys.exit(f"batch_recommend failed: {exc}")
