"""The data contract under hostile rows: each is quarantined with its own reason, none crashes ingest.

Positions out of int32 or not integers, ids that are too long or carry invisible characters, times in
the future or written ambiguously, and duplicates that disagree on the propensity. The service's id
type (serving.service.Id) refuses exactly the ids the contract quarantines.
"""

from datetime import UTC, datetime

import polars as pl
import pyarrow.parquet as pq
import pytest
from pydantic import TypeAdapter, ValidationError

from features.contract import (
    EVENT_SCHEMA,
    MAX_ID_LENGTH,
    ContractConfig,
    EventNames,
    RowRules,
    validate,
    write_events,
)
from serving.service import Id

NAMES = EventNames()
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def frame(**overrides) -> pl.DataFrame:
    """Three good rows; ``overrides`` replace whole columns (row 1 is the one made bad)."""
    base = {
        "user_id": ["u1", "u2", "u3"],
        "item_id": ["i1", "i2", "i3"],
        "event": ["impression", "click", "purchase"],
        "ts": ["2026-01-01T10:00:00", "2026-01-01T10:00:05", "2026-01-02T00:00:00"],
        "session_id": ["s1", "s1", None],
        "position": [0, 0, None],
        "propensity": [0.25, None, None],
    }
    base.update(overrides)
    return pl.DataFrame(base, strict=False)


def reasons(df: pl.DataFrame, rules: RowRules | None = None) -> list[str]:
    _, quarantine, _ = validate(df, NAMES, rules, now=NOW)
    return quarantine["reason"].to_list()


@pytest.mark.parametrize(
    "positions",
    [
        pl.Series([0, 2**31, None], dtype=pl.Int64),  # one past int32
        pl.Series([0, 2**40, None], dtype=pl.Int64),
        pl.Series([0.0, 1e12, None]),
        pl.Series([0.0, 1.5, None]),
        pl.Series([0.0, float("nan"), None]),
        pl.Series([0.0, float("inf"), None]),
        pl.Series(["0", "x", None]),
        pl.Series([0, -1, None], dtype=pl.Int64),
    ],
    ids=["2**31", "2**40", "1e12", "1.5", "nan", "inf", "text", "negative"],
)
def test_a_position_outside_int32_or_not_an_integer_is_bad_position(positions, tmp_path):
    valid, quarantine, report = validate(frame(position=positions), NAMES, now=NOW)
    assert quarantine["reason"].to_list() == ["bad_position"]
    assert report.n_valid == 2
    # the rest is written as the contract's Arrow schema without a cast error
    write_events(valid, tmp_path / "events.parquet")
    assert pq.read_schema(tmp_path / "events.parquet").equals(EVENT_SCHEMA)


def test_the_largest_int32_position_is_valid():
    valid, _, report = validate(frame(position=[0, 2**31 - 1, None]), NAMES, now=NOW)
    assert report.n_bad == 0 and valid["position"].to_list() == [0, 2**31 - 1, None]


BAD_IDS = {
    "too long": "u" * 100_000,
    "one past the limit": "u" * (MAX_ID_LENGTH + 1),
    "NUL": "u\x00x",
    "newline": "u\nx",
    "escape": "u\x1b[31m",
    "zero-width space": "u\u200bx",
    "zero-width joiner": "u\u200dx",
    "bidi override": "\u202eu",
    "byte-order mark": "\ufeffu",
    "line separator": "u\u2028x",
}


@pytest.mark.parametrize("bad", BAD_IDS.values(), ids=BAD_IDS.keys())
@pytest.mark.parametrize(
    ("column", "reason"),
    [("user_id", "bad_user_id"), ("item_id", "bad_item_id"), ("session_id", "bad_session_id")],
)
def test_an_id_too_long_or_with_invisible_characters_is_quarantined(column, reason, bad):
    values = frame()[column].to_list()
    values[1] = bad
    assert reasons(frame(**{column: values})) == [reason]


@pytest.mark.parametrize("bad", BAD_IDS.values(), ids=BAD_IDS.keys())
def test_the_service_refuses_the_ids_the_contract_quarantines(bad):
    with pytest.raises(ValidationError):
        TypeAdapter(Id).validate_python(bad)


@pytest.mark.parametrize("good", ["u" * MAX_ID_LENGTH, "é☃ 漢字", "user 42", "a-b_c.d@e/f"])
def test_ids_within_the_limits_pass_both(good):
    assert TypeAdapter(Id).validate_python(good) == good
    assert reasons(frame(user_id=["u1", good, "u3"])) == []


