"""Stage `batch_recommend`: top-k items for every known user (or a subset), through the service's path.

Writes ``data/batch/recommendations.parquet`` with columns ``user_id, rank (0-based), item_id,
score, model_version``. It loads the serving bundle with :func:`serving.bundle.load_bundle` and ranks
with :func:`serving.recommend.ranked_by_relevance`, the function behind one request's relevance
ranking, called once per batch of users (training items excluded when ``exclude_seen``); the score
is the deepest level's logit ``l_T = γ_T·s_T − a_T``. Users unknown to the bundle get the service's
popularity fallback, by calling :func:`serving.recommend.recommend` itself.

Parameters come from ``params.yaml: batch`` when the parameter schema has that section, else from the
defaults below; command-line flags override both.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from serving.bundle import Bundle, load_bundle
from serving.recommend import ranked_by_relevance, recommend

BUNDLE = Path("data/serving")
OUT = Path("data/batch")
FILE = "recommendations.parquet"
SCHEMA = {
    "user_id": pl.String,
    "rank": pl.Int32,
    "item_id": pl.String,
    "score": pl.Float64,
    "model_version": pl.String,
}


class BatchConfig(BaseModel):
    """``params.yaml: batch``: how many items per user, seen-item filtering and which users."""

    model_config = ConfigDict(extra="forbid")

    k: int = Field(20, ge=1, le=1000, description="items per user")
    exclude_seen: bool = Field(True, description="drop the user's training positives")
    users: Literal["all"] | list[str] = Field(
        "all", description="'all' (every user in the bundle) or a list of external user ids"
    )
    batch_size: int = Field(4096, ge=1, description="users per retrieval call")


def batch_recommend(
    bundle: Bundle,
    user_ids: Sequence[str] | None = None,
    k: int = 20,
    exclude_seen: bool = True,
    batch_size: int = 4096,
) -> pl.DataFrame:
    """Recommendations for ``user_ids`` (default: every user of the bundle) as a long table."""
    if user_ids is None:
        user_ids = sorted(bundle.user_index, key=bundle.user_index.__getitem__)
    k = min(k, len(bundle.item_ids))
    known = [u for u in user_ids if u in bundle.user_index]
    frames = []
    for start in range(0, len(known), batch_size):
        chunk = known[start : start + batch_size]
        users = np.array([bundle.user_index[u] for u in chunk], dtype=np.int64)
        exclude = [bundle.seen[u] for u in users] if exclude_seen else None
        ids, logits = ranked_by_relevance(bundle, users, k, exclude)
        scores = logits[..., -1]
        valid = ids >= 0
        frames.append(
            pl.DataFrame(
                {
                    "user_id": np.repeat(np.array(chunk, dtype=object), k).reshape(ids.shape)[
                        valid
                    ],
                    "rank": np.tile(np.arange(k, dtype=np.int32), (len(chunk), 1))[valid],
                    "item_id": bundle.item_ids[ids[valid]],
                    "score": scores[valid],
                    "model_version": np.full(int(valid.sum()), bundle.model_version, dtype=object),
                },
                schema=SCHEMA,
            )
        )
    for user in (u for u in user_ids if u not in bundle.user_index):
        result = recommend(bundle, user, k, exclude_seen)
        frames.append(
            pl.DataFrame(
                {
                    "user_id": [user] * len(result.items),
                    "rank": list(range(len(result.items))),
                    "item_id": [r.item_id for r in result.items],
                    "score": [r.score for r in result.items],
                    "model_version": [result.model_version] * len(result.items),
                },
                schema=SCHEMA,
            )
        )
    return pl.concat(frames) if frames else pl.DataFrame(schema=SCHEMA)


def _config() -> BatchConfig:
    """``params.yaml: batch`` once the parameter schema has it; the defaults without a params.yaml."""
    if not Path("params.yaml").exists():
        return BatchConfig()
    from pipelines.params import load_params

    return getattr(load_params(), "batch", None) or BatchConfig()


def main(argv: list[str] | None = None) -> None:
    cfg = _config()
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
    table = batch_recommend(
        bundle,
        None if cfg.users == "all" else cfg.users,
        cfg.k,
        cfg.exclude_seen,
        cfg.batch_size,
    )
    from pipelines.common import atomic_dir  # lazy: pipelines.params imports this module

    with atomic_dir(args.out) as tmp:
        table.write_parquet(tmp / FILE)
    n_users = table["user_id"].n_unique()
    print(
        f"batch_recommend: {table.height:,} rows for {n_users:,} users (k={cfg.k}, "
        f"model {bundle.model_version}) → {args.out / FILE}"
    )


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError) as exc:
        sys.exit(f"batch_recommend failed: {exc}")
