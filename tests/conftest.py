"""Shared fixtures: one tiny pipeline run (every stage, no DVC) reused by stage and service tests."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")

TINY_PARAMS = {
    "seed": 0,
    "source": {
        "kind": "synthetic",
        "synthetic": {
            "n_users": 200,
            "n_items": 150,
            "n_impressions": 100_000,
            "bad_row_fraction": 0.001,
            "seed": 1,
        },
    },
    "gnolr": {
        "embedding_dim": 32,
        "hidden": [32],
        "dim": 16,
        "max_epochs": 4,
        "batch_size": 1024,
        "lr": 0.003,
    },
    "evaluate": {"ks": [10, 20]},
    "index": {"recall_queries": 50},
    "relmf": {"max_epochs": 3},
    "plove": {"max_epochs": 3},
}


ROOT = Path(__file__).resolve().parents[1]
REPO_PARAMS = ROOT / "params.yaml"
CODE = ("features", "models", "evaluation", "serving", "reporting", "pipelines")


def _merge(base: dict, overrides: dict) -> dict:
    out = dict(base)
    for key, value in overrides.items():
        out[key] = (
            _merge(base[key], value)
            if isinstance(value, dict) and isinstance(base.get(key), dict)
            else value
        )
    return out


def write_params(directory: Path, overrides: dict) -> None:
    """params.yaml in ``directory``: the repository's parameters with ``overrides`` merged in."""
    params = _merge(yaml.safe_load(REPO_PARAMS.read_text()), overrides)
    (directory / "params.yaml").write_text(yaml.safe_dump(params))


def build_pipeline(directory: Path) -> None:
    """Run ingest → features → train_gnolr → train_relmf → evaluate → train_plove → index in
    ``directory`` (in this process, no DVC) on :data:`TINY_PARAMS`."""
    from pipelines import evaluate, features, index, ingest, train_gnolr, train_plove, train_relmf

    write_params(directory, TINY_PARAMS)
    old_cwd, old_uri = Path.cwd(), os.environ.get("MLFLOW_TRACKING_URI")
    os.chdir(directory)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{directory / 'mlflow.db'}"
    try:
        for stage in (ingest, features, train_gnolr, train_relmf, evaluate):
            stage.main()
        train_plove.main([])  # it takes command-line options; run it with the defaults
        index.main()
    finally:
        os.chdir(old_cwd)
        if old_uri is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old_uri


@pytest.fixture(scope="session")
def pipeline_dir(tmp_path_factory) -> Path:
    """A directory where the tiny pipeline (:func:`build_pipeline`) has run; tests only read it.

    Under pytest-xdist the workers of one run share it: the first to ask builds it under an
    exclusive lock on a file in their common temporary directory, the others wait and reuse it
    (one build, ~11 s on the 2-core machine, instead of one per worker).
    """
    if "PYTEST_XDIST_WORKER" not in os.environ:  # one process
        directory = tmp_path_factory.mktemp("pipeline")
        build_pipeline(directory)
        return directory
    shared = tmp_path_factory.getbasetemp().parent
    directory, done = shared / "pipeline", shared / "pipeline.done"
    with open(shared / "pipeline.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not done.exists():
            shutil.rmtree(directory, ignore_errors=True)  # a failed build's leftovers
            directory.mkdir()
            build_pipeline(directory)
            done.touch()
    return directory


@pytest.fixture(scope="session")
def wheel_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder shared by the session, so each pinned wheel (MovieLens, OBD) downloads once."""
    return tmp_path_factory.mktemp("wheels")


def dvc_repo(directory: Path, params: dict) -> dict[str, str]:
    """A scratch git + DVC repository holding a copy of the pipeline code and ``params`` (merged
    into the repository's params.yaml); returns the environment to run ``dvc`` in it."""
    for name in CODE:
        shutil.copytree(ROOT / name, directory / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", directory / "dvc.yaml")
    write_params(directory, json.loads(json.dumps(params)))
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{directory / 'mlflow.db'}",
        "DVC_NO_ANALYTICS": "1",
        "PYTHONPATH": str(directory),
    }
    env.pop("DVC_ROOT", None)
    run(["git", "init", "-q"], directory, env)
    run([sys.executable, "-m", "dvc", "init", "-q"], directory, env)
    return env


def run(cmd: list[str], cwd: Path, env: dict, timeout: int = 600) -> str:
    """Run ``cmd``; fail the test with the tail of its output when it exits non-zero."""
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{cmd} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout + out.stderr


def stages_run(output: str) -> list[str]:
    """The stages ``dvc repro`` says it ran."""
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Modules with the most ``slow`` tests run first (the order is otherwise kept).

    ``make test`` runs the suite on two processes (``-n 2 --dist loadfile``: a module stays on one
    process, so its module-scoped servers start once). Each process takes the next module as it
    frees up, so the few long pipeline modules must start first, not be left for last.
    """
    slow = Counter(item.path for item in items if item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow[item.path])
