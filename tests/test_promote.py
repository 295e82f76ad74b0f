"""Promotion: the gate arithmetic (no MLflow), then the stage against a real MLflow registry on a
copy of the tiny pipeline (tests/conftest.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml

from evaluation.calibration import binary_metrics
from evaluation.promotion import (
    Bound,
    FamilyGate,
    PromoteConfig,
    bound_check,
    champion_check,
    decide,
)
from serving.bundle import bundle_dir


def test_champion_comparison_with_tolerance():
    gate = FamilyGate(metric="test/ndcg_at_10/purchase", mode="max", tolerance=0.01)
    assert champion_check(gate, 0.295, 0.30).passed  # 0.295 ≥ 0.30 − 0.01
    worse = champion_check(gate, 0.285, 0.30)  # 0.285 < 0.29
    assert not worse.passed and worse.limit == pytest.approx(0.29)
    assert worse.reason == "test/ndcg_at_10/purchase 0.285 < champion 0.3 − 0.01"
    first = champion_check(gate, 0.1, None)
    assert first.passed and "no champion" in first.reason
    lower = FamilyGate(metric="test/log_loss", mode="min", tolerance=0.001)
    assert champion_check(lower, 0.0205, 0.020).passed  # 0.0205 ≤ 0.021
    assert not champion_check(lower, 0.0215, 0.020).passed
    demand_gain = FamilyGate(metric="m", tolerance=-0.05)  # must beat the champion by 0.05
    assert not champion_check(demand_gain, 0.34, 0.30).passed
    assert champion_check(demand_gain, 0.35, 0.30).passed
    assert not champion_check(gate, float("nan"), 0.3).passed


def test_the_default_ece_gate_refuses_a_model_that_always_says_zero():
    # Loves are rare (0.4 %): an always-0 model has ECE 0.004, which an absolute bound of 0.01
    # passed; relative to the love rate it scores exactly 1.
    rng = np.random.default_rng(0)
    p_true = np.clip(rng.lognormal(np.log(0.004), 1.0, 50_000), 0, 1)
    y = (rng.random(p_true.size) < p_true).astype(float)
    bound = Bound("plove_ece", "ece_relative", PromoteConfig().plove_max_relative_ece, "<=")
    always_zero = binary_metrics(np.zeros_like(y), y)
    assert always_zero["ece"] < 0.01
    assert always_zero["ece_relative"] == pytest.approx(1.0)
    assert not bound_check(bound, always_zero["ece_relative"]).passed
    assert bound_check(bound, binary_metrics(p_true, y)["ece_relative"]).passed


def test_bounds_and_decision():
    floor = Bound("index_recall", "test/recall_at_100", 0.9, ">=")
    ece = Bound("plove_ece", "test/plove_ece_relative", 0.5, "<=")
    assert bound_check(floor, 0.9).passed and not bound_check(floor, 0.899).passed
    assert bound_check(ece, 0.4).passed and not bound_check(ece, 0.6).passed
    assert bound_check(ece, None).reason == "test/plove_ece_relative is missing"
    gate = FamilyGate(metric="test/auc", tolerance=0.0)
    candidate = {"test/auc": 0.8, "test/recall_at_100": 0.95, "test/plove_ece_relative": 0.6}
    decision = decide("gnolr", gate, candidate, {"test/auc": 0.79}, [floor, ece])
    assert not decision.passed
    assert decision.failed == ["plove_ece: test/plove_ece_relative 0.6 > 0.5"]
    # A champion recorded without the gate's metric (it was changed since) compares nothing.
    assert decide("gnolr", gate, candidate, {"test/other": 1.0}, [floor]).passed


@pytest.fixture
def promote_dir(pipeline_dir, tmp_path, monkeypatch):
    """A private copy of the tiny pipeline's outputs and MLflow store, as the working directory."""
    for name in ("data", "params.yaml", "mlflow.db"):
        src = pipeline_dir / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    return tmp_path


def set_promote(directory, **overrides) -> None:
    params = yaml.safe_load((directory / "params.yaml").read_text())
    for key, value in overrides.items():
        section = params["promote"]
        *path, last = key.split(".")
        for part in path:
            section = section[part]
        section[last] = value
    (directory / "params.yaml").write_text(yaml.safe_dump(params))


def champion(name: str) -> str | None:
    try:
        return str(mlflow.MlflowClient().get_model_version_by_alias(name, "champion").version)
    except mlflow.exceptions.MlflowException:
        return None


def decisions(directory) -> dict[str, str]:
    records = json.loads((directory / "data/metrics/promote.json").read_text())
    return {family: record["decision"] for family, record in records.items()}


def champions() -> list[str | None]:
    return [champion(f"ladder-{f}") for f in ("gnolr", "relmf", "plove")]


