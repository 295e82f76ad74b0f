"""MLflow tracking of the stages: where runs go, their shared tags, metric names, logged data.

Every stage that logs opens its run with :func:`start_run`, which records params.yaml flattened,
and the tags ``stage``, ``model``, ``pipeline_run`` (shared by the runs of one ``dvc repro``),
``git_commit``, ``git_dirty``, ``params_digest``, ``data_digest``, ``dvc_exp`` and ``source``.
Metric names follow ``<split>/<metric>[/<level>]`` (:func:`metric_name`), split ``train``,
``valid``, ``test`` or ``data``.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import subprocess
from pathlib import Path

import mlflow
from pydantic import BaseModel

from pipelines.outputs import file_digest


def flatten(params: BaseModel | dict, prefix: str = "") -> dict[str, object]:
    """Nested params as ``a.b.c`` keys (as named in params.yaml), for MLflow."""
    data = params.model_dump(mode="json") if isinstance(params, BaseModel) else params
    out: dict[str, object] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def repo_root() -> Path:
    """The repository the stage runs in (DVC runs stages from its root)."""
    return Path(os.environ.get("DVC_ROOT", Path.cwd())).resolve()


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` when set, else an absolute sqlite file in the repository."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repo_root() / 'mlflow.db'}"


def artifact_root() -> str | None:
    """Where a new experiment keeps artifacts: ``LADDER_ARTIFACT_ROOT``; for a tracking server
    (``http(s)://``) None, i.e. the server's own artifact store (``mlflow server
    --artifacts-destination s3://…``: clients upload through the server and need no S3
    credentials); else ``mlartifacts/`` next to the sqlite tracking database (so queued `dvc exp
    run` workspaces, which are temporary, write beside the repository's mlflow.db), else
    ``mlartifacts/`` in the repository."""
    if os.environ.get("LADDER_ARTIFACT_ROOT"):
        return os.environ["LADDER_ARTIFACT_ROOT"]
    uri = tracking_uri()
    if uri.startswith(("http://", "https://")):
        return None
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts").as_uri()
    return (repo_root() / "mlartifacts").as_uri()


def _git(*args: str) -> str:
    try:
        out = subprocess.run(
            ["git", *args], capture_output=True, text=True, check=True, cwd=Path.cwd()
        )
        return out.stdout
    except (OSError, subprocess.CalledProcessError):
        return ""


def _git_commit() -> str:
    return _git("rev-parse", "HEAD").strip() or "unknown"


EVENTS = Path("data/ingest/events.parquet")
METRIC_NAME = re.compile(r"^(train|valid|test|data)/[A-Za-z0-9_.]+(/[A-Za-z0-9_.-]+)?$")


def metric_name(split: str, metric: str, level: str | None = None) -> str:
    """``<split>/<metric>[/<level>]`` with ``@`` spelled ``_at_`` (MLflow forbids ``@``); the split
    ``data`` holds facts about the data itself (rows, users, quarantined rows)."""
    name = "/".join([split, metric.replace("@", "_at_"), *([level] if level else [])])
    if not METRIC_NAME.match(name):
        raise ValueError(f"metric name {name!r} does not follow <split>/<metric>[/<level>]")
    return name


def split_metrics(split: str, metrics: dict, prefix: str = "") -> dict[str, float]:
    """``{metric[/level]: value}`` as scheme names under ``split`` (``prefix`` prepended to the
    metric); non-numeric and non-finite values are dropped."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if not math.isfinite(value):
            continue
        metric, _, level = key.partition("/")
        out[metric_name(split, prefix + metric, level or None)] = float(value)
    return out


def plove_run_metrics(metrics: dict) -> dict[str, float]:
    """P[Love]'s overall valid/test metrics (``data/metrics/plove.json``) in the
    ``<split>/<metric>`` scheme: calibrated probabilities as ``<split>/<metric>`` (``test/ece``,
    ``test/log_loss``, ``test/auc`` …), uncalibrated ones as ``<split>/raw_<metric>``."""
    out: dict[str, float] = {}
    for split in ("valid", "test"):
        out |= split_metrics(split, metrics[split]["calibrated"]["all"])
        out |= split_metrics(split, metrics[split]["raw"]["all"], prefix="raw_")
        low = metrics[split]["calibrated"].get("low_propensity")
        if low is not None:
            keys = ("ece", "ece_to_overall", "ratio", "mean_predicted", "observed_rate")
            out |= split_metrics(split, {k: low[k] for k in keys}, prefix="low_propensity_")
    return out


def pipeline_run_id(params_file: Path | None = None) -> tuple[str, dict[str, str]]:
    """The id shared by the runs of one ``dvc repro``: sha256 of the inputs it ran on.

    ``pipeline_run = sha256(git commit ‖ diff of tracked *.py and dvc.yaml against it ‖
    params.yaml ‖ data/ingest/events.parquet)[:12]`` — the same inputs give the same id, so the
    stages of one repro (separate processes) agree without sharing state. Returns the id and the
    parts (git_commit, git_dirty, params_digest, data_digest) for tagging.
    """
    # The stage's working directory, not DVC_ROOT: a queued `dvc exp run` executes in a temporary
    # copy with its own params.yaml and data while DVC_ROOT names the parent repository.
    root = Path.cwd()
    params_file = params_file or root / "params.yaml"
    events = root / EVENTS
    commit = _git_commit()
    diff = _git("diff", "HEAD", "--", "*.py", "dvc.yaml") if commit != "unknown" else ""
    parts = {
        "git_commit": commit,
        "git_dirty": str(bool(diff)).lower(),
        "params_digest": file_digest(params_file) if params_file.exists() else "",
        "data_digest": file_digest(events) if events.exists() else "",
    }
    h = hashlib.sha256()
    for value in (commit, diff, parts["params_digest"], parts["data_digest"]):
        h.update(value.encode())
        h.update(b"\0")
    return h.hexdigest()[:12], parts


def start_run(params, stage: str, run_name: str, model: str | None = None) -> mlflow.ActiveRun:
    """Start an MLflow run for ``stage`` with ``params`` (pipelines.params.Params) flattened and
    the shared tags.

    Tags: ``stage``, ``model`` (the family or baseline; default ``run_name``), ``pipeline_run``
    (see :func:`pipeline_run_id`), ``git_commit``, ``git_dirty``, ``params_digest``,
    ``data_digest``, ``dvc_exp`` and ``source``.
    """
    mlflow.set_tracking_uri(tracking_uri())
    name = params.mlflow.experiment
    if mlflow.get_experiment_by_name(name) is None:
        mlflow.create_experiment(name, artifact_location=artifact_root())
    mlflow.set_experiment(name)
    run = mlflow.start_run(run_name=run_name)
    pipeline_run, parts = pipeline_run_id()
    mlflow.set_tags(
        {
            "stage": stage,
            "model": model or run_name,
            "pipeline_run": pipeline_run,
            **parts,
            "dvc_exp": os.environ.get("DVC_EXP_NAME", ""),
            "source": params.source.kind,
        }
    )
    mlflow.log_params(flatten(params))
    return run


def log_plot(path: str | Path) -> None:
    """Log a DVC plot file as the run's artifact ``plots/<file name>``."""
    mlflow.log_artifact(str(path), artifact_path="plots")


def log_dataset(
    directory: str | Path, name: str, files: list[str], context: str = "training"
) -> str:
    """Record the data's location and content digest (of ``files``) as the run's MLflow input."""
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource

    directory = Path(directory).resolve()
    digest = file_digest(*(directory / f for f in files))
    mlflow.log_input(
        MetaDataset(LocalArtifactDatasetSource(str(directory)), name=name, digest=digest),
        context=context,
    )
    return digest
