"""Train / valid / test split of impression units: temporal (default) or per-user stratified."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, model_validator

from features.contract import Col

SPLITS = ("train", "valid", "test")
SPLIT_TYPE = pl.Enum(SPLITS)  # the ``split`` column: group-bys and filters compare codes, not text


class SplitConfig(BaseModel):
    """Fractions of units that go to validation and test (the rest trains), and how they are drawn.

    ``temporal``: the latest units are tested, the ones before validate. ``stratified_random``: each
    user's positives and each user's negatives are split at random in these proportions (the
    protocol of published MovieLens benchmarks), seeded.
    """

    model_config = ConfigDict(extra="forbid")

    method: Literal["temporal", "stratified_random"] = "temporal"
    valid_fraction: float = Field(0.1, gt=0, lt=1)
    test_fraction: float = Field(0.1, gt=0, lt=1)
    seed: int = 0

    @model_validator(mode="after")
    def _leave_some_training(self) -> SplitConfig:
        if self.valid_fraction + self.test_fraction >= 1:
            raise ValueError("valid_fraction + test_fraction must leave some data for training")
        return self


def cut_ranks(n: int, cfg: SplitConfig) -> tuple[int, int]:
    """0-based ranks, in time order, of the units whose times are the cuts (t_valid, t_test):
    round(n·(1 − v − t)) and n − round(n·t), each kept inside 1..n-1 so no split is empty."""
    if n < 3:
        raise ValueError(f"a temporal split needs at least 3 impressions, got {n}")
    n_test = min(max(1, round(n * cfg.test_fraction)), n - 2)
    n_train = min(max(1, round(n * (1 - cfg.valid_fraction - cfg.test_fraction))), n - n_test - 1)
    return n_train, n - n_test


def time_cuts(ts: pl.Series, cfg: SplitConfig) -> tuple[datetime, datetime]:
    """Cut times (t_valid, t_test): train is ts < t_valid, valid ts < t_test, test the rest.

    The cuts are the times of the units at the :func:`cut_ranks`, so the split sizes follow the
    fractions up to ties at the cut times (ties go to the later split).
    """
    r_valid, r_test = cut_ranks(len(ts), cfg)
    ordered = ts.sort()
    return ordered[r_valid], ordered[r_test]


def assign_split(units: pl.LazyFrame, cuts: tuple[datetime, datetime]) -> pl.LazyFrame:
    t_valid, t_test = cuts
    return units.with_columns(
        pl.when(pl.col(Col.TS) < t_valid)
        .then(pl.lit("train", SPLIT_TYPE))
        .when(pl.col(Col.TS) < t_test)
        .then(pl.lit("valid", SPLIT_TYPE))
        .otherwise(pl.lit("test", SPLIT_TYPE))
        .alias("split")
    )


def assign_stratified(units: pl.LazyFrame, cfg: SplitConfig) -> pl.LazyFrame:
    """Per (user, positive?) group, a random ``test_fraction`` tests and ``valid_fraction`` validates.

    In a group of n units, ranks r of a seeded shuffle go to test when r < round(n·t), to valid when
    r < round(n·t) + round(n·v), else to train.
    """
    group = [Col.USER, pl.col(Col.LEVEL) >= 1]
    n = pl.len().over(group)
    rank = pl.int_range(pl.len()).shuffle(seed=cfg.seed).over(group)
    n_test = (n * cfg.test_fraction).round()
    n_valid = (n * cfg.valid_fraction).round()
    return units.sort(Col.USER, Col.ITEM, Col.SESSION).with_columns(
        pl.when(rank < n_test)
        .then(pl.lit("test", SPLIT_TYPE))
        .when(rank < n_test + n_valid)
        .then(pl.lit("valid", SPLIT_TYPE))
        .otherwise(pl.lit("train", SPLIT_TYPE))
        .alias("split")
    )
