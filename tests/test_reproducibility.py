"""The committed figures reproduce: the simulated shop and the P[Love] evaluator give the same bytes
on every run, whatever the number of BLAS threads (one thread and several used to round the logged
propensities differently, which moved every propensity-weighted figure in the last digits)."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from threadpoolctl import threadpool_limits

from features.sources.synthetic import SyntheticConfig, simulate

OUTPUTS = ("evaluator.json", "evaluator.csv", "evaluator_ope.csv")


def test_the_simulated_log_is_the_same_with_one_or_two_blas_threads():
    cfg = SyntheticConfig(n_users=300, n_items=400, n_impressions=30_000, seed=3)
    logs = []
    for threads in (1, 2):
        with threadpool_limits(threads):
            events, world = simulate(cfg, progress=False)
        logs.append((events, world.biases))
    (a, bias_a), (b, bias_b) = logs
    assert a.equals(b), "the logged events (propensities) depend on the BLAS thread count"
    np.testing.assert_array_equal(bias_a, bias_b)


@pytest.fixture
def in_pipeline(pipeline_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the session's tiny pipeline: the runs this test logs must not join the shared
    store that tests/test_run_records.py checks."""
    copy = tmp_path / "pipeline"
    shutil.copytree(pipeline_dir, copy)
    # 100 bootstrap replicates, not 1000: the bytes must match whatever the count, and each of the
    # two runs spends most of its time on the replicates
    params = yaml.safe_load((copy / "params.yaml").read_text())
    params["plove_evaluator"]["bootstrap"] = 100
    (copy / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(copy)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{copy / 'mlflow.db'}")
    return copy


def test_the_plove_evaluator_run_twice_writes_the_same_bytes(in_pipeline: Path):
    from pipelines import plove_evaluator

    out = in_pipeline / "data/metrics/plove"
    runs = []
    for threads in (1, 2):
        with threadpool_limits(threads):
            plove_evaluator.main()
        runs.append({name: (out / name).read_bytes() for name in OUTPUTS})
    first, second = runs
    assert b'"skipped"' not in first["evaluator.json"], "the tiny pipeline must run the evaluator"
    for name in OUTPUTS:
        assert first[name] == second[name], f"{name} differs between two runs"
    rows = list(csv.DictReader(io.StringIO(first["evaluator.csv"].decode())))
    assert len(rows) == 13
    share = {r["policy"]: float(r["rare_share"]) for r in rows}
    assert all(0 <= v <= 1 for v in share.values())
    assert share["popularity"] < share["random"]  # the logger shows popular items
    for r in rows:
        assert float(r["widened_lo"]) <= float(r["predicted"]) <= float(r["widened_hi"]), r
    for r in rows:  # the self-tuned Switch-SN-DR: a love rate, inside its interval, λ reported
        lo, est, hi = (float(r[f"switch_dr{x}"]) for x in ("_lo", "", "_hi"))
        assert 0 <= lo <= est <= hi <= 1, r
        assert float(r["switch_dr_lambda"]) >= 0
    summary = json.loads(first["evaluator.json"])
    assert summary["support"]["validation_low_propensity"]["n"] > 0
    assert set(summary["ope"]["switch_dr_lambda"]) == set(share)
    assert "spearman" in summary["ope"]["switch_dr"]["all"]


def test_a_gnolr_fit_run_twice_ends_with_the_same_weights():
    # docs/results.md: a forced re-run of train_gnolr gives bit-identical embeddings. The fit is
    # seeded, and every op of a step (RowAdam's row writes, fused AdamW, the index_select
    # gathers and their index_add backward) is deterministic on CPU
    from models.fitting import weights_digest
    from tests.ddp_worker import fit

    first, second = fit("single", 1, 1, max_epochs=2), fit("single", 1, 1, max_epochs=2)
    assert weights_digest(first.model) == weights_digest(second.model)
    assert first.info["best_valid"] == second.info["best_valid"]
