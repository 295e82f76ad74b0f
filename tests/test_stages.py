"""Stage modules run without DVC: outputs, reports, MLflow records and failure modes."""

import json
import os

import mlflow
import polars as pl
import pytest

from tests.conftest import TINY_PARAMS, write_params


def read_json(path):
    return json.loads(path.read_text())


def test_ingest_reports_and_quarantines_bad_rows(pipeline_dir):
    report = read_json(pipeline_dir / "data/metrics/ingest.json")
    quarantine = pl.read_parquet(pipeline_dir / "data/ingest/quarantine.parquet")
    assert report["n_quarantined"] == quarantine.height > 0
    assert report["n_valid"] + report["n_quarantined"] == report["n_rows"]
    assert sum(report["quarantined_by_reason"].values()) == quarantine.height
    assert set(quarantine["reason"].unique()) <= {
        "null_user_id",
        "unknown_event",
        "bad_timestamp",
        "propensity_out_of_range",
    }
    events = pl.read_parquet(pipeline_dir / "data/ingest/events.parquet")
    assert events.height == report["n_valid"]


def test_features_meta_matches_the_splits(pipeline_dir):
    meta = read_json(pipeline_dir / "data/features/meta.json")
    for split, rows in meta["rows"].items():
        assert pl.read_parquet(pipeline_dir / f"data/features/{split}.parquet").height == rows
    rates = [meta["base_rates"][name] for name in meta["levels"]]
    assert rates == sorted(rates, reverse=True) and 0.02 < rates[0] < 0.07


def test_gnolr_beats_popularity_on_the_deepest_level(pipeline_dir):
    m = read_json(pipeline_dir / "data/metrics/evaluate.json")
    gnolr, pop = m["gnolr"], m["popularity"]
    assert gnolr["auc/purchase"] > pop["auc/purchase"] + 0.03
    # Against the simulator's true purchase probabilities: the honest full-catalogue comparison.
    assert gnolr["gt_ndcg_at_10/purchase"] > pop["gt_ndcg_at_10/purchase"]


def test_relmf_beats_popularity_on_the_debiased_auc_of_its_level(pipeline_dir):
    # Rel-MF learns clicks, debiased: judged by the IPS-weighted click AUC it beats popularity
    # (measured 0.621 vs 0.599). On the simulator's truth it does not (0.207 vs 0.241 click
    # NDCG@10): a known gap, not hidden here.
    m = read_json(pipeline_dir / "data/metrics/evaluate.json")
    assert m["relmf"]["ips_auc/click"] > m["popularity"]["ips_auc/click"] + 0.01
    assert m["relmf"]["auc/click"] > 0.58


def test_plove_beats_the_base_rate_and_is_calibrated(pipeline_dir):
    # Measured: AUC 0.918, normalised entropy 0.58 (1 = always the base rate), ECE 0.28 × rate.
    test = read_json(pipeline_dir / "data/metrics/plove.json")["test"]["calibrated"]["all"]
    assert test["auc"] > 0.85
    assert test["normalized_entropy"] < 0.75
    assert test["ece_relative"] < 0.5


def test_training_run_is_recorded_in_mlflow(pipeline_dir):
    info = read_json(pipeline_dir / "data/models/gnolr/info.json")
    mlflow.set_tracking_uri(f"sqlite:///{pipeline_dir / 'mlflow.db'}")
    run = mlflow.get_run(info["run_id"])
    assert run.data.params["gnolr.dim"] == "16" and run.data.params["source.kind"] == "synthetic"
    assert run.data.tags["stage"] == "train_gnolr"
    assert "valid/auc_product" in run.data.metrics and "test/auc/purchase" in run.data.metrics
    assert run.inputs.dataset_inputs[0].dataset.digest == info["dataset_digest"]
    history = mlflow.MlflowClient().get_metric_history(info["run_id"], "valid/auc/purchase")
    assert len(history) == info["epochs_run"]
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(info["run_id"], "gnolr")}
    assert "gnolr/embeddings.npz" in artifacts


def test_ingest_fails_past_the_bad_row_threshold_and_keeps_the_rows(tmp_path, monkeypatch):
    from features.contract import ContractError
    from pipelines import ingest

    params = json.loads(json.dumps(TINY_PARAMS))
    params["source"]["synthetic"].update(n_impressions=5_000, bad_row_fraction=0.05)
    params["contract"] = {"max_bad_fraction": 0.01}
    write_params(tmp_path, params)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        ContractError, match=r"above max_bad_fraction=0.01.*data/rejected/quarantine.parquet"
    ):
        ingest.main()
    assert not (tmp_path / "data/ingest").exists()
    rejected = pl.read_parquet(tmp_path / "data/rejected/quarantine.parquet")
    assert rejected.height > 0.04 * 5_000 and rejected["reason"].null_count() == 0


def test_a_bad_parameter_fails_fast_naming_the_key(tmp_path):
    from pipelines.params import ParamsError, load_params

    write_params(tmp_path, {"gnolr": {"dim": -1}, "source": {"kind": "nope"}})
    with pytest.raises(
        ParamsError, match=r"source\.kind: .*gnolr\.dim: Input should be greater than"
    ):
        load_params(tmp_path / "params.yaml")
    write_params(tmp_path, {"gnolr": {"dimm": 3}})
    with pytest.raises(ParamsError, match=r"gnolr\.dimm: Extra inputs"):
        load_params(tmp_path / "params.yaml")


def test_repository_params_are_valid():
    from pipelines.params import load_params

    params = load_params(os.path.join(os.path.dirname(__file__), "..", "params.yaml"))
    assert params.source.kind == "synthetic"
