"""The data contract's validator: every kind of bad row is quarantined with its reason."""

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from features.contract import (
    EVENT_SCHEMA,
    ContractError,
    EventNames,
    check_bad_fraction,
    validate,
    write_events,
)

NAMES = EventNames()


def frame(**overrides) -> pl.DataFrame:
    base = {
        "user_id": ["u1", "u2", "u3"],
        "item_id": ["i1", "i2", "i3"],
        "event": ["impression", "click", "purchase"],
        "ts": ["2025-01-01T10:00:00", "2025-01-01T10:00:05", "2025-01-02T00:00:00"],
        "session_id": ["s1", "s1", None],
        "position": [0, 0, None],
        "propensity": [0.25, None, None],
    }
    base.update(overrides)
    return pl.DataFrame(base, schema_overrides={"position": pl.Int64, "propensity": pl.Float64})


def test_clean_rows_pass_and_are_written_in_the_arrow_schema(tmp_path):
    valid, quarantine, report = validate(frame(), NAMES)
    assert (report.n_rows, report.n_valid, report.n_bad) == (3, 3, 0)
    assert quarantine.height == 0
    write_events(valid, tmp_path / "events.parquet")
    table = pq.read_table(tmp_path / "events.parquet")
    assert table.schema.equals(EVENT_SCHEMA)
    assert table.column("ts").type == pa.timestamp("us", tz="UTC")
    assert table.column("event").to_pylist() == valid["event"].cast(pl.String).to_list()
    assert pl.read_parquet(tmp_path / "events.parquet").equals(valid)
    assert valid["propensity"].to_list() == [0.25, None, None]


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"user_id": ["u1", None, "u3"]}, "null_user_id"),
        ({"user_id": ["u1", "  ", "u3"]}, "null_user_id"),
        ({"item_id": ["i1", None, "i3"]}, "null_item_id"),
        ({"event": ["impression", "like", "purchase"]}, "unknown_event"),
        ({"ts": ["2025-01-01T10:00:00", "yesterday", "2025-01-02T00:00:00"]}, "bad_timestamp"),
        (
            {"ts": ["2025-01-01T10:00:00", "1970-01-01T00:00:00", "2025-01-02T00:00:00"]},
            "bad_timestamp",
        ),
        ({"propensity": [0.25, 0.0, None]}, "propensity_out_of_range"),
        ({"propensity": [0.25, 1.5, None]}, "propensity_out_of_range"),
        ({"propensity": [0.25, float("nan"), None]}, "propensity_out_of_range"),
        ({"position": [0, -3, None]}, "bad_position"),
    ],
)
def test_each_kind_of_bad_row_is_quarantined_with_its_reason(overrides, reason):
    valid, quarantine, report = validate(frame(**overrides), NAMES)
    assert report.n_valid == 2 and valid.height == 2
    assert quarantine["reason"].to_list() == [reason]
    assert quarantine["user_id"].to_list() == [frame(**overrides)["user_id"][1]]
    assert report.bad_by_reason == {reason: 1}


def test_duplicates_keep_the_first_copy():
    dup = pl.concat([frame(), frame()[1:2]])
    valid, quarantine, report = validate(dup, NAMES)
    assert valid.height == 3
    assert quarantine["reason"].to_list() == ["duplicate"]


def test_numeric_epoch_seconds_are_accepted():
    valid, _, report = validate(frame(ts=[1735725600.0, 1735725605.5, 1735776000.0]), NAMES)
    assert report.n_bad == 0
    assert str(valid["ts"][1]) == "2025-01-01 10:00:05.500000+00:00"


def test_missing_required_column_is_a_clear_error():
    with pytest.raises(ContractError, match=r"lacks required column\(s\) \['ts'\]"):
        validate(frame().drop("ts"), NAMES)


def test_bad_fraction_threshold_fails_with_the_main_reason():
    _, _, report = validate(frame(event=["impression", "like", "wave"]), NAMES)
    check_bad_fraction(report, 0.7, "q.parquet")  # 2/3 ≤ 0.7: passes
    with pytest.raises(
        ContractError, match=r"66\.67% of rows \(2 of 3\).*unknown_event \(2\).*q\.parquet"
    ):
        check_bad_fraction(report, 0.5, "q.parquet")


def test_event_names_must_be_distinct():
    with pytest.raises(ValueError, match="distinct"):
        EventNames(levels=("click", "click"))
