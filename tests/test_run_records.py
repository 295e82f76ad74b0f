"""Run records of the tiny pipeline (tests/conftest.py): one vocabulary of params, metrics, tags,
inputs, plots and models across stages, in a temporary MLflow store."""

from __future__ import annotations

import json
import re

import mlflow
import numpy as np
import pandas as pd
import pytest

from pipelines.outputs import file_digest
from pipelines.tracking import metric_name, pipeline_run_id, split_metrics

SCHEME = re.compile(r"^(train|valid|test|data)/[A-Za-z0-9_.]+(/[A-Za-z0-9_.-]+)?$")
TAGS = (
    "stage",
    "model",
    "pipeline_run",
    "git_commit",
    "params_digest",
    "data_digest",
    "dvc_exp",
    "source",
)


@pytest.fixture(scope="module")
def runs(pipeline_dir):
    mlflow.set_tracking_uri(f"sqlite:///{pipeline_dir / 'mlflow.db'}")
    found = mlflow.search_runs(experiment_names=["ladder"], output_format="list")
    return {(r.data.tags["stage"], r.data.tags["model"]): r for r in found}


def read(pipeline_dir, path):
    return json.loads((pipeline_dir / path).read_text())


def test_metric_names_follow_the_scheme():
    assert metric_name("test", "ndcg@10", "purchase") == "test/ndcg_at_10/purchase"
    assert metric_name("valid", "auc_product") == "valid/auc_product"
    with pytest.raises(ValueError, match="does not follow"):
        metric_name("holdout", "auc")
    got = split_metrics("test", {"auc/click": 0.7, "qps": 10, "kind": "flat", "x": float("nan")})
    assert got == {"test/auc/click": 0.7, "test/qps": 10.0}


def test_every_stage_run_carries_the_shared_tags_and_scheme_metrics(runs):
    assert set(runs) == {
        ("ingest", "data"),
        ("features", "data"),
        ("train_gnolr", "gnolr"),
        ("train_relmf", "relmf"),
        ("train_plove", "plove"),
        ("evaluate", "gnolr"),
        ("evaluate", "popularity"),
        ("evaluate", "relmf"),
        ("index", "gnolr"),
    }
    for run in runs.values():
        assert set(TAGS) <= set(run.data.tags), run.info.run_name
        bad = [m for m in run.data.metrics if not SCHEME.match(m)]
        assert not bad, f"{run.info.run_name}: {bad}"
        assert (
            run.data.params["gnolr.dim"] == "16" and run.data.params["promote.alias"] == "champion"
        )
        assert run.inputs.dataset_inputs, f"{run.info.run_name} logged no input"
    # One dvc repro (here: one fixture run on the same inputs) → one pipeline_run.
    assert len({r.data.tags["pipeline_run"] for r in runs.values()}) == 1


def test_evaluate_runs_hold_each_models_test_metrics(runs, pipeline_dir):
    results = read(pipeline_dir, "data/metrics/evaluate.json")
    for model in ("gnolr", "popularity", "relmf"):
        metrics = runs["evaluate", model].data.metrics
        assert metrics["test/ndcg_at_10/purchase"] == pytest.approx(
            results[model]["ndcg_at_10/purchase"]
        )
        assert metrics["test/gt_ndcg_at_20/click"] == pytest.approx(
            results[model]["gt_ndcg_at_20/click"]
        )
    gnolr_info = read(pipeline_dir, "data/models/gnolr/info.json")
    assert runs["evaluate", "gnolr"].data.tags["train_run"] == gnolr_info["run_id"]
    # The training run has them too, next to its parameters.
    assert runs["train_gnolr", "gnolr"].data.metrics["test/auc/purchase"] == pytest.approx(
        results["gnolr"]["auc/purchase"]
    )


def test_plove_index_and_relmf_runs(runs, pipeline_dir):
    client = mlflow.MlflowClient()
    plove = runs["train_plove", "plove"]
    calibrated = read(pipeline_dir, "data/metrics/plove.json")["test"]["calibrated"]["all"]
    assert plove.data.metrics["test/ece"] == pytest.approx(calibrated["ece"])
    assert plove.data.metrics["test/log_loss"] == pytest.approx(calibrated["log_loss"])
    assert "test/raw_ece" in plove.data.metrics and "valid/love_log_loss" in plove.data.metrics
    plots = {a.path for a in client.list_artifacts(plove.info.run_id, "plots")}
    assert "plots/plove_reliability.csv" in plots
    local = (pipeline_dir / "data/metrics/plove_reliability.csv").read_text()
    logged = mlflow.artifacts.load_text(f"{plove.info.artifact_uri}/plots/plove_reliability.csv")
    assert logged == local

    relmf = runs["train_relmf", "relmf"]
    assert {a.path for a in client.list_artifacts(relmf.info.run_id, "plots")} == {
        "plots/relmf_propensity.csv"
    }
    assert "valid/best_ips_dcg_at_5" in relmf.data.metrics
    assert "train/propensity_fraction_below_clip" in relmf.data.metrics

    index = runs["index", "gnolr"]
    report = read(pipeline_dir, "data/metrics/index.json")
    assert index.data.metrics["test/recall_at_100"] == pytest.approx(report["recall_at_100"])
    assert index.data.metrics["test/qps"] == pytest.approx(report["qps"])
    assert index.data.tags["index_kind"] == report["kind"]


