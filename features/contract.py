"""The canonical event table: schema, column names and the validator.

Every source adapter produces a frame with these columns; :func:`validate` splits it into rows that
honour the contract (cast to :data:`POLARS_SCHEMA`) and quarantined rows with a ``reason`` column.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field


class Col:
    """Column names of the event table and of the feature tables built from it, defined once."""

    # the event table (the contract)
    USER = "user_id"
    ITEM = "item_id"
    EVENT = "event"
    TS = "ts"
    SESSION = "session_id"
    POSITION = "position"
    PROPENSITY = "propensity"
    # the feature tables (features stage: users, items, train / valid / test)
    USER_IDX = "user_idx"
    ITEM_IDX = "item_idx"
    LEVEL = "level"  # deepest feedback level reached, 0..T
    PROPENSITY_LOGGED = "propensity_logged"  # as logged; ``propensity`` is logged-else-estimated
    SPLIT = "split"


COLUMNS = [Col.USER, Col.ITEM, Col.EVENT, Col.TS, Col.SESSION, Col.POSITION, Col.PROPENSITY]
IMPRESSION = "impression"

# events.parquet as pyarrow reads it (ingest writes it with :func:`write_events`): Polars writes
# large strings and the event as a dictionary of uint32 codes, and marks every column nullable;
# the validator guarantees that user_id, item_id, event and ts are never null.
EVENT_SCHEMA = pa.schema(
    [
        pa.field(Col.USER, pa.large_string()),
        pa.field(Col.ITEM, pa.large_string()),
        pa.field(Col.EVENT, pa.dictionary(pa.uint32(), pa.string())),
        pa.field(Col.TS, pa.timestamp("us", tz="UTC")),
        pa.field(Col.SESSION, pa.large_string()),
        pa.field(Col.POSITION, pa.int32()),
        pa.field(Col.PROPENSITY, pa.float64()),
    ]
)

POLARS_SCHEMA: dict[str, pl.DataType] = {
    Col.USER: pl.String(),
    Col.ITEM: pl.String(),
    Col.EVENT: pl.Categorical(),
    Col.TS: pl.Datetime("us", "UTC"),
    Col.SESSION: pl.String(),
    Col.POSITION: pl.Int32(),
    Col.PROPENSITY: pl.Float64(),
}

# Reasons a row is quarantined, in the order they are checked: a row gets the first that applies.
REASONS = (
    "null_user_id",
    "null_item_id",
    "bad_user_id",  # longer than MAX_ID_LENGTH, or a control / format / separator character
    "bad_item_id",
    "bad_session_id",
    "unknown_event",
    "bad_timestamp",  # unparseable, or outside [MIN_TS, MAX_TS)
    "future_timestamp",  # later than the validation time plus ``max_future_seconds``
    "propensity_out_of_range",  # outside [min_propensity, 1]
    "bad_position",  # not an integer in [0, MAX_POSITION]
    "conflicting_duplicate",  # same event, time, session and position, different propensities
    "duplicate",
)

# Plausible event times: anything outside is a unit or parsing error upstream.
MIN_TS = datetime(1990, 1, 1, tzinfo=UTC)
MAX_TS = datetime(2100, 1, 1, tzinfo=UTC)

# Ids (user, item, session): at most MAX_ID_LENGTH characters after stripping surrounding whitespace,
# none of them a control (Cc), format (Cf: zero-width, bidi overrides, BOM) or line / paragraph
# separator (Zl, Zp) character: such ids print as something else, or split a log line. The service
# applies the same limits (ID_PATTERN is the regex pydantic checks).
MAX_ID_LENGTH = 256
ID_FORBIDDEN = r"[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]"
ID_PATTERN = r"^[^\p{Cc}\p{Cf}\p{Zl}\p{Zp}]+$"
MAX_POSITION = 2**31 - 1  # int32, the column's type

# ISO-8601 forms accepted for string timestamps (chrono formats: %.f is an optional fraction, %z an
# offset with or without a colon; a trailing Z is read as +00:00). Zone-less times are UTC.
ISO_FORMATS_WITH_ZONE = ("%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z")
ISO_FORMATS = (
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d",
)


class ContractError(ValueError):
    """The input breaks the data contract badly enough that the stage must stop."""


@dataclass(frozen=True)
class EventNames:
    """The configured event vocabulary: impressions, ordered feedback levels, reactions."""

    levels: tuple[str, ...] = ("click", "cart", "purchase")
    reactions: tuple[str, ...] = ("love",)

    def __post_init__(self) -> None:
        names = [IMPRESSION, *self.levels, *self.reactions]
        if not self.levels:
            raise ValueError("at least one feedback level is required")
        if len(set(names)) != len(names):
            raise ValueError(f"event names must be distinct, got {names}")

    @property
    def all(self) -> tuple[str, ...]:
        return (IMPRESSION, *self.levels, *self.reactions)


class ContractConfig(BaseModel):
    """params.yaml → ``contract``: the event vocabulary and how many bad rows ingest tolerates."""

    model_config = ConfigDict(extra="forbid")

    levels: list[str] = Field(
        default_factory=lambda: ["click", "cart", "purchase"],
        description="ordered feedback levels, shallow to deep",
    )
    reactions: list[str] = Field(
        default_factory=lambda: ["love"], description="reaction events (P[Love]); may be empty"
    )
    max_bad_fraction: float = Field(
        0.01, ge=0, le=1, description="quarantined share that fails ingest"
    )
    ts_format: str | None = Field(
        None,
        description="strftime format of string timestamps (e.g. '%d/%m/%Y %H:%M'); "
        "unset: ISO-8601 only, so a slash date is never guessed day- or month-first",
    )
    max_future_seconds: float = Field(
        300, ge=0, description="clock skew tolerated: later events are future_timestamp"
    )
    min_propensity: float = Field(
        1e-12,
        gt=0,
        le=1,
        description="smallest plausible logged propensity (1/θ stays finite in float32)",
    )

    def names(self) -> EventNames:
        return EventNames(tuple(self.levels), tuple(self.reactions))

    def rules(self) -> RowRules:
        return RowRules(self.ts_format, self.max_future_seconds, self.min_propensity)


@dataclass(frozen=True)
class RowRules:
    """The configurable checks of :func:`validate` (see :class:`ContractConfig`)."""

    ts_format: str | None = None
    max_future_seconds: float = 300.0
    min_propensity: float = 1e-12


@dataclass
class ValidationReport:
    """Counts of a validation pass: rows in, rows kept, quarantined rows per reason."""

    n_rows: int
    n_valid: int
    bad_by_reason: dict[str, int] = field(default_factory=dict)

    @property
    def n_bad(self) -> int:
        return self.n_rows - self.n_valid

    @property
    def bad_fraction(self) -> float:
        return self.n_bad / self.n_rows if self.n_rows else 0.0

    def as_dict(self) -> dict:
        return {
            "n_rows": self.n_rows,
            "n_valid": self.n_valid,
            "n_quarantined": self.n_bad,
            "bad_fraction": round(self.bad_fraction, 6),
            "quarantined_by_reason": dict(self.bad_by_reason),
        }


def _parse_ts(raw: pl.Expr, dtype: pl.DataType, ts_format: str | None = None) -> pl.Expr:
    """Parse any accepted time representation into µs UTC; unparseable values become null.

    Strings must be ISO-8601 (:data:`ISO_FORMATS_WITH_ZONE`, :data:`ISO_FORMATS`) or, when
    ``ts_format`` is given, exactly that format.
    """
    if isinstance(dtype, pl.Datetime):
        parsed = raw.dt.cast_time_unit("us")
        return (
            parsed.dt.replace_time_zone("UTC")
            if dtype.time_zone is None
            else parsed.dt.convert_time_zone("UTC")
        )
    if dtype.is_numeric():  # seconds since the epoch
        return (
            (raw.cast(pl.Float64) * 1_000_000)
            .cast(pl.Int64, strict=False)
            .cast(pl.Datetime("us", "UTC"))
        )
    text = raw.cast(pl.String).str.strip_chars()
    formats = (ts_format,) if ts_format else (*ISO_FORMATS_WITH_ZONE, *ISO_FORMATS)
    if not ts_format:
        text = text.str.replace(r"Z$", "+00:00")
    return pl.coalesce(
        text.str.to_datetime(f, time_unit="us", time_zone="UTC", strict=False) for f in formats
    )


def _bad_id(col: str) -> pl.Expr:
    return (pl.col(col).str.len_chars() > MAX_ID_LENGTH) | pl.col(col).str.contains(ID_FORBIDDEN)


def _bad_position(raw: pl.Expr, as_float: pl.Expr) -> pl.Expr:
    """A given position that is not an integer in [0, MAX_POSITION] (text, 1.5, 2**31, NaN)."""
    integral = as_float.is_finite() & (as_float == as_float.floor())
    in_range = (as_float >= 0) & (as_float <= MAX_POSITION)
    return raw.is_not_null() & (as_float.is_null() | ~integral | ~in_range)


_DEDUP_KEY = ["_user", "_item", "_event", "_ts", "_session", "_pos"]


def _with_duplicates(typed: pl.DataFrame) -> pl.Series:
    """``reason`` with the duplicates among the rows that pass every other check: rows with equal
    keys (every column but the propensity) are all ``conflicting_duplicate`` when their
    propensities differ, else all but the first are ``duplicate``.

    Only rows whose key hash repeats can share a key, and those few are compared exactly, so a
    hash collision costs a comparison, never a row: one hash over the whole log instead of two
    window passes over a struct key (about 4x faster on a million rows). The repeated hashes are
    found by sorting them and comparing neighbours (on 10 M rows 0.2 s, against 1.1 s for
    ``is_duplicated``'s hash table).
    """
    passing = typed.get_column("reason").is_null()
    hashes = typed.select(pl.struct(_DEDUP_KEY).hash()).to_series()
    ordered = hashes.filter(passing).sort()
    repeated = ordered.filter(ordered == ordered.shift(1)).unique()
    maybe = passing & hashes.is_in(repeated.implode())
    rows = typed.with_row_index("_row").filter(maybe)
    key = pl.struct(_DEDUP_KEY)
    flagged = rows.select(
        "_row",
        pl.when(pl.col("_prop").n_unique().over(key) > 1)
        .then(pl.lit("conflicting_duplicate"))
        .when(~key.is_first_distinct())
        .then(pl.lit("duplicate"))
        .alias("reason"),
    ).drop_nulls("reason")
    reason = typed.get_column("reason")
    if flagged.height:
        reason = reason.scatter(flagged["_row"], flagged["reason"])
    return reason


def check_columns(columns: list[str]) -> None:
    """Raise :class:`ContractError` when the contract's required columns are not all present."""
    missing = [c for c in (Col.USER, Col.ITEM, Col.EVENT, Col.TS) if c not in columns]
    if missing:
        raise ContractError(f"event log lacks required column(s) {missing}; has {columns}")


def validate(
    frame: pl.DataFrame,
    names: EventNames,
    rules: RowRules | None = None,
    now: datetime | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame, ValidationReport]:
    """Split ``frame`` into contract rows and quarantined rows.

    ``frame`` must have the contract's columns (``session_id``, ``position`` and ``propensity`` may
    be missing; they are then null). ``ts`` may be a datetime, seconds since the epoch, or a string
    (ISO-8601, or ``rules.ts_format``). ``now`` (default: the clock) is the time ``future_timestamp``
    is judged against. Returns ``(valid, quarantine, report)``: ``valid`` follows
    :data:`POLARS_SCHEMA`; ``quarantine`` holds the offending rows as strings plus a ``reason``
    column (:data:`REASONS`). Of identical rows the first is kept and the rest are ``duplicate``;
    rows identical but for their propensities are all ``conflicting_duplicate`` (which one is right
    cannot be told).
    """
    rules = rules or RowRules()
    now = now or datetime.now(UTC)
    check_columns(frame.columns)
    for col, dtype in (
        (Col.SESSION, pl.String),
        (Col.POSITION, pl.Int32),
        (Col.PROPENSITY, pl.Float64),
    ):
        if col not in frame.columns:
            frame = frame.with_columns(pl.lit(None, dtype).alias(col))
    frame = frame.select(COLUMNS)

    pos_float = pl.col(Col.POSITION).cast(pl.Float64, strict=False)
    typed = frame.with_columns(
        pl.col(Col.USER).cast(pl.String).str.strip_chars().alias("_user"),
        pl.col(Col.ITEM).cast(pl.String).str.strip_chars().alias("_item"),
        pl.col(Col.EVENT).cast(pl.String).alias("_event"),
        _parse_ts(pl.col(Col.TS), frame.schema[Col.TS], rules.ts_format).alias("_ts"),
        pl.col(Col.PROPENSITY).cast(pl.Float64, strict=False).alias("_prop"),
        pos_float.alias("_pos"),
        pl.col(Col.SESSION).cast(pl.String).alias("_session"),
        _bad_position(pl.col(Col.POSITION), pos_float).alias("_bad_pos"),
    )
    latest = now.astimezone(UTC) + timedelta(seconds=rules.max_future_seconds)
    row_reason = (
        pl.when(pl.col("_user").is_null() | (pl.col("_user") == ""))
        .then(pl.lit("null_user_id"))
        .when(pl.col("_item").is_null() | (pl.col("_item") == ""))
        .then(pl.lit("null_item_id"))
        .when(_bad_id("_user"))
        .then(pl.lit("bad_user_id"))
        .when(_bad_id("_item"))
        .then(pl.lit("bad_item_id"))
        .when(_bad_id("_session"))
        .then(pl.lit("bad_session_id"))
        .when(pl.col("_event").is_null() | ~pl.col("_event").is_in(list(names.all)))
        .then(pl.lit("unknown_event"))
        .when(
            pl.col("_ts").is_null()
            | (pl.col("_ts") < pl.lit(MIN_TS))
            | (pl.col("_ts") >= pl.lit(MAX_TS))
        )
        .then(pl.lit("bad_timestamp"))
        .when(pl.col("_ts") > pl.lit(latest))
        .then(pl.lit("future_timestamp"))
        .when(
            pl.col(Col.PROPENSITY).is_not_null()
            & (
                pl.col("_prop").is_null()
                | pl.col("_prop").is_nan()
                | (pl.col("_prop") < rules.min_propensity)
                | (pl.col("_prop") > 1)
            )
        )
        .then(pl.lit("propensity_out_of_range"))
        .when(pl.col("_bad_pos"))
        .then(pl.lit("bad_position"))
        .otherwise(pl.lit(None, pl.String))
    )
    typed = typed.with_columns(row_reason.alias("reason"))
    typed = typed.with_columns(_with_duplicates(typed))

    # lazily, so that the filter copies only the selected columns; the event through an Enum of
    # the known names, a cheaper cast than string → Categorical (every kept event is known)
    valid = (
        typed.lazy()
        .filter(pl.col("reason").is_null())
        .select(
            pl.col("_user").alias(Col.USER),
            pl.col("_item").alias(Col.ITEM),
            pl.col("_event").cast(pl.Enum(names.all)).cast(pl.Categorical).alias(Col.EVENT),
            pl.col("_ts").alias(Col.TS),
            pl.col("_session").alias(Col.SESSION),
            pl.col("_pos").cast(pl.Int32).alias(Col.POSITION),
            pl.col("_prop").alias(Col.PROPENSITY),
        )
        .collect()
    )
    quarantine = (
        typed.lazy()
        .filter(pl.col("reason").is_not_null())
        .select(*[pl.col(c).cast(pl.String) for c in COLUMNS], "reason")
        .collect()
    )
    counts = quarantine.group_by("reason").len().sort("reason")
    report = ValidationReport(
        n_rows=frame.height,
        n_valid=valid.height,
        bad_by_reason=dict(zip(counts["reason"].to_list(), counts["len"].to_list(), strict=True)),
    )
    return valid, quarantine, report


@dataclass
class IngestSummary:
    """What ingest reports of a log: its validation and the valid events' counts."""

    report: ValidationReport
    events_by_type: dict[str, int]
    n_users: int
    n_items: int

    @classmethod
    def of(cls, valid: pl.DataFrame, report: ValidationReport) -> IngestSummary:
        """The summary of ``valid`` (from :func:`validate`, with its ``report``)."""
        counts = valid.group_by(pl.col(Col.EVENT).cast(pl.String)).len()
        return cls(
            report=report,
            events_by_type=dict(zip(counts[Col.EVENT], counts["len"], strict=True)),
            n_users=valid[Col.USER].n_unique(),
            n_items=valid[Col.ITEM].n_unique(),
        )

    def as_dict(self) -> dict:
        return {
            **self.report.as_dict(),
            "events_by_type": dict(self.events_by_type),
            "n_users": self.n_users,
            "n_items": self.n_items,
        }


def check_bad_fraction(
    report: ValidationReport, max_bad_fraction: float, quarantine_path: str
) -> None:
    """Raise :class:`ContractError` naming the main problem when too many rows were quarantined."""
    if report.n_rows == 0:
        raise ContractError("the event log is empty: no rows to ingest")
    if report.bad_fraction <= max_bad_fraction:
        return
    worst = sorted(report.bad_by_reason.items(), key=lambda kv: -kv[1])
    detail = ", ".join(f"{r} ({n})" for r, n in worst)
    raise ContractError(
        f"{report.bad_fraction:.2%} of rows ({report.n_bad} of {report.n_rows}) break the data "
        f"contract, above max_bad_fraction={max_bad_fraction}; reasons: {detail}. "
        f"The rows are in {quarantine_path}."
    )


def empty_events() -> pl.DataFrame:
    """An empty frame in the contract's schema."""
    return pl.DataFrame(schema=POLARS_SCHEMA)


def write_events(valid: pl.DataFrame, path: Path) -> None:
    """Write a validated frame as Parquet: the contract's columns, read back as :data:`EVENT_SCHEMA`.

    Polars encodes the row groups in parallel, straight from its string views: on 10 M events
    0.9 s, against 2.8 s for an export to Arrow and pyarrow's writer.
    """
    valid.select(COLUMNS).write_parquet(path)
