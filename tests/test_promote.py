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
    Check,
    Decision,
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


def test_champion_reasons_limits_and_equality_at_the_limit():
    up = FamilyGate(metric="m", mode="max", tolerance=0.25)
    at = champion_check(up, 0.25, 0.5)  # exactly champion − t passes
    assert at == Check("champion", True, "m 0.25 ≥ champion 0.5 − 0.25", "m", 0.25, 0.25)
    below = champion_check(up, 0.125, 0.5)
    assert below == Check("champion", False, "m 0.125 < champion 0.5 − 0.25", "m", 0.125, 0.25)
    down = FamilyGate(metric="loss", mode="min", tolerance=0.25)
    at = champion_check(down, 0.75, 0.5)  # exactly champion + t passes
    assert at == Check("champion", True, "loss 0.75 ≤ champion 0.5 + 0.25", "loss", 0.75, 0.75)
    above = champion_check(down, 1.0, 0.5)
    assert above == Check("champion", False, "loss 1 > champion 0.5 + 0.25", "loss", 1.0, 0.75)
    gain = FamilyGate(metric="m", tolerance=-0.25)  # max mode: must beat the champion by 0.25
    assert champion_check(gain, 0.5, 0.5) == Check(
        "champion", False, "m 0.5 < champion 0.5 + 0.25", "m", 0.5, 0.75
    )
    less = FamilyGate(metric="loss", mode="min", tolerance=-0.25)  # must be 0.25 lower
    assert champion_check(less, 0.25, 0.5) == Check(
        "champion", True, "loss 0.25 ≤ champion 0.5 − 0.25", "loss", 0.25, 0.25
    )
    assert not champion_check(less, 0.375, 0.5).passed


def test_a_zero_tolerance_reads_plus_zero_not_plus_minus_zero():
    assert champion_check(FamilyGate(metric="m"), 0.5, 0.5).reason == "m 0.5 ≥ champion 0.5 + 0"
    down = FamilyGate(metric="m", mode="min")
    assert champion_check(down, 0.5, 0.5).reason == "m 0.5 ≤ champion 0.5 + 0"


def test_champion_check_without_a_candidate_or_a_champion():
    gate = FamilyGate(metric="m", tolerance=0.5)
    for value in (None, float("nan"), float("inf"), float("-inf")):
        got = champion_check(gate, value, 0.5)
        assert got.value is value
        assert (got.name, got.passed, got.reason, got.metric, got.limit) == (
            "champion",
            False,
            "candidate has no finite m",
            "m",
            None,
        )
    assert not champion_check(gate, None, None).passed
    assert champion_check(gate, 0.125, None) == Check(
        "champion", True, "no champion with m yet: m = 0.125", "m", 0.125, None
    )


def test_bound_reasons_and_equality_at_the_limit():
    floor = Bound("recall", "r@100", 0.5, ">=")
    assert bound_check(floor, 0.5) == Check(
        "recall", True, "recall: r@100 0.5 ≥ 0.5", "r@100", 0.5, 0.5
    )
    assert bound_check(floor, 0.25) == Check(
        "recall", False, "recall: r@100 0.25 < 0.5", "r@100", 0.25, 0.5
    )
    cap = Bound("ece", "ece_rel", 0.5, "<=")
    assert bound_check(cap, 0.5) == Check(
        "ece", True, "ece: ece_rel 0.5 ≤ 0.5", "ece_rel", 0.5, 0.5
    )
    assert bound_check(cap, 0.75) == Check(
        "ece", False, "ece: ece_rel 0.75 > 0.5", "ece_rel", 0.75, 0.5
    )
    for value in (None, float("nan"), float("inf")):
        got = bound_check(cap, value)
        assert got.value is value
        assert (got.name, got.passed, got.reason, got.metric, got.limit) == (
            "ece",
            False,
            "ece_rel is missing",
            "ece_rel",
            0.5,
        )
    assert not bound_check(floor, float("-inf")).passed


