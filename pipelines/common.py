"""What every stage shares: atomic outputs, JSON metrics, MLflow runs tagged with git and DVC state."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

import mlflow  # noqa: E402

from pipelines.params import Params, flatten  # noqa: E402


def repo_root() -> Path:
    """The repository the stage runs in (DVC runs stages from its root)."""
    return Path(os.environ.get("DVC_ROOT", Path.cwd())).resolve()


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling directory that replaces ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(path)
        path.chmod(0o755)  # mkdtemp makes it private
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _finite(value):
    """JSON has no NaN or infinity: write them as null."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str | Path, data: dict) -> None:
    """Write JSON atomically (temporary file, fsync, rename); NaN and ±inf become null."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(_finite(data), fh, indent=2, sort_keys=True, default=float)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp, 0o644)  # mkstemp makes it private
    os.replace(tmp, path)


def file_digest(*paths: str | Path) -> str:
    """sha256 over the bytes of the given files, first 16 hex digits."""
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` when set, else an absolute sqlite file in the repository."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repo_root() / 'mlflow.db'}"


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=repo_root(),
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def start_run(params: Params, stage: str, run_name: str) -> mlflow.ActiveRun:
    """Start an MLflow run for ``stage`` with the flattened params and git/DVC tags."""
    mlflow.set_tracking_uri(tracking_uri())
    name = params.mlflow.experiment
    if mlflow.get_experiment_by_name(name) is None:
        artifacts = os.environ.get("LADDER_ARTIFACT_ROOT") or (repo_root() / "mlartifacts").as_uri()
        mlflow.create_experiment(name, artifact_location=artifacts)
    mlflow.set_experiment(name)
    run = mlflow.start_run(run_name=run_name)
    params_file = repo_root() / "params.yaml"
    mlflow.set_tags(
        {
            "stage": stage,
            # Runs of one `dvc repro` share the commit and the parameters: group them by these.
            "params_digest": file_digest(params_file) if params_file.exists() else "",
            "git_commit": _git_commit(),
            "dvc_exp": os.environ.get("DVC_EXP_NAME", ""),
            "source": params.source.kind,
        }
    )
    mlflow.log_params(flatten(params))
    return run


def read_interactions(path: str | Path):
    """A split's Parquet file as :class:`models.train.Interactions`."""
    import polars as pl

    from models.train import Interactions

    frame = pl.read_parquet(path, columns=["user_idx", "item_idx", "level", "propensity"])
    return Interactions(
        frame["user_idx"].to_numpy(),
        frame["item_idx"].to_numpy(),
        frame["level"].to_numpy(),
        frame["propensity"].to_numpy(),
    )


def log_dataset(directory: str | Path, name: str, files: list[str]) -> str:
    """Record the training data's location and content digest as the run's MLflow input."""
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource

    directory = Path(directory).resolve()
    digest = file_digest(*(directory / f for f in files))
    mlflow.log_input(
        MetaDataset(LocalArtifactDatasetSource(str(directory)), name=name, digest=digest),
        context="training",
    )
    return digest
