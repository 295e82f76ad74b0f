"""`dvc repro` end to end in a scratch repository: a second run does nothing, a changed parameter
re-runs only the stages that depend on it."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import TINY_PARAMS, write_params

ROOT = Path(__file__).resolve().parents[1]


def run(cmd: list[str], cwd: Path, env: dict) -> str:
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{cmd} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout + out.stderr


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    for name in ("features", "models", "pipelines", "serving", "benchmarks"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
    params = json.loads(json.dumps(TINY_PARAMS))
    params["source"]["synthetic"]["n_impressions"] = 20_000
    params["gnolr"]["max_epochs"] = 1
    params["plove"] = {"max_epochs": 2}
    params["relmf"] = {"max_epochs": 2}
    write_params(repo, params)
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlflow.db'}",
        "DVC_NO_ANALYTICS": "1",
        "PYTHONPATH": str(repo),
    }
    run(["git", "init", "-q"], repo, env)
    run([sys.executable, "-m", "dvc", "init", "-q"], repo, env)
    return repo, env


def stages_run(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]


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
    assert (repo / "data/serving/index.faiss").exists()
    assert "make ui" in first and "promote: ladder-gnolr v1 → @champion" in first

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
