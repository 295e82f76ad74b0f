"""Open Bandit Dataset sample (ZOZOTOWN) as contract events, read from the pinned ``obp`` wheel.

``obp==0.4.1`` ships 10 000 logged rounds per (policy, campaign) under
``obp/dataset/obd/{policy}/{campaign}/{campaign}.csv``; ``policy`` is ``random`` (uniform random
logger) or ``bts`` (Bernoulli Thompson sampling), ``campaign`` is ``all``, ``men`` or ``women``. The
wheel is downloaded and read with zipfile, never installed (:mod:`features.sources.fetch`).

Mapping of round ``n`` (the file's unnamed index column) to contract events, both at the round's
timestamp with ``session_id = "obd-<policy>-<n>"`` and ``position`` = the file's 1-based position
minus 1 (0-based):

* an ``impression`` of ``item_id`` with ``propensity`` = ``propensity_score`` (the logger's
  probability of showing this item at this position);
* a ``click`` (null propensity) when ``click == 1``.

OBD has no user id. The user id is a *user type*: ``"obd-"`` + the first 16 hex digits of the sha1
of the four hashed user features ``user_feature_0..3`` joined with ``"|"``. Rounds with the same
features share a user id, so a "user" is a segment (a few hundred per file), not a person.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from features.contract import COLUMNS, IMPRESSION, Col
from features.sources.fetch import OBP, fetch_wheel, read_member

USER_FEATURES = [f"user_feature_{i}" for i in range(4)]


class OBDConfig(BaseModel):
    """Which logged policy and campaign of the OBD sample to read."""

    model_config = ConfigDict(extra="forbid")

    policy: Literal["bts", "random"] = Field("bts", description="logging policy of the sample")
    campaign: Literal["all", "men", "women"] = Field("all", description="ZOZOTOWN campaign")


def user_type(joined_features: str) -> str:
    """Stable user id of the four hashed user features joined with ``"|"``."""
    return "obd-" + hashlib.sha1(joined_features.encode()).hexdigest()[:16]


def read_rounds(cfg: OBDConfig, cache_dir: Path) -> pl.DataFrame:
    """The raw logged rounds of one (policy, campaign) file, the index column named ``round``."""
    wheel = fetch_wheel(*OBP, cache_dir)
    member = f"obp/dataset/obd/{cfg.policy}/{cfg.campaign}/{cfg.campaign}.csv"
    frame = pl.read_csv(
        io.BytesIO(read_member(wheel, member)),
        columns=[
            "",
            "timestamp",
            "item_id",
            "position",
            "click",
            "propensity_score",
            *USER_FEATURES,
        ],
        schema_overrides={"item_id": pl.String, **dict.fromkeys(USER_FEATURES, pl.String)},
    )
    return frame.rename({"": "round"})


def load_obd(cfg: OBDConfig, cache_dir: Path) -> pl.DataFrame:
    """OBD rounds as contract events (see the module docstring for the mapping).

    Returns columns ``user_id, item_id, event, session_id`` (str), ``ts`` (Datetime µs UTC),
    ``position`` (Int32, 0-based), ``propensity`` (Float64 on impressions, null on clicks), one
    impression per round plus one click per clicked round, sorted by ``ts``.
    """
    rounds = read_rounds(cfg, cache_dir)
    combos = rounds.select(pl.concat_str(USER_FEATURES, separator="|")).to_series()
    ids = {c: user_type(c) for c in combos.unique().drop_nulls().to_list()}
    impressions = rounds.select(
        combos.replace_strict(ids, return_dtype=pl.String).alias(Col.USER),
        pl.col("item_id").alias(Col.ITEM),
        pl.lit(IMPRESSION).alias(Col.EVENT),
        pl.col("timestamp")
        .str.to_datetime("%Y-%m-%d %H:%M:%S%.f%:z", time_unit="us")
        .dt.convert_time_zone("UTC")
        .alias(Col.TS),
        pl.format("obd-{}-{}", pl.lit(cfg.policy), pl.col("round")).alias(Col.SESSION),
        (pl.col("position") - 1).cast(pl.Int32).alias(Col.POSITION),
        pl.col("propensity_score").cast(pl.Float64).alias(Col.PROPENSITY),
        (pl.col("click") == 1).alias("_clicked"),
    )
    clicks = impressions.filter("_clicked").with_columns(
        pl.lit("click").alias(Col.EVENT), pl.lit(None, pl.Float64).alias(Col.PROPENSITY)
    )
    return pl.concat([impressions, clicks]).select(COLUMNS).sort(Col.TS, maintain_order=True)


def logged_rounds(cfg: OBDConfig, cache_dir: Path) -> pl.DataFrame:
    """One row per logged round of :func:`load_obd`'s events, in their order: ``user_id`` (user
    type), ``item_id``, ``position`` (0-based), ``pscore`` (the logged propensity) and ``click``
    (0.0 / 1.0). What off-policy estimators read."""
    events = load_obd(cfg, cache_dir)
    clicks = events.filter(pl.col(Col.EVENT) == "click").select(Col.SESSION, click=pl.lit(1))
    return (
        events.filter(pl.col(Col.EVENT) == IMPRESSION)
        .join(clicks, on=Col.SESSION, how="left", maintain_order="left")
        .select(
            Col.USER,
            Col.ITEM,
            Col.POSITION,
            pl.col(Col.PROPENSITY).alias("pscore"),
            pl.col("click").fill_null(0).cast(pl.Float64),
        )
    )