def test_promote_moves_the_alias_only_when_the_gates_pass(promote_dir, capsys):
    from pipelines import promote

    client = mlflow.MlflowClient()
    # 1. P[Love] must have zero ECE: plove refused, and gnolr, whose bundle serves P[Love].
    set_promote(promote_dir, plove_max_relative_ece=0.0)
    promote.main()
    assert decisions(promote_dir) == {"gnolr": "refused", "relmf": "promoted", "plove": "refused"}
    assert champions() == [None, "1", None]
    records = json.loads((promote_dir / "data/metrics/promote.json").read_text())
    assert [c["name"] for c in records["gnolr"]["checks"] if not c["passed"]] == ["plove_ece"]
    out = capsys.readouterr().out
    assert "promote: ladder-gnolr v1 registered, REFUSED as @champion (no champion)" in out
    assert "plove_ece: test/plove_ece_relative" in out
    refused = client.get_model_version("ladder-plove", "1")
    assert refused.tags["decision"] == "refused" and "> 0" in refused.tags["reasons"]
    run = mlflow.get_run(records["plove"]["run_id"])
    assert run.data.tags["stage"] == "promote" and run.data.tags["model"] == "plove"
    assert run.data.tags["decision"] == "refused"
    logged = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/decision.json")
    assert logged["checks"] == records["plove"]["checks"]

    # 2. Default gates: gnolr and plove pass; relmf's champion already is this model.
    set_promote(promote_dir, plove_max_relative_ece=PromoteConfig().plove_max_relative_ece)
    promote.main()
    assert decisions(promote_dir) == {
        "gnolr": "promoted",
        "relmf": "unchanged",
        "plove": "promoted",
    }
    assert champions() == ["2", "1", "2"]
    assert len(client.search_model_versions("name = 'ladder-relmf'")) == 1
    out = capsys.readouterr().out
    assert "promote: ladder-gnolr v2 → @champion" in out
    assert "make ui" in out and "make serve" in out and "dvc exp show" in out

    # The champion bundle is served from the registry: bundle/ holds the current bundle version.
    local = Path(mlflow.artifacts.download_artifacts("models:/ladder-gnolr@champion"))
    served = sorted(p.name for p in bundle_dir(promote_dir / "data/serving").iterdir())
    assert sorted(p.name for p in (local / "artifacts/bundle").iterdir()) == served
    model = mlflow.pyfunc.load_model("models:/ladder-gnolr@champion")
    from models.gnolr.network import GNOLREmbeddings

    expected = GNOLREmbeddings.load(
        bundle_dir(promote_dir / "data/serving") / "embeddings.npz"
    ).probabilities(np.array([1, 2]), np.array([3, 4]))
    pairs = pd.DataFrame({"user_idx": [1, 2], "item_idx": [3, 4]})
    np.testing.assert_allclose(model.predict(pairs).to_numpy(), expected, rtol=1e-6)

    # 3. A new bundle (same metrics) that must beat the champion by 1.0: refused, v2 stays.
    manifest = bundle_dir(promote_dir / "data/serving") / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "note": "rebuilt"}))
    set_promote(promote_dir, **{"gnolr.tolerance": -1.0})
    promote.main()
    assert decisions(promote_dir)["gnolr"] == "refused" and champions()[0] == "2"
    record = json.loads((promote_dir / "data/metrics/promote.json").read_text())["gnolr"]
    assert [c["name"] for c in record["checks"] if not c["passed"]] == ["champion"]
    assert (
        " < champion " in record["checks"][0]["reason"] and "+ 1" in record["checks"][0]["reason"]
    )
    assert "REFUSED as @champion (stays v2)" in capsys.readouterr().out
    run = mlflow.get_run(record["run_id"])
    assert run.data.tags["champion_version"] == "2"
    assert "test/champion_ips_auc/purchase" in run.data.metrics

    set_promote(promote_dir, fail_on_refusal=True)
    with pytest.raises(SystemExit, match="gnolr refused"):
        promote.main()


def test_the_default_gate_is_not_fooled_by_the_biased_observed_metric(promote_dir):
    """On the simulator, popularity wins observed NDCG (the logger showed popular items, so only they
    could be bought) but loses on the true purchase probabilities. A candidate bundle ranking like
    popularity must not replace the champion under the default (IPS-weighted) gate, whereas a gate
    on observed NDCG would take it."""
    from pipelines import promote

    metrics = json.loads((promote_dir / "data/metrics/evaluate.json").read_text())
    gnolr, pop = metrics["gnolr"], metrics["popularity"]
    # observed click NDCG sees popularity as far better (on this tiny world the per-head GNOLR
    # can win observed purchase NDCG, so the observed gate below watches clicks) …
    assert pop["ndcg_at_10/click"] > 2 * gnolr["ndcg_at_10/click"]
    for level in ("click", "cart", "purchase"):
        # … while it is worse on the truth at every level, and the IPS-weighted AUC sees that
        assert pop[f"gt_ndcg_at_10/{level}"] < gnolr[f"gt_ndcg_at_10/{level}"]
        assert pop[f"ips_auc/{level}"] < gnolr[f"ips_auc/{level}"]
    promote.main()
    assert champions()[0] == "1"

    # The experiment: a rebuilt bundle whose evaluated ranking is the popularity ranking.
    (promote_dir / "data/metrics/evaluate.json").write_text(json.dumps({**metrics, "gnolr": pop}))
    manifest = bundle_dir(promote_dir / "data/serving") / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "note": "experiment"}))
    promote.main()
    record = json.loads((promote_dir / "data/metrics/promote.json").read_text())["gnolr"]
    assert record["decision"] == "refused" and champions()[0] == "1"
    assert "test/ips_auc/purchase" in record["checks"][0]["reason"]

    set_promote(promote_dir, **{"gnolr.metric": "test/ndcg_at_10/click"})
    promote.main()
    assert decisions(promote_dir)["gnolr"] == "promoted" and champions()[0] == "3"
