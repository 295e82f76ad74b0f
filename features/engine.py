"""Which engine runs the data stages (ingest, features): Polars in this process, or Ray Data.

The embedded Polars path is the default and the reference. With ``engine: ray`` the same Polars
functions run once per *user bucket* — the users whose ``hash(user_id) % buckets`` agree — on a Ray
cluster (features/ray_engine.py), and the few global steps (id vocabularies, time cuts, item
counts) run on the driver. Every user-local step (the duplicate key, the impression unit, the
stratified split) contains the user id, so a bucket holds everything those steps need.
"""

from __future__ import annotations

from typing import Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, model_validator

from features.contract import Col

# The bucket hash's seed: fixed, so a user lands in the same bucket in every process of a run.
_HASH_SEED = 0x1ADDE5


class DataEngineConfig(BaseModel):
    """params.yaml → ``scale.data``: the engine of the ingest and features stages."""

    model_config = ConfigDict(extra="forbid")

    engine: Literal["polars", "ray"] = Field(
        "polars", description="polars: one process (the reference); ray: Ray Data per user bucket"
    )
    address: str | None = Field(
        None,
        description="ray: the cluster to join (`auto`, `ray://head:10001`, `head:6379`); "
        "null starts a local one for the stage",
    )
    buckets: int = Field(
        64,
        ge=1,
        le=100_000,
        description="ray: user buckets, hash(user_id) % buckets, one task each",
    )
    num_cpus: int | None = Field(
        None, ge=1, description="ray, local cluster only: the CPUs it may use (null: all)"
    )

    @model_validator(mode="after")
    def _num_cpus_only_for_a_local_cluster(self) -> DataEngineConfig:
        if self.num_cpus is not None and self.address is not None:
            raise ValueError(
                "num_cpus sizes the local cluster started when address is null; a cluster "
                f"joined at {self.address!r} has its own resources"
            )
        return self


def user_bucket(n_buckets: int, user: pl.Expr | None = None) -> pl.Expr:
    """The bucket 0..n_buckets-1 of each row: a seeded hash of the stripped, string user id.

    Stripping and casting first, exactly as :func:`features.contract.validate` does, puts every
    copy of a duplicate row (whose key holds the cleaned id) in the same bucket. Polars' hash is
    stable within one Polars version; every process of a run shares the environment, and the
    features stage takes the buckets from ingest's files rather than hashing again.
    """
    user = pl.col(Col.USER) if user is None else user
    cleaned = user.cast(pl.String).str.strip_chars()
    return (cleaned.hash(seed=_HASH_SEED) % n_buckets).cast(pl.Int32)