def test_decision_lists_the_champion_check_then_each_bound_and_serialises():
    gate = FamilyGate(metric="m", tolerance=0.0)
    floor = Bound("recall", "r", 0.5, ">=")
    cap = Bound("ece", "e", 0.5, "<=")
    candidate = {"m": 0.5, "r": 0.25, "e": 0.25}
    d = decide("relmf", gate, candidate, {"m": 0.75}, [floor, cap])
    assert isinstance(d, Decision) and d.family == "relmf"
    assert [c.name for c in d.checks] == ["champion", "recall", "ece"]
    assert d.reasons == ["m 0.5 < champion 0.75 + 0", "recall: r 0.25 < 0.5", "ece: e 0.25 ≤ 0.5"]
    assert d.failed == ["m 0.5 < champion 0.75 + 0", "recall: r 0.25 < 0.5"]
    assert not d.passed
    assert d.to_dict() == {
        "family": "relmf",
        "passed": False,
        "checks": [
            {
                "name": "champion",
                "passed": False,
                "reason": "m 0.5 < champion 0.75 + 0",
                "metric": "m",
                "value": 0.5,
                "limit": 0.75,
            },
            {
                "name": "recall",
                "passed": False,
                "reason": "recall: r 0.25 < 0.5",
                "metric": "r",
                "value": 0.25,
                "limit": 0.5,
            },
            {
                "name": "ece",
                "passed": True,
                "reason": "ece: e 0.25 ≤ 0.5",
                "metric": "e",
                "value": 0.25,
                "limit": 0.5,
            },
        ],
    }
    first = decide("plove", gate, {"m": 0.5}, None)  # no champion, no bounds
    assert first.passed and first.to_dict() == {
        "family": "plove",
        "passed": True,
        "checks": [
            {
                "name": "champion",
                "passed": True,
                "reason": "no champion with m yet: m = 0.5",
                "metric": "m",
                "value": 0.5,
                "limit": None,
            }
        ],
    }
    assert decide("plove", gate, {"m": 1.0}, {"m": 0.5}).reasons == ["m 1 ≥ champion 0.5 + 0"]
    missing = decide("plove", gate, {}, {"m": 0.5}, [cap])
    assert missing.failed == ["candidate has no finite m", "e is missing"]


def test_gates_resolve_the_deepest_level_and_config_defaults():
    gate = FamilyGate(metric="test/ips_auc/{deepest}", mode="min", tolerance=0.25)
    resolved = gate.resolved("purchase")
    assert resolved == FamilyGate(metric="test/ips_auc/purchase", mode="min", tolerance=0.25)
    assert gate.metric == "test/ips_auc/{deepest}"  # the original is unchanged
    assert FamilyGate(metric="test/log_loss").resolved("x").metric == "test/log_loss"
    cfg = PromoteConfig()
    assert cfg.gate("gnolr", "purchase") == FamilyGate(
        metric="test/ips_auc/purchase", mode="max", tolerance=0.002
    )
    assert cfg.gate("relmf", "cart") == FamilyGate(metric="test/ips_dcg_at_10", tolerance=0.005)
    assert cfg.gate("plove", "cart") == FamilyGate(
        metric="test/log_loss", mode="min", tolerance=0.0005
    )
    custom = PromoteConfig(relmf={"metric": "val/{deepest}/x", "tolerance": -0.5})
    assert custom.gate("relmf", "love") == FamilyGate(metric="val/love/x", tolerance=-0.5)
    with pytest.raises(AttributeError):
        cfg.gate("nope", "purchase")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"index_recall_floor": 1.5},
        {"index_recall_floor": -0.1},
        {"plove_max_relative_ece": -0.5},
        {"gnolr": {"metric": "m", "mode": "mid"}},
        {"gnolr": {"metric": "m", "tolerence": 0.1}},
        {"unknown": 1},
    ],
)
def test_bad_promote_config_is_rejected(kwargs):
    with pytest.raises(ValueError):
        PromoteConfig(**kwargs)


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
