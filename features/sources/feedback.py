"""The service's feedback log (features/feedback_log.py) as events in the data contract.

Each JSON record becomes one row: ``user_id, item_id, event, ts, session_id, position, propensity``.
``session_id`` is the record's ``slate_id`` — a slate is the unit that links an impression to the
clicks, carts, purchases and loves it led to (features/levels.py groups by user, item, session).
``ts`` is the ISO-8601 UTC time the service wrote; other record keys (``model_version``) are
dropped. Nothing is validated here: the ingest stage's contract check quarantines bad rows exactly
as for the primary source (a ``position`` or ``propensity`` that is not a number arrives as NaN, so
it is quarantined rather than read as missing). Torn lines (a writer killed mid-write, never
acknowledged) are skipped. Day files and their archives are read alike, by Polars, a block at a
time (features/feedback_log.py: :func:`read_frame`).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from features.contract import Col
from features.feedback_log import ReadStats, read_frame

TS_FORMAT = "%Y-%m-%dT%H:%M:%S%.f%z"  # datetime.isoformat() with an offset (or Z), as written

SLATE_ID = "slate_id"  # the record key that becomes the contract's session_id

# The record keys read from the log, as the reader types them.
FIELDS: dict[str, pl.DataType] = {
    Col.USER: pl.String(),
    Col.ITEM: pl.String(),
    Col.EVENT: pl.String(),
    Col.TS: pl.String(),
    SLATE_ID: pl.String(),
    Col.POSITION: pl.Float64(),
    Col.PROPENSITY: pl.Float64(),
}


def load_feedback(directory: str | Path, stats: ReadStats | None = None) -> pl.DataFrame:
    """The log under ``directory`` as a contract frame (``ts`` as Datetime µs UTC; null if bad)."""
    frame = read_frame(directory, FIELDS, stats).rename({SLATE_ID: Col.SESSION})
    return frame.with_columns(
        pl.col(Col.TS)
        .str.replace(r"Z$", "+00:00")
        .str.to_datetime(TS_FORMAT, time_unit="us", time_zone="UTC", strict=False)
    )


def append_feedback(events: pl.DataFrame, feedback: pl.DataFrame) -> pl.DataFrame:
    """``events`` (a source's raw frame, ``ts`` a datetime) followed by the ``feedback`` rows.

    Columns missing on either side become null; ``event`` becomes a string and ``ts`` µs UTC (a
    zone-less time is read as UTC, as the contract does), so validation sees one frame.
    """
    ts_type = events.schema.get(Col.TS)
    if not isinstance(ts_type, pl.Datetime):
        raise ValueError(
            f"source.feedback_log needs a source whose ts column is a datetime, got {ts_type}"
        )
    ts = pl.col(Col.TS).dt.cast_time_unit("us")
    ts = (
        ts.dt.replace_time_zone("UTC")
        if ts_type.time_zone is None
        else ts.dt.convert_time_zone("UTC")
    )
    events = events.with_columns(ts, pl.col(Col.EVENT).cast(pl.String))
    return pl.concat([events, feedback], how="diagonal_relaxed")
