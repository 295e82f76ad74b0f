"""``scale.data.engine: ray`` gives what the embedded Polars path gives: same rows, same quarantine.

One local Ray cluster (2 CPUs, no dashboard) serves the whole module, started the way the stages
start it (:func:`features.ray_engine.cluster`); each test compares the Ray path's outputs with the
embedded path's on the same small, deliberately messy log.
"""

from __future__ import annotations

import json

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from features.contract import Col, EventNames, validate
from features.engine import DataEngineConfig, user_bucket
from features.sources.synthetic import SyntheticConfig, simulate
from features.sources.tabular import TabularConfig, load_tabular
from features.split import SplitConfig
from features.training_sets import FeaturesConfig, build_training_sets
from pipelines.params import ParamsError, load_params
from tests.conftest import TINY_PARAMS, write_params

NAMES = EventNames()
ENGINE = DataEngineConfig(engine="ray", num_cpus=2, buckets=4)


@pytest.fixture(scope="module")
def ray_cluster():
    pytest.importorskip("ray.data", reason="the `scale` extra (ray[data]) is not installed")
    from features import ray_engine

    with ray_engine.cluster(ENGINE):
        yield ray_engine


@pytest.fixture(scope="module")
def messy_log() -> pl.DataFrame:
    """A small synthetic log with every kind of bad row, exact duplicates, a duplicate whose user
    id is padded with spaces (same cleaned key: must land in the same bucket), a duplicate with a
    different propensity (the first in log order is kept) and negative positions."""
    raw, _ = simulate(
        SyntheticConfig(
            n_users=120, n_items=80, n_impressions=4_000, bad_row_fraction=0.03, seed=7
        ),
        progress=False,
    )
    raw = raw.with_columns(pl.col(Col.EVENT).cast(pl.String))
    copies = raw.slice(100, 40)
    padded = raw.slice(300, 10).with_columns((" " + pl.col(Col.USER) + "  ").alias(Col.USER))
    other_propensity = raw.slice(500, 10).with_columns(pl.lit(0.5).alias(Col.PROPENSITY))
    bad_position = raw.slice(700, 5).with_columns(
        pl.lit(-1).cast(raw.schema[Col.POSITION]).alias(Col.POSITION)
    )
    return pl.concat([raw, copies, padded, other_propensity, bad_position])


def _sorted(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort(pl.all(), nulls_last=True)


def _assert_same_ingest(out, valid, quarantine, report, summary) -> None:
    assert summary.report == report
    assert set(summary.report.bad_by_reason) >= {
        "bad_timestamp",
        "null_user_id",
        "propensity_out_of_range",
        "unknown_event",
        "duplicate",
        "bad_position",
    }
    assert_frame_equal(_sorted(pl.read_parquet(out / "events.parquet")), _sorted(valid))
    ray_quarantine = pl.read_parquet(out / "quarantine.parquet")
    assert_frame_equal(_sorted(ray_quarantine), _sorted(quarantine))
    assert len(list((out / "events.parquet").glob("part-*.parquet"))) == ENGINE.buckets
    assert summary.n_users == valid[Col.USER].n_unique()
    assert summary.n_items == valid[Col.ITEM].n_unique()
    counts = valid.group_by(pl.col(Col.EVENT).cast(pl.String)).len()
    assert summary.events_by_type == dict(zip(counts[Col.EVENT], counts["len"], strict=True))


def _assert_same_features(ray_cluster, events_dir, valid, cfg: FeaturesConfig, out) -> None:
    users, items, meta = ray_cluster.build_training_sets(events_dir, NAMES, cfg, out)
    sets = build_training_sets(valid.lazy(), NAMES, cfg)
    assert_frame_equal(users, sets.users)
    assert_frame_equal(items, sets.items)
    assert json.dumps(meta, sort_keys=True) == json.dumps(sets.meta, sort_keys=True)
    for split, frame in sets.splits.items():
        assert frame.height > 0
        assert_frame_equal(_sorted(pl.read_parquet(out / f"{split}.parquet")), _sorted(frame))
    assert not (out / "_scratch").exists()


def test_frame_source_ingest_and_temporal_features_equal_the_embedded_path(
    ray_cluster, messy_log, tmp_path
):
    valid, quarantine, report = validate(messy_log, NAMES)
    raw = ray_cluster.frame_input(messy_log, ENGINE)
    summary = ray_cluster.ingest(raw, NAMES, ENGINE, tmp_path / "ingest")
    _assert_same_ingest(tmp_path / "ingest", valid, quarantine, report, summary)
    # Each bucket part holds whole users: the bucket of every row is its part's.
    part = pl.read_parquet(tmp_path / "ingest/events.parquet/part-00002.parquet")
    assert part.height > 0
    assert (part.select(user_bucket(ENGINE.buckets))[Col.USER] == 2).all()
    cfg = FeaturesConfig(split=SplitConfig(method="temporal"))
    _assert_same_features(
        ray_cluster, tmp_path / "ingest/events.parquet", valid, cfg, tmp_path / "features"
    )


def test_parquet_source_read_in_chunks_and_stratified_features_equal_the_embedded_path(
    ray_cluster, messy_log, tmp_path, monkeypatch
):
    # Three files with small row groups, read ~1,000 rows a task: the duplicates and their
    # originals sit in different tasks, and the first copy in log order must still win.
    monkeypatch.setattr(ray_cluster, "CHUNK_ROWS", 1_000)
    source = tmp_path / "log"
    source.mkdir()
    third = messy_log.height // 3 + 1
    for i in range(3):
        part = messy_log.slice(i * third, third)
        part.write_parquet(source / f"day-{i}.parquet", row_group_size=500)
    tabular = TabularConfig(path=str(source), format="parquet")
    embedded_raw = load_tabular(tabular)
    valid, quarantine, report = validate(embedded_raw, NAMES)
    raw = ray_cluster.parquet_input(tabular, None, ENGINE)
    summary = ray_cluster.ingest(raw, NAMES, ENGINE, tmp_path / "ingest")
    _assert_same_ingest(tmp_path / "ingest", valid, quarantine, report, summary)
    cfg = FeaturesConfig(split=SplitConfig(method="stratified_random"))
    _assert_same_features(
        ray_cluster, tmp_path / "ingest/events.parquet", valid, cfg, tmp_path / "features"
    )


def test_ingest_stage_on_ray_fails_past_the_bad_row_threshold_and_keeps_the_rows(
    ray_cluster, tmp_path, monkeypatch
):
    from features.contract import ContractError
    from pipelines import ingest

    params = json.loads(json.dumps(TINY_PARAMS))
    params["source"]["synthetic"].update(n_impressions=3_000, bad_row_fraction=0.05)
    params["contract"] = {"max_bad_fraction": 0.01}
    params["scale"] = {"data": {"engine": "ray", "buckets": 3}}
    write_params(tmp_path, params)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ContractError, match=r"above max_bad_fraction=0.01"):
        ingest.main()
    assert not (tmp_path / "data/ingest").exists()
    rejected = pl.read_parquet(tmp_path / "data/rejected/quarantine.parquet")
    assert rejected.height > 0.04 * 3_000 and rejected["reason"].null_count() == 0


