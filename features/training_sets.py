"""From the validated event table to the Parquet training sets of every model family."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from features import side_features
from features.contract import Col, ContractConfig, EventNames, validate
from features.levels import base_rates, impression_units, reaction_column
from features.propensity import PropensityConfig, estimate_item_propensity
from features.sources import SourceConfig, load_events, load_side_features
from features.sources.synthetic import World
from features.split import SPLITS, SplitConfig, assign_split, assign_stratified, time_cuts

ROW_COLUMNS = [
    Col.USER_IDX,
    Col.ITEM_IDX,
    Col.LEVEL,
    "ts",
    "position",
    Col.PROPENSITY_LOGGED,
    "propensity",
]


class FeaturesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    split: SplitConfig = Field(default_factory=SplitConfig)
    propensity: PropensityConfig = Field(default_factory=PropensityConfig)


@dataclass
class TrainingSets:
    """Id vocabularies, one frame of impression rows per split, and summary facts."""

    users: pl.DataFrame  # user_id, user_idx
    items: pl.DataFrame  # item_id, item_idx, n_train_positives, n_train_impressions, propensity
    splits: dict[str, pl.DataFrame]
    meta: dict = field(default_factory=dict)


def _vocabulary(units: pl.DataFrame, column: str, index: str) -> pl.DataFrame:
    return (
        units.select(pl.col(column).unique().sort())
        .with_row_index(index)
        .select(column, pl.col(index).cast(pl.Int32))
    )


def build_training_sets(
    events: pl.LazyFrame, names: EventNames, cfg: FeaturesConfig
) -> TrainingSets:
    """Vocabularies, ordinal levels, temporal split and propensities from a contract event table.

    Vocabularies cover every id in the log (the full item index), so evaluation ranks the whole
    catalogue; propensities come from the log where it carries them, otherwise from item
    popularity among training positives.
    """
    units = impression_units(events, names).collect(engine="streaming")
    if units.height == 0:
        raise ValueError("the event table holds no impressions or feedback to learn from")
    users = _vocabulary(units, Col.USER, Col.USER_IDX)
    items = _vocabulary(units, Col.ITEM, Col.ITEM_IDX)
    if cfg.split.method == "temporal":
        cuts = time_cuts(units[Col.TS], cfg.split)
        split = assign_split(units.lazy(), cuts)
    else:
        cuts = None
        split = assign_stratified(units.lazy(), cfg.split)
    reactions = [reaction_column(r) for r in names.reactions]
    rows = (
        split.join(users.lazy(), on=Col.USER)
        .join(items.lazy(), on=Col.ITEM)
        .select(*ROW_COLUMNS[:-1], *reactions, "split")
        .sort(Col.TS, Col.USER_IDX, Col.ITEM_IDX)
        .collect()
    )
    train = rows.filter(pl.col("split") == "train")
    if train.height == 0:
        raise ValueError("the temporal split left no training rows; lower valid/test fractions")
    counts = train.group_by(Col.ITEM_IDX).agg(
        (pl.col(Col.LEVEL) >= 1).sum().alias("pos"), pl.len().alias("n")
    )
    positives = np.zeros(items.height)
    impressions = np.zeros(items.height)
    positives[counts[Col.ITEM_IDX].to_numpy()] = counts["pos"].to_numpy()
    impressions[counts[Col.ITEM_IDX].to_numpy()] = counts["n"].to_numpy()
    theta = estimate_item_propensity(positives, cfg.propensity)
    items = items.with_columns(
        pl.Series("n_train_positives", positives.astype(np.int64)),
        pl.Series("n_train_impressions", impressions.astype(np.int64)),
        pl.Series("propensity", theta),
    )
    rows = rows.with_columns(
        pl.coalesce(Col.PROPENSITY_LOGGED, pl.Series(theta[rows[Col.ITEM_IDX].to_numpy()])).alias(
            "propensity"
        )
    )
    splits = {s: rows.filter(pl.col("split") == s).drop("split") for s in SPLITS}
    n_levels = len(names.levels)
    meta = {
        "levels": list(names.levels),
        "reactions": list(names.reactions),
        "n_users": users.height,
        "n_items": items.height,
        "rows": {s: f.height for s, f in splits.items()},
        "base_rates": dict(
            zip(names.levels, base_rates(splits["train"][Col.LEVEL], n_levels), strict=True)
        ),
        "positives_by_level": {
            s: {name: int((f[Col.LEVEL] >= c).sum()) for c, name in enumerate(names.levels, 1)}
            for s, f in splits.items()
        },
        "split": cfg.split.method,
        "time_cuts": {"valid": cuts[0].isoformat(), "test": cuts[1].isoformat()} if cuts else None,
        "logged_propensity_fraction": float(rows[Col.PROPENSITY_LOGGED].is_not_null().mean()),
    }
    return TrainingSets(users, items, splits, meta)


def training_sets_from_source(
    source: SourceConfig, contract: ContractConfig, cfg: FeaturesConfig
) -> tuple[TrainingSets, World | None, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``ingest`` + ``features`` in memory: the source's training sets, its ground truth (simulated
    data only) and the user / item side-feature codes. Events outside the configured vocabulary are
    dropped first (a one-level protocol keeps only clicks); other bad rows are quarantined as usual.
    """
    raw, world = load_events(source, progress=False)
    names = contract.names()
    raw = raw.filter(pl.col(Col.EVENT).is_in(list(names.all)))
    valid, _, report = validate(raw, names, contract.rules())
    print(f"{report.n_valid:,} valid events from {source.kind}")
    sets = build_training_sets(valid.lazy(), names, cfg)
    users, items = load_side_features(source, world)
    user_side = (
        side_features.encode(sets.users, users, Col.USER, Col.USER_IDX) if users is not None else {}
    )
    item_side = (
        side_features.encode(sets.items, items, Col.ITEM, Col.ITEM_IDX) if items is not None else {}
    )
    return sets, world, user_side, item_side