def test_a_timestamp_after_the_clock_plus_the_skew_is_future_timestamp():
    soon = "2026-06-01T12:04:00Z"  # within the default 300 s
    later = "2026-06-01T12:06:00Z"
    far = "2099-12-31T00:00:00Z"  # plausible as a date, but not yet
    ts = ["2026-01-01T10:00:00", soon, "2026-01-02T00:00:00"]
    assert reasons(frame(ts=ts)) == []
    assert reasons(frame(ts=[ts[0], later, ts[2]])) == ["future_timestamp"]
    assert reasons(frame(ts=[ts[0], far, ts[2]])) == ["future_timestamp"]
    assert reasons(frame(ts=[ts[0], later, ts[2]]), RowRules(max_future_seconds=600)) == []
    assert reasons(frame(ts=[ts[0], "2100-01-01T00:00:00Z", ts[2]])) == ["bad_timestamp"]


def test_future_timestamps_of_datetime_and_epoch_columns_too():
    dt = [datetime(2026, 1, 1, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=UTC), NOW]
    assert reasons(frame(ts=dt)) == ["future_timestamp"]
    epoch = [1_767_225_600.0, 1_900_000_000.0, 1_767_225_601.0]  # 2030-03-17 is in the future
    assert reasons(frame(ts=epoch)) == ["future_timestamp"]


@pytest.mark.parametrize(
    "text",
    [
        "2026-01-01T10:00:00",
        "2026-01-01 10:00:00",
        "2026-01-01T10:00:00.123456",
        "2026-01-01T10:00:00Z",
        "2026-01-01T11:00:00+01:00",
        "2026-01-01T11:00:00+0100",
        "2026-01-01T10:00",
        " 2026-01-01T10:00:00 ",
    ],
)
def test_iso_8601_strings_are_read(text):
    valid, _, report = validate(
        frame(ts=["2026-01-01T00:00:00", text, "2026-01-02"]), NAMES, now=NOW
    )
    assert report.n_bad == 0
    assert valid["ts"][1].replace(microsecond=0) == datetime(2026, 1, 1, 10, tzinfo=UTC)


@pytest.mark.parametrize("text", ["01/02/2026", "01/02/2026 10:00", "2/1/26", "Jan 2 2026", "2026"])
def test_a_slash_date_or_other_non_iso_string_is_bad_unless_a_format_is_configured(text):
    assert reasons(frame(ts=["2026-01-01T00:00:00", text, "2026-01-02"])) == ["bad_timestamp"]


def test_a_configured_format_decides_day_first_or_month_first():
    ts = ["01/02/2026 10:00", "02/01/2026 10:00", "2026-01-02"]  # the ISO one breaks the format
    day_first = RowRules(ts_format="%d/%m/%Y %H:%M")
    valid, quarantine, _ = validate(frame(ts=ts), NAMES, day_first, now=NOW)
    assert [t.isoformat() for t in valid["ts"]] == [
        "2026-02-01T10:00:00+00:00",
        "2026-01-02T10:00:00+00:00",
    ]
    assert quarantine["reason"].to_list() == ["bad_timestamp"]
    month_first = RowRules(ts_format="%m/%d/%Y %H:%M")
    valid, _, _ = validate(frame(ts=ts), NAMES, month_first, now=NOW)
    assert valid["ts"][0].isoformat() == "2026-01-02T10:00:00+00:00"


def test_params_carry_the_rules():
    cfg = ContractConfig(ts_format="%d/%m/%Y", max_future_seconds=60, min_propensity=1e-6)
    assert cfg.rules() == RowRules("%d/%m/%Y", 60, 1e-6)


def test_duplicates_with_different_propensities_get_their_own_reason():
    base = frame()
    same = base[0:1]
    other = base[0:1].with_columns(pl.lit(0.5).alias("propensity"))
    valid, quarantine, report = validate(pl.concat([base, same]), NAMES, now=NOW)
    assert quarantine["reason"].to_list() == ["duplicate"] and valid.height == 3
    valid, quarantine, report = validate(pl.concat([base, other]), NAMES, now=NOW)
    # which propensity is right cannot be told: every copy goes, none is kept silently
    assert quarantine["reason"].to_list() == ["conflicting_duplicate"] * 2
    assert sorted(quarantine["propensity"].to_list()) == ["0.25", "0.5"]
    assert report.bad_by_reason == {"conflicting_duplicate": 2} and valid.height == 2


def test_a_bad_copy_does_not_make_its_good_twin_a_duplicate():
    base = frame()
    broken = base[0:1].with_columns(pl.lit(7.0).alias("propensity"))  # out of range
    valid, quarantine, _ = validate(pl.concat([broken, base]), NAMES, now=NOW)
    assert quarantine["reason"].to_list() == ["propensity_out_of_range"]
    assert valid.height == 3


@pytest.mark.parametrize("propensity", [5e-324, 1e-300, 1e-13])
def test_a_propensity_below_the_floor_is_out_of_range(propensity):
    assert reasons(frame(propensity=[propensity, None, None])) == ["propensity_out_of_range"]
    assert reasons(frame(propensity=[propensity, None, None]), RowRules(min_propensity=1e-320)) == (
        [] if propensity >= 1e-320 else ["propensity_out_of_range"]
    )
