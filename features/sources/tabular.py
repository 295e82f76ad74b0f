"""The user's own event log (Parquet or CSV) mapped onto the contract's columns and event names.

:class:`TabularConfig` names the file, which of its columns holds each contract column, how its
event names translate, and the unit of its timestamps. :func:`load_tabular` only renames, translates
and converts time; it drops nothing and reads CSV columns as text. Event names without a mapping
pass through unchanged, so :func:`features.contract.validate` quarantines them as
``unknown_event``; ``position`` and ``propensity`` keep their raw values for the validator to check.

Example — RetailRocket's ``events.csv`` (``timestamp,visitorid,event,itemid,transactionid``)::

    path: data/retailrocket/events.csv
    columns: {user_id: visitorid, item_id: itemid, event: event, ts: timestamp}
    ts_unit: ms
    events: {view: impression, addtocart: cart, transaction: purchase}

with the contract's event names ``levels: [cart, purchase]`` and no reactions (RetailRocket logs
views, not served impressions: ``view`` is the closest thing to an exposure it has).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, field_validator

from features.contract import COLUMNS, Col

REQUIRED = (Col.USER, Col.ITEM, Col.EVENT, Col.TS)
OPTIONAL = (Col.SESSION, Col.POSITION, Col.PROPENSITY)
# Microseconds per unit of a numeric timestamp.
US_PER_UNIT = {"s": 1_000_000, "ms": 1_000, "us": 1}


class TabularConfig(BaseModel):
    """Where the log is and how its columns, event names and timestamps map onto the contract."""

    model_config = ConfigDict(extra="forbid")

    path: str | None = Field(
        None, description="the Parquet or CSV file (Parquet: or a directory of .parquet files)"
    )
    format: Literal["parquet", "csv"] | None = Field(
        None, description="file format; inferred from the suffix when unset"
    )
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="contract column -> the file's column; unmapped ones keep their own name",
    )
    events: dict[str, str] = Field(
        default_factory=dict,
        description="the file's event name -> contract event name; unmapped names pass unchanged",
    )
    ts_unit: Literal["s", "ms", "us", "iso"] = Field(
        "s", description="unit of numeric timestamps since the epoch, or iso for ISO-8601 strings"
    )

    @field_validator("columns")
    @classmethod
    def _contract_columns_only(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(COLUMNS))
        if unknown:
            raise ValueError(f"columns maps unknown contract column(s) {unknown}; known: {COLUMNS}")
        return value


def _format(cfg: TabularConfig, path: Path) -> str:
    if cfg.format is not None:
        return cfg.format
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in (".parquet", ".pq"):
        return "parquet"
    if ".csv" in suffixes:
        return "csv"
    raise ValueError(f"cannot infer the format of {path}: set format to 'parquet' or 'csv'")


def parquet_files(path: Path) -> list[Path]:
    """The Parquet files of a log: the file itself, or a directory's ``*.parquet`` files (at any
    depth) in path order — the order their rows are read in, which decides which copy of a
    duplicate row is kept."""
    if not path.is_dir():
        return [path]
    files = sorted(p for p in path.rglob("*.parquet") if p.is_file())
    if not files:
        raise ValueError(f"event log directory {path} holds no .parquet files")
    return files


def _read(cfg: TabularConfig, path: Path) -> pl.DataFrame:
    if _format(cfg, path) == "parquet":
        return pl.concat([pl.read_parquet(p) for p in parquet_files(path)], how="vertical")
    # All text: "007" stays an id, and a stray bad value cannot break type inference mid-file.
    return pl.read_csv(path, infer_schema=False)


def _ts(raw: pl.Expr, dtype: pl.DataType, unit: str) -> pl.Expr:
    """Time as µs UTC for datetimes and numeric units (unparseable → null); ISO strings as text."""
    if isinstance(dtype, pl.Datetime):
        parsed = raw.dt.cast_time_unit("us")
        if dtype.time_zone is None:
            return parsed.dt.replace_time_zone("UTC")
        return parsed.dt.convert_time_zone("UTC")
    if unit == "iso":
        return raw.cast(pl.String)
    # Float µs are exact below 2**53 (year 2255); larger or unparseable values become null.
    micros = (raw.cast(pl.Float64, strict=False) * US_PER_UNIT[unit]).round()
    return micros.cast(pl.Int64, strict=False).cast(pl.Datetime("us", "UTC"))


def tabular_path(cfg: TabularConfig) -> Path:
    """The configured log's path (a file, or for Parquet a directory of files); ``ValueError``
    when it is unset or missing."""
    if not cfg.path:
        raise ValueError("the tabular source needs `path`: the Parquet or CSV event log")
    path = Path(cfg.path)
    if path.is_dir() and _format(cfg, path) == "parquet":
        return path
    if not path.is_file():
        raise ValueError(f"event log {path} not found")
    return path


def load_tabular(cfg: TabularConfig) -> pl.DataFrame:
    """The file at ``cfg.path`` with the contract's columns, ready for ``validate``.

    Returns ``user_id, item_id, event`` (str, events translated by ``cfg.events``), ``ts``
    (Datetime µs UTC for numeric units and datetime columns, null where unparseable; str for
    ``iso``), ``session_id`` (str) and ``position``, ``propensity`` (raw; null when absent).
    Raises ``ValueError`` when the path is unset or missing, or a mapped column is absent.
    """
    path = tabular_path(cfg)
    return to_contract(_read(cfg, path), cfg, path.name)


def to_contract(frame: pl.DataFrame, cfg: TabularConfig, name: str) -> pl.DataFrame:
    """``frame`` (the file ``name``, or a part of it) mapped as :func:`load_tabular` describes."""

    def source(col: str) -> str | None:
        column = cfg.columns.get(col, col)
        if column in frame.columns:
            return column
        if col in REQUIRED or col in cfg.columns:
            raise ValueError(
                f"column {column!r} (for contract column {col!r}) is not in {name}; "
                f"available columns: {frame.columns}"
            )
        return None

    names = {col: source(col) for col in COLUMNS}
    null_types = {Col.SESSION: pl.String, Col.POSITION: pl.Int32, Col.PROPENSITY: pl.Float64}
    exprs = {
        Col.USER: pl.col(names[Col.USER]).cast(pl.String),
        Col.ITEM: pl.col(names[Col.ITEM]).cast(pl.String),
        Col.EVENT: pl.col(names[Col.EVENT]).cast(pl.String).replace(cfg.events),
        Col.TS: _ts(pl.col(names[Col.TS]), frame.schema[names[Col.TS]], cfg.ts_unit),
    }
    for col in OPTIONAL:
        column = names[col]
        if column is None:
            exprs[col] = pl.lit(None, null_types[col])
        elif col == Col.SESSION:
            exprs[col] = pl.col(column).cast(pl.String)
        else:
            exprs[col] = pl.col(column)
    return frame.select(expr.alias(col) for col, expr in exprs.items())
