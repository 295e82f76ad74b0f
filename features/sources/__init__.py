"""Source adapters: each turns a log into a frame with the data contract's columns."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from features.sources.movielens import MovieLensConfig, load_movielens, load_movielens_features
from features.sources.obd import OBDConfig, load_obd
from features.sources.synthetic import SyntheticConfig, World, side_features, simulate
from features.sources.tabular import TabularConfig, load_tabular

SourceKind = Literal["synthetic", "movielens-100k", "obd", "parquet", "csv"]


class SourceConfig(BaseModel):
    """params.yaml → ``source``: which log to read, each kind's settings, the service's log."""

    model_config = ConfigDict(extra="forbid")

    kind: SourceKind = "synthetic"
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)
    movielens: MovieLensConfig = Field(default_factory=MovieLensConfig)
    obd: OBDConfig = Field(default_factory=OBDConfig)
    tabular: TabularConfig = Field(default_factory=TabularConfig)
    cache_dir: str = Field("data/external", description="where fetched wheels are kept")
    feedback_log: str | None = Field(
        None, description="the service's feedback log directory, appended to the source's events"
    )


def load_events(cfg: SourceConfig, progress: bool = True) -> tuple[pl.DataFrame, World | None]:
    """The raw event frame of the configured source, and the ground truth when it is simulated."""
    cache = Path(cfg.cache_dir)
    if cfg.kind == "synthetic":
        return simulate(cfg.synthetic, progress=progress)
    if cfg.kind == "movielens-100k":
        return load_movielens(cfg.movielens, cache), None
    if cfg.kind == "obd":
        return load_obd(cfg.obd, cache), None
    if cfg.kind in ("parquet", "csv"):
        return load_tabular(cfg.tabular.model_copy(update={"format": cfg.kind})), None
    raise ValueError(f"unknown source kind {cfg.kind!r}")


def load_side_features(
    cfg: SourceConfig, world: World | None
) -> tuple[pl.DataFrame | None, pl.DataFrame | None]:
    """User and item side-feature tables of the source, where it has them (keyed by external id)."""
    if cfg.kind == "synthetic" and world is not None:
        return side_features(world, cfg.synthetic.seed)
    if cfg.kind == "movielens-100k":
        return load_movielens_features(Path(cfg.cache_dir))
    return None, None
