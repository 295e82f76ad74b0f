"""Ordinal feedback levels per (user, item) impression (methods.md §1).

With ordered feedback types y_1..y_T, the level of an impression is ``max{t : y_t = 1}`` (0 when
there is no feedback), so ``level ≥ c`` ⇔ ``k > c`` ⇔ "reached type c or a deeper one". Building
the cumulative indicator from the deepest event means a purchase logged without its click still
counts as a click, instead of giving the model contradictory targets.
"""

from __future__ import annotations

import polars as pl

from features.contract import IMPRESSION, Col, EventNames

UNIT_KEY = [Col.USER, Col.ITEM, Col.SESSION]


def reaction_column(name: str) -> str:
    return f"r_{name}"


def impression_units(events: pl.LazyFrame, names: EventNames) -> pl.LazyFrame:
    """One row per (user, item, session) with its time, level, reactions and logged propensity.

    Events without a session id are grouped per (user, item). An impression's time is its first
    logged impression, or its first event when only feedback was logged. Output columns:
    ``user_id, item_id, session_id, ts, level (0..T), r_<reaction> (0/1), propensity_logged,
    position, shown`` (whether an impression event was logged). ``propensity_logged`` is that of
    the unit's earliest impression carrying one, the smallest on a tie of times: no row order, and
    so no engine, can change it.

    Every per-event quantity is computed row-wise first (the event's level c, its reaction flags,
    its time and propensity key if it is an impression), so the group-by only takes plain
    min / max: a level is ``max_e c(e)``, a reaction ``max_e 1{e = r}``.
    """
    event = pl.col(Col.EVENT).cast(pl.String)
    is_imp = event == IMPRESSION
    level = pl.lit(0, pl.Int8)
    for c, name in enumerate(names.levels, start=1):
        level = pl.when(event == name).then(pl.lit(c, pl.Int8)).otherwise(level)
    reactions = [reaction_column(r) for r in names.reactions]
    return (
        events.with_columns(pl.col(Col.SESSION).fill_null(""))
        .with_columns(
            pl.when(is_imp).then(pl.col(Col.TS)).alias("_ts_shown"),
            level.alias(Col.LEVEL),
            *[(event == r).cast(pl.Int8).alias(reaction_column(r)) for r in names.reactions],
            pl.when(is_imp).then(_propensity_key()).alias("_propensity_key"),
            pl.when(is_imp).then(pl.col(Col.POSITION)).alias("_position"),
            is_imp.alias("shown"),
        )
        .group_by(UNIT_KEY)
        .agg(
            pl.col("_ts_shown").min(),
            pl.col(Col.TS).min(),
            pl.col(Col.LEVEL).max(),
            *[pl.col(col).max() for col in reactions],
            pl.col("_propensity_key").min(),
            pl.col("_position").min().alias(Col.POSITION),
            pl.col("shown").any(),
        )
        .select(
            *UNIT_KEY,
            pl.coalesce("_ts_shown", Col.TS).alias(Col.TS),
            Col.LEVEL,
            *reactions,
            _propensity_of_key(pl.col("_propensity_key")).alias(Col.PROPENSITY_LOGGED),
            Col.POSITION,
            "shown",
        )
    )


def _propensity_key() -> pl.Expr:
    """(ts, propensity) packed into one Int128 whose ``min`` is the propensity at the earliest time
    (the smallest on a tie): the µs time in the high 64 bits, the propensity's IEEE-754 bits in the
    low 64 (positive doubles order like their bit patterns). An order-independent ``first`` at the
    cost of a plain aggregation (a per-group sort is several times slower). Times are ≥ 1990 (the
    contract), hence positive; a null propensity gives a null key, which ``min`` skips.
    """
    return pl.col(Col.TS).dt.epoch("us").cast(pl.Int128) * 2**64 + pl.col(
        Col.PROPENSITY
    ).reinterpret(dtype=pl.Int64).cast(pl.Int128)


def _propensity_of_key(key: pl.Expr) -> pl.Expr:
    """The propensity packed in the low 64 bits of a :func:`_propensity_key`."""
    return (key % 2**64).cast(pl.Int64).reinterpret(dtype=pl.Float64)
