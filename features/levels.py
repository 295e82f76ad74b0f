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
    """
    event = pl.col(Col.EVENT).cast(pl.String)
    is_imp = event == IMPRESSION
    level = pl.max_horizontal(
        [
            pl.when((event == name).any()).then(pl.lit(c, pl.Int8)).otherwise(pl.lit(0, pl.Int8))
            for c, name in enumerate(names.levels, start=1)
        ]
    )
    return (
        events.with_columns(pl.col(Col.SESSION).fill_null(""))
        .group_by(UNIT_KEY)
        .agg(
            pl.coalesce(pl.col(Col.TS).filter(is_imp).min(), pl.col(Col.TS).min()).alias(Col.TS),
            level.alias(Col.LEVEL),
            *[(event == r).any().cast(pl.Int8).alias(reaction_column(r)) for r in names.reactions],
            _earliest_propensity(is_imp).alias(Col.PROPENSITY_LOGGED),
            pl.col(Col.POSITION).filter(is_imp).min().alias(Col.POSITION),
            is_imp.any().alias("shown"),
        )
    )


def _earliest_propensity(rows: pl.Expr) -> pl.Expr:
    """Among ``rows`` with a propensity, the propensity at the earliest time (the smallest on a tie).

    (ts, propensity) is packed into one Int128, the µs time in the high 64 bits and the
    propensity's IEEE-754 bits in the low 64 (positive doubles order like their bit patterns), so
    a single ``min`` orders by time, then propensity: an order-independent ``first`` at the cost of
    a plain aggregation (a per-group sort is several times slower). Times are ≥ 1990 (the
    contract), hence positive.
    """
    key = pl.col(Col.TS).dt.epoch("us").cast(pl.Int128) * 2**64 + pl.col(
        Col.PROPENSITY
    ).reinterpret(dtype=pl.Int64).cast(pl.Int128)
    low_bits = (key.filter(rows).min() % 2**64).cast(pl.Int64)
    return low_bits.reinterpret(dtype=pl.Float64)