def test_scale_params_default_to_the_embedded_engine_and_are_validated(tmp_path):
    write_params(tmp_path, {})
    assert load_params(tmp_path / "params.yaml").scale.data.engine == "polars"
    write_params(tmp_path, {"scale": {"data": {"engine": "spark"}}})
    with pytest.raises(ParamsError, match=r"scale\.data\.engine"):
        load_params(tmp_path / "params.yaml")
    write_params(tmp_path, {"scale": {"data": {"engine": "ray", "buckets": 0}}})
    with pytest.raises(ParamsError, match=r"scale\.data\.buckets"):
        load_params(tmp_path / "params.yaml")
    write_params(tmp_path, {"scale": {"data": {"address": "auto", "num_cpus": 2}}})
    with pytest.raises(ParamsError, match=r"num_cpus sizes the local cluster"):
        load_params(tmp_path / "params.yaml")


def test_ray_missing_names_the_extra(monkeypatch):
    import sys

    from features import ray_engine

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(ray_engine.RayUnavailableError, match=r"pip install -e '\.\[scale\]'"):
        ray_engine.frame_input(pl.DataFrame({"user_id": ["u"]}), ENGINE)


def test_user_bucket_ignores_padding_and_id_type():
    frame = pl.DataFrame({Col.USER: ["u1", " u1 ", "u2"]})
    buckets = frame.select(user_bucket(16))[Col.USER].to_list()
    assert buckets[0] == buckets[1] and all(0 <= b < 16 for b in buckets)
    ints = pl.DataFrame({Col.USER: [7, 7]}).select(user_bucket(16))[Col.USER]
    strs = pl.DataFrame({Col.USER: ["7", "7"]}).select(user_bucket(16))[Col.USER]
    assert ints.to_list() == strs.to_list()


def test_ingest_and_features_stages_on_ray_write_what_the_embedded_stages_write(
    ray_cluster, tmp_path, monkeypatch
):
    from pipelines import features, ingest

    params = json.loads(json.dumps(TINY_PARAMS))
    params["source"]["synthetic"].update(n_impressions=3_000, bad_row_fraction=0.005)
    outputs = {}
    for engine in ("polars", "ray"):
        directory = tmp_path / engine
        directory.mkdir()
        write_params(directory, params | {"scale": {"data": {"engine": engine, "buckets": 3}}})
        monkeypatch.chdir(directory)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{directory / 'mlflow.db'}")
        ingest.main()
        features.main()
        outputs[engine] = {
            "metrics": [
                json.loads((directory / f"data/metrics/{s}.json").read_text())
                for s in ("ingest", "features")
            ],
            "meta": json.loads((directory / "data/features/meta.json").read_text()),
            "tables": {
                name: _sorted(pl.read_parquet(directory / name))
                for name in (
                    "data/ingest/events.parquet",
                    "data/ingest/quarantine.parquet",
                    "data/features/users.parquet",
                    "data/features/items.parquet",
                    "data/features/train.parquet",
                    "data/features/test.parquet",
                )
            },
        }
    polars_out, ray_out = outputs["polars"], outputs["ray"]
    assert ray_out["metrics"] == polars_out["metrics"]
    assert ray_out["meta"] == polars_out["meta"]
    for name, frame in polars_out["tables"].items():
        assert_frame_equal(ray_out["tables"][name], frame)
    assert (tmp_path / "ray/data/features/train.parquet").is_dir()