def test_training_runs_log_lightning_epochs_under_the_scheme(runs):
    client = mlflow.MlflowClient()
    gnolr = runs["train_gnolr", "gnolr"]
    assert "epoch" not in gnolr.data.metrics
    epochs = client.get_metric_history(gnolr.info.run_id, "train/epoch")
    assert [m.value for m in epochs][-1] == gnolr.data.metrics["train/epoch"] >= 1


def test_logged_models_score_pairs_like_the_saved_arrays(pipeline_dir):
    """Each family's pyfunc, loaded back from MLflow, reproduces its arrays on a few pairs."""
    from models.gnolr.network import GNOLREmbeddings
    from models.plove.network import PLoveScorer
    from models.relmf.network import MFEmbeddings

    mlflow.set_tracking_uri(f"sqlite:///{pipeline_dir / 'mlflow.db'}")
    pairs = pd.DataFrame({"user_idx": [0, 5, 17], "item_idx": [3, 0, 42]})
    u, i = pairs["user_idx"].to_numpy(), pairs["item_idx"].to_numpy()
    models = pipeline_dir / "data/models"

    gnolr = mlflow.pyfunc.load_model(read(pipeline_dir, "data/models/gnolr/info.json")["model_uri"])
    assert gnolr.metadata.get_input_schema().input_names() == ["user_idx", "item_idx"]
    out = gnolr.predict(pairs)
    assert list(out.columns) == ["p_click", "p_cart", "p_purchase"]
    expected = GNOLREmbeddings.load(models / "gnolr/embeddings.npz").probabilities(u, i)
    np.testing.assert_allclose(out.to_numpy(), expected, rtol=1e-6)
    assert gnolr.metadata.saved_input_example_info is not None

    relmf = mlflow.pyfunc.load_model(read(pipeline_dir, "data/models/relmf/info.json")["model_uri"])
    expected = MFEmbeddings.load(models / "relmf/embeddings.npz").probabilities(u, i)
    np.testing.assert_allclose(relmf.predict(pairs)["p_relevance"], expected, rtol=1e-6)

    plove = mlflow.pyfunc.load_model(read(pipeline_dir, "data/models/plove/info.json")["model_uri"])
    positions = np.array([0, 2, 7])
    expected = PLoveScorer.load(models / "plove").predict(u, i, positions)
    got = plove.predict(pairs.assign(position=positions))["p_love"]
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_pipeline_run_changes_with_params_and_data_not_with_outputs(tmp_path, monkeypatch):
    # A queued `dvc exp run` works in a temporary copy while DVC_ROOT names the parent repository:
    # the id must come from the working copy's params and data.
    parent = tmp_path / "parent"
    parent.mkdir()
    (parent / "params.yaml").write_text("seed: 5\n")
    monkeypatch.setenv("DVC_ROOT", str(parent))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    tmp_path = work
    (tmp_path / "params.yaml").write_text("seed: 0\n")
    first, parts = pipeline_run_id()
    assert parts["params_digest"] == file_digest(work / "params.yaml")
    assert parts["data_digest"] == "" and len(first) == 12
    (tmp_path / "data/metrics").mkdir(parents=True)
    (tmp_path / "data/metrics/evaluate.json").write_text("{}")  # a stage output: no change
    assert pipeline_run_id()[0] == first
    (tmp_path / "data/ingest").mkdir()
    (tmp_path / "data/ingest/events.parquet").write_bytes(b"events")
    with_data = pipeline_run_id()[0]
    (tmp_path / "params.yaml").write_text("seed: 1\n")
    assert len({first, with_data, pipeline_run_id()[0]}) == 3


def test_features_prints_numbered_steps(capsys):
    from pipelines.features import Steps

    step = Steps(2)
    step("one")
    step("two")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("features [1/2] one (") and lines[1].startswith("features [2/2] two")
