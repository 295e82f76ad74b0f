"""Source adapters: each turns a log into a frame with the data contract's columns."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

if TYPE_CHECKING:
    from features.sources.synthetic import World
    from pipelines.params import SourceConfig


def load_events(cfg: SourceConfig, progress: bool = True) -> tuple[pl.DataFrame, World | None]:
    """The raw event frame of the configured source, and the ground truth when it is simulated."""
    cache = Path(cfg.cache_dir)
    if cfg.kind == "synthetic":
        from features.sources.synthetic import simulate

        return simulate(cfg.synthetic, progress=progress)
    if cfg.kind == "movielens-100k":
        from features.sources.movielens import load_movielens

        return load_movielens(cfg.movielens, cache), None
    if cfg.kind == "obd":
        from features.sources.obd import load_obd

        return load_obd(cfg.obd, cache), None
    if cfg.kind in ("parquet", "csv"):
        from features.sources.tabular import load_tabular

        return load_tabular(cfg.tabular.model_copy(update={"format": cfg.kind})), None
    raise ValueError(f"unknown source kind {cfg.kind!r}")


def load_side_features(
    cfg: SourceConfig, world: World | None
) -> tuple[pl.DataFrame | None, pl.DataFrame | None]:
    """User and item side-feature tables of the source, where it has them (keyed by external id)."""
    if cfg.kind == "synthetic" and world is not None:
        from features.sources.synthetic import side_features

        return side_features(world, cfg.synthetic.seed)
    if cfg.kind == "movielens-100k":
        from features.sources.movielens import load_movielens_features

        return load_movielens_features(Path(cfg.cache_dir))
    return None, None
