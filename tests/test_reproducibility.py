"""The committed figures reproduce: the simulated shop and the P[Love] evaluator give the same bytes
on every run, whatever the number of BLAS threads (one thread and several used to round the logged
propensities differently, which moved every propensity-weighted figure in the last digits)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
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
def in_pipeline(pipeline_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(pipeline_dir)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{pipeline_dir / 'mlflow.db'}")
    return pipeline_dir


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
    assert os.path.getsize(out / "evaluator.csv") > 0
