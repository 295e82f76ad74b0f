"""Real-data sources: pinned wheel fetching, MovieLens 100K, the OBD sample and tabular logs.

The MovieLens and OBD tests run a real ``pip download`` of the pinned wheels, once per session.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from features.contract import IMPRESSION, POLARS_SCHEMA, Col, EventNames, validate
from features.sources import fetch
from features.sources.fetch import OBP, RECBOLE, fetch_wheel, read_member, sha256_of
from features.sources.movielens import (
    MovieLensConfig,
    load_movielens,
    load_movielens_features,
    read_ratings,
)
from features.sources.obd import OBDConfig, load_obd, read_rounds
from features.sources.tabular import TabularConfig, load_tabular

OUTPUT_SCHEMA = {**POLARS_SCHEMA, Col.EVENT: pl.String()}
ML_NAMES = EventNames(levels=("click", "cart", "purchase"), reactions=())
OBD_NAMES = EventNames(levels=("click",), reactions=())
RETAIL_NAMES = EventNames(levels=("cart", "purchase"), reactions=())


@pytest.fixture(scope="session")
def ml_events(wheel_cache: Path) -> pl.DataFrame:
    return load_movielens(MovieLensConfig(), wheel_cache)


@pytest.fixture(scope="session")
def ml_ratings(wheel_cache: Path) -> pl.DataFrame:
    return read_ratings(wheel_cache)


def _fake_wheel(folder: Path, name: str = "recbole-1.2.1-py3-none-any.whl") -> Path:
    path = folder / name
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("recbole/__init__.py", "")
    return path


# --- fetch -----------------------------------------------------------------------------------


def test_fetch_downloads_pinned_wheel_and_then_serves_it_from_cache(
    wheel_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheel = fetch_wheel(*RECBOLE, wheel_cache)
    assert wheel.parent == wheel_cache
    assert wheel.name.startswith("recbole-1.2.1-")
    assert sha256_of(wheel) == RECBOLE.sha256
    assert not [p for p in wheel_cache.iterdir() if p.name.startswith(".download-")]

    def no_download(*args: object) -> Path:
        raise AssertionError("a cached wheel with the right hash must not be downloaded again")

    monkeypatch.setattr(fetch, "_pip_download", no_download)
    assert fetch_wheel(*RECBOLE, wheel_cache) == wheel


def test_fetch_refuses_a_real_wheel_whose_sha256_differs(tmp_path: Path) -> None:
    wrong = "0" * 64
    with pytest.raises(ValueError, match="sha256 mismatch") as err:
        fetch_wheel(OBP.package, OBP.version, wrong, tmp_path)
    assert wrong in str(err.value) and OBP.sha256 in str(err.value)  # expected and actual
    assert list(tmp_path.iterdir()) == []  # nothing kept, temporary folder gone


def test_fetch_replaces_a_cached_wheel_with_a_wrong_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache, source = tmp_path / "cache", tmp_path / "source"
    cache.mkdir()
    source.mkdir()
    stale = _fake_wheel(cache)
    good_source = _fake_wheel(source)
    good_hash = sha256_of(good_source)
    stale.write_bytes(b"corrupt")

    def fake_download(package: str, version: str, dest: Path) -> Path:
        target = dest / "recbole-1.2.1-py3-none-any.whl"
        target.write_bytes(good_source.read_bytes())
        return target

    monkeypatch.setattr(fetch, "_pip_download", fake_download)
    wheel = fetch_wheel("recbole", "1.2.1", good_hash, cache)
    assert wheel == stale and sha256_of(wheel) == good_hash


def test_fetch_reports_pip_failure_with_its_stderr(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"pip download of recbole==0\.0\.0\.dev9 failed") as err:
        fetch_wheel("recbole", "0.0.0.dev9", "0" * 64, tmp_path)
    assert "matching distribution" in str(err.value).lower()


def test_read_member_names_a_missing_member(tmp_path: Path) -> None:
    wheel = _fake_wheel(tmp_path)
    assert read_member(wheel, "recbole/__init__.py") == b""
    with pytest.raises(FileNotFoundError, match=r"recbole/nope\.txt.*recbole/__init__\.py"):
        read_member(wheel, "recbole/nope.txt")


# --- MovieLens 100K ----------------------------------------------------------------------------


def test_movielens_ratings_have_the_known_ml100k_distribution(ml_ratings: pl.DataFrame) -> None:
    assert ml_ratings.height == 100_000
    counts = dict(ml_ratings["rating"].value_counts().iter_rows())
    assert counts == {1: 6110, 2: 11370, 3: 27145, 4: 34174, 5: 21201}
    assert ml_ratings[Col.USER].n_unique() == 943
    assert ml_ratings[Col.ITEM].n_unique() == 1682


def test_movielens_maps_ratings_to_graded_events(
    ml_events: pl.DataFrame, ml_ratings: pl.DataFrame
) -> None:
    cfg = MovieLensConfig()
    assert ml_events.schema == pl.Schema(OUTPUT_SCHEMA)
    counts = dict(ml_events[Col.EVENT].value_counts().iter_rows())
    n_cart = int((ml_ratings["rating"] >= 4).sum())
    n_purchase = int((ml_ratings["rating"] == 5).sum())
    assert (n_cart, n_purchase) == (55_375, 21_201)
    assert counts == {
        IMPRESSION: 100_000 * (1 + cfg.negatives_per_rating),
        "click": 100_000,
        "cart": n_cart,
        "purchase": n_purchase,
    }
    assert ml_events[Col.POSITION].null_count() == ml_events.height
    assert ml_events[Col.PROPENSITY].null_count() == ml_events.height

    # Every click is the rated (user, item) at the rating's time, in session ml-<user>-<item>.
    clicks = ml_events.filter(pl.col(Col.EVENT) == "click")
    expected = ml_ratings.select(
        Col.USER, Col.ITEM, Col.TS, pl.format("ml-{}-{}", Col.USER, Col.ITEM).alias(Col.SESSION)
    )
    joined = clicks.join(expected, on=[Col.USER, Col.ITEM, Col.TS, Col.SESSION], how="inner")
    assert joined.height == 100_000


def test_movielens_negatives_are_never_items_the_user_had_rated_by_then(
    ml_events: pl.DataFrame, ml_ratings: pl.DataFrame
) -> None:
    negatives = ml_events.filter(pl.col(Col.SESSION).str.contains("-neg"))
    assert negatives.height == 100_000 * MovieLensConfig().negatives_per_rating
    assert negatives[Col.EVENT].unique().to_list() == [IMPRESSION]
    rated = ml_ratings.select(Col.USER, Col.ITEM, pl.col(Col.TS).alias("rated_at"))
    later = negatives.join(rated, on=[Col.USER, Col.ITEM], how="inner")
    assert (later["rated_at"] > later[Col.TS]).all()
    # The pool does not know the future: items the user rates later are sampled too (a pool of
    # never-rated items would keep every held-out item of the user out of its negatives).
    assert later.height > 1000
    # Sampled across the catalogue, not a handful of items.
    assert negatives[Col.ITEM].n_unique() > 1500


def test_movielens_is_deterministic_given_the_seed(
    wheel_cache: Path, ml_events: pl.DataFrame
) -> None:
    assert load_movielens(MovieLensConfig(), wheel_cache).equals(ml_events)
    other = load_movielens(MovieLensConfig(seed=1), wheel_cache)
    assert not other.equals(ml_events)


def test_movielens_without_negatives_logs_one_impression_per_rating(wheel_cache: Path) -> None:
    cfg = MovieLensConfig(negatives_per_rating=0, cart_min_rating=3, purchase_min_rating=4)
    events = load_movielens(cfg, wheel_cache)
    counts = dict(events[Col.EVENT].value_counts().iter_rows())
    assert counts == {IMPRESSION: 100_000, "click": 100_000, "cart": 82_520, "purchase": 55_375}


def test_movielens_config_rejects_purchase_below_cart() -> None:
    with pytest.raises(ValueError, match="purchase_min_rating"):
        MovieLensConfig(cart_min_rating=5, purchase_min_rating=4)
    with pytest.raises(ValueError, match="extra"):
        MovieLensConfig(negatives=3)  # type: ignore[call-arg]


def test_movielens_events_pass_the_contract(ml_events: pl.DataFrame) -> None:
    valid, quarantine, report = validate(ml_events, ML_NAMES)
    assert quarantine.height == 0 and report.n_bad == 0
    assert valid.height == ml_events.height


def test_movielens_features(wheel_cache: Path, ml_ratings: pl.DataFrame) -> None:
    users, items = load_movielens_features(wheel_cache)
    assert users.columns == [Col.USER, "age", "gender", "occupation"]
    assert users.height == 943 and users[Col.USER].n_unique() == 943
    assert set(users["gender"].unique()) == {"M", "F"}
    assert users["age"].null_count() == 0
    assert items.columns == [Col.ITEM, "release_year", "genres"]
    assert items.schema["genres"] == pl.List(pl.String)
    assert items.height == 1682
    assert set(items[Col.ITEM]) == set(ml_ratings[Col.ITEM])
    toy_story = items.filter(pl.col(Col.ITEM) == "1").row(0, named=True)
    assert toy_story["release_year"] == 1995
    assert toy_story["genres"] == ["Animation", "Children's", "Comedy"]
    assert items["release_year"].null_count() == 2  # "unkonwn" and "V" in the source file


# --- Open Bandit Dataset -----------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["bts", "random"])
def test_obd_rounds_become_impressions_and_clicks(wheel_cache: Path, policy: str) -> None:
    cfg = OBDConfig(policy=policy, campaign="all")
    rounds = read_rounds(cfg, wheel_cache)
    events = load_obd(cfg, wheel_cache)
    assert rounds.height == 10_000
    assert events.schema == pl.Schema(OUTPUT_SCHEMA)

    impressions = events.filter(pl.col(Col.EVENT) == IMPRESSION)
    clicks = events.filter(pl.col(Col.EVENT) == "click")
    assert impressions.height == 10_000
    assert clicks.height == int(rounds["click"].sum()) > 0
    assert events.height == impressions.height + clicks.height

    prop = impressions[Col.PROPENSITY]
    assert prop.null_count() == 0 and bool(((prop > 0) & (prop <= 1)).all())
    assert clicks[Col.PROPENSITY].null_count() == clicks.height
    assert sorted(events[Col.POSITION].unique()) == [0, 1, 2]
    shown = rounds.select(
        pl.format("obd-{}-{}", pl.lit(policy), "round").alias(Col.SESSION),
        (pl.col("position") - 1).alias("zero_based"),
    )
    joined = impressions.join(shown, on=Col.SESSION)
    assert joined.height == 10_000
    assert (joined[Col.POSITION] == joined["zero_based"]).all()
    if policy == "random":  # the uniform logger shows each of the 80 items with p = 1/80
        assert np.allclose(prop.to_numpy(), 1 / 80)
    # Every click sits in the session of a shown impression of the same item and position.
    key = [Col.USER, Col.ITEM, Col.TS, Col.SESSION, Col.POSITION]
    assert clicks.join(impressions, on=key, how="anti").height == 0
    assert impressions[Col.SESSION].n_unique() == 10_000
    assert 100 < impressions[Col.USER].n_unique() < 10_000  # user types, not people


def test_obd_events_pass_the_contract(wheel_cache: Path) -> None:
    events = load_obd(OBDConfig(), wheel_cache)
    valid, quarantine, report = validate(events, OBD_NAMES)
    assert quarantine.height == 0 and report.n_bad == 0
    assert valid.height == events.height


def test_obd_config_rejects_unknown_policy() -> None:
    with pytest.raises(ValueError, match="policy"):
        OBDConfig(policy="greedy")  # type: ignore[arg-type]


# --- tabular logs ------------------------------------------------------------------------------

RETAIL_ROWS = {
    "timestamp": [1433221332117, 1433224214164, 1433221999827, 1433222147345, 1433223000000],
    "visitorid": [257597, 992329, 111016, 111016, 483821],
    "event": ["view", "view", "addtocart", "transaction", "refund"],
    "itemid": [355908, 248676, 318965, 318965, 253185],
    "transactionid": [None, None, None, 4000, None],
}
RETAIL_MAPPING = {
    "columns": {
        Col.USER: "visitorid",
        Col.ITEM: "itemid",
        Col.EVENT: "event",
        Col.TS: "timestamp",
    },
    "ts_unit": "ms",
    "events": {"view": "impression", "addtocart": "cart", "transaction": "purchase"},
}


@pytest.fixture(params=["csv", "parquet"])
def retail_file(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    frame = pl.DataFrame(RETAIL_ROWS)
    path = tmp_path / f"events.{request.param}"
    if request.param == "csv":
        frame.write_csv(path)
    else:
        frame.write_parquet(path)
    return path


def test_tabular_retailrocket_mapping_validates_and_quarantines_unmapped_events(
    retail_file: Path,
) -> None:
    events = load_tabular(TabularConfig(path=str(retail_file), **RETAIL_MAPPING))
    assert events.columns == list(POLARS_SCHEMA)
    assert events.schema[Col.TS] == pl.Datetime("us", "UTC")
    assert events[Col.EVENT].to_list() == ["impression", "impression", "cart", "purchase", "refund"]
    assert events[Col.USER].to_list()[0] == "257597"

    valid, quarantine, report = validate(events, RETAIL_NAMES)
    assert valid.height == 4
    assert quarantine["reason"].to_list() == ["unknown_event"]
    assert quarantine[Col.EVENT].to_list() == ["refund"]
    assert report.bad_by_reason == {"unknown_event": 1}
    first = valid.filter(pl.col(Col.USER) == "257597")[Col.TS].item()
    assert first.isoformat() == "2015-06-02T05:02:12.117000+00:00"


def test_tabular_missing_mapped_column_names_it(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    pl.DataFrame(RETAIL_ROWS).drop("itemid").write_csv(path)
    with pytest.raises(ValueError, match=r"'itemid'.*available columns.*visitorid"):
        load_tabular(TabularConfig(path=str(path), **RETAIL_MAPPING))


def test_tabular_unparseable_timestamp_becomes_null_and_is_quarantined(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text(
        "user_id,item_id,event,ts,position\n"
        "u1,i1,click,1700000000,0\n"
        "u2,i2,click,not-a-time,1\n"
        "u3,i3,click,1700000001.5,x\n"
    )
    events = load_tabular(TabularConfig(path=str(path)))
    assert events[Col.TS].null_count() == 1
    assert events[Col.TS][2].isoformat() == "2023-11-14T22:13:21.500000+00:00"
    _, quarantine, report = validate(events, EventNames())
    assert report.bad_by_reason == {"bad_timestamp": 1, "bad_position": 1}
    assert report.n_valid == 1


def test_tabular_iso_timestamps_are_left_for_the_validator(tmp_path: Path) -> None:
    path = tmp_path / "log.parquet"
    pl.DataFrame(
        {"u": ["a"], "i": ["b"], "event": ["click"], "when": ["2024-01-02T03:04:05+00:00"]}
    ).write_parquet(path)
    columns = {Col.USER: "u", Col.ITEM: "i", Col.TS: "when"}
    cfg = TabularConfig(path=str(path), columns=columns, ts_unit="iso")
    events = load_tabular(cfg)
    assert events.schema[Col.TS] == pl.String
    valid, _, report = validate(events, EventNames())
    assert report.n_bad == 0
    assert valid[Col.TS].item().isoformat() == "2024-01-02T03:04:05+00:00"


def test_tabular_rejects_missing_path_and_unknown_contract_column(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs `path`"):
        load_tabular(TabularConfig())
    with pytest.raises(ValueError, match="not found"):
        load_tabular(TabularConfig(path=str(tmp_path / "absent.csv")))
    with pytest.raises(ValueError, match="unknown contract column"):
        TabularConfig(columns={"visitor": "visitorid"})
    with pytest.raises(ValueError, match="extra"):
        TabularConfig(paht="x")  # type: ignore[call-arg]
