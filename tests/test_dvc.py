"""`dvc repro` end to end in a scratch repository: a second run does nothing, a changed parameter
re-runs only the stages that depend on it."""

import json
import sys

import polars as pl
import pytest
import yaml
from starlette.testclient import TestClient

from serving.bundle import bundle_dir
from tests.asgi import service_app
from tests.conftest import TINY_PARAMS, dvc_repo, run, stages_run, write_params


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    params = json.loads(json.dumps(TINY_PARAMS))
    params["source"]["synthetic"]["n_impressions"] = 20_000
    params["gnolr"]["max_epochs"] = 1
    params["plove"] = {"max_epochs": 2}
    params["relmf"] = {"max_epochs": 2}
    # 100 bootstrap replicates, not 1000: the test checks that the stage runs, not its intervals
    # (half of the stage's time went to the replicates: 63 → 32 s, load average 8 on 2 cores)
    params["plove_evaluator"] = {"bootstrap": 100}
    return repo, dvc_repo(repo, params)


@pytest.mark.slow  # ~5 min on the 2-core box: three `dvc repro` runs
def test_repro_runs_everything_then_nothing_then_only_what_a_parameter_touches(repo):
    repo, env = repo
    dvc = [sys.executable, "-m", "dvc"]
    first = run([*dvc, "repro"], repo, env)
    assert set(stages_run(first)) == {
        "ingest",
        "features",
        "train_gnolr",
        "train_relmf",
        "evaluate",
        "index",
        "train_plove",
        "plove_evaluator",
        "plove_sweep",
        "batch_recommend",
        "report",
        "promote",
    }
    assert (bundle_dir(repo / "data/serving") / "index.faiss").exists()
    assert "make ui" in first and "promote: ladder-gnolr v1 → @champion" in first
    # the bundle serves, with P[Love] since the simulated shop has love reactions
    user = pl.read_parquet(bundle_dir(repo / "data/serving") / "users.parquet")["user_id"][0]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LADDER_BUNDLE", str(repo / "data/serving"))
        mp.setenv("LADDER_FEEDBACK_LOG", str(repo / "feedback"))
        with TestClient(service_app()) as client:
            served = client.post("/recommend", json={"user_id": user, "k": 5})
    assert served.status_code == 200, served.text
    assert len(served.json()["items"]) == 5
    assert all(0 < item["p_love"] < 1 for item in served.json()["items"])

    assert stages_run(run([*dvc, "repro"], repo, env)) == []

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["evaluate"]["ks"] = [5, 10]
    write_params(repo, params)
    # the report reads the evaluation's runs, promotion gates on its metrics
    assert set(stages_run(run([*dvc, "repro"], repo, env))) == {"evaluate", "report", "promote"}
    assert (
        "ndcg_at_5/purchase"
        in json.loads((repo / "data/metrics/evaluate.json").read_text())["gnolr"]
    )

    params["index"]["recall_k"] = 50
    write_params(repo, params)
    # the bundle is unchanged (same vectors, same index), so batch_recommend does not re-run
    assert set(stages_run(run([*dvc, "repro"], repo, env))) == {"index", "report", "promote"}
