"""MLflow pyfunc wrappers: each family scores ``(user_idx, item_idx)`` pairs from its saved arrays.

Input: a DataFrame with integer columns ``user_idx``, ``item_idx`` (``position`` too for P[Love],
default 0). Output: one float column per prediction —

- GNOLR: ``p_<level>`` = P(level ≥ l | u, i) = σ(γ_l·cos(u_l, i_l) − b_l) for every level;
- Rel-MF: ``p_relevance`` = σ(⟨u, i⟩ + b_u + b_i + b);
- P[Love]: ``p_love`` = calibrated P(love | u, i, position).

The heavy model modules are imported in ``load_context`` only, and the packages they need
(``models``, ``features``) travel with the model as code paths, so ``mlflow.pyfunc.load_model``
works outside the repository too.
"""

from __future__ import annotations

import json
import logging
import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models.signature import ModelSignature
from mlflow.types.schema import ColSpec, Schema

import features
import models
from features.contract import Col
from models.gnolr.network import GNOLREmbeddings
from models.plove.network import PLoveScorer
from models.relmf.network import MFEmbeddings

PACKAGES = ("mlflow", "numpy", "pandas", "polars", "pydantic", "torch", "lightning", "faiss-cpu")


def _pairs(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    missing = {Col.USER_IDX, Col.ITEM_IDX} - set(frame.columns)
    if missing:
        raise ValueError(f"model input lacks columns {sorted(missing)}")
    return frame[Col.USER_IDX].to_numpy(np.int64), frame[Col.ITEM_IDX].to_numpy(np.int64)


class GNOLRPairs(mlflow.pyfunc.PythonModel):
    """GNOLR per-level probabilities. Artifacts: ``embeddings`` (embeddings.npz) or ``bundle``
    (a serving bundle directory holding embeddings.npz and manifest.json with the levels)."""

    def __init__(self, levels: list[str]) -> None:
        self.levels = list(levels)

    def load_context(self, context) -> None:
        if "bundle" in context.artifacts:
            bundle = Path(context.artifacts["bundle"])
            self.levels = json.loads((bundle / "manifest.json").read_text())["levels"]
            path = bundle / "embeddings.npz"
        else:
            path = Path(context.artifacts["embeddings"])
        self.embeddings = GNOLREmbeddings.load(path)

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None):
        p = self.embeddings.probabilities(*_pairs(model_input))
        return pd.DataFrame(p, columns=[f"p_{name}" for name in self.levels])


class RelMFPairs(mlflow.pyfunc.PythonModel):
    """Rel-MF relevance probability. Artifact: ``embeddings`` (embeddings.npz)."""

    def load_context(self, context) -> None:
        self.embeddings = MFEmbeddings.load(context.artifacts["embeddings"])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None):
        return pd.DataFrame({"p_relevance": self.embeddings.probabilities(*_pairs(model_input))})


class PLovePairs(mlflow.pyfunc.PythonModel):
    """Calibrated P[Love]. Artifact: ``scorer`` (a directory with scorer.npz, calibrator.json)."""

    def load_context(self, context) -> None:
        self.scorer = PLoveScorer.load(context.artifacts["scorer"])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None):
        users, items = _pairs(model_input)
        if "position" in model_input.columns:
            positions = model_input["position"].to_numpy(np.int64)
        else:
            positions = np.zeros(len(users), dtype=np.int64)
        return pd.DataFrame({"p_love": self.scorer.predict(users, items, positions)})


def signature(outputs: list[str], position: bool = False) -> ModelSignature:
    """Integer pair columns in, one double column per name out."""
    inputs = [ColSpec("long", Col.USER_IDX), ColSpec("long", Col.ITEM_IDX)]
    if position:
        inputs.append(ColSpec("long", "position", required=False))
    return ModelSignature(Schema(inputs), Schema([ColSpec("double", n) for n in outputs]))


def requirements() -> list[str]:
    """Pinned versions of what the wrappers import (given, so MLflow need not infer them)."""
    out = []
    for name in PACKAGES:
        try:
            out.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            continue
    return out


def log_pair_model(
    name: str,
    python_model: mlflow.pyfunc.PythonModel,
    artifacts: dict[str, str],
    outputs: list[str],
    n_users: int,
    n_items: int,
    position: bool = False,
    registered_model_name: str | None = None,
) -> Any:
    """``mlflow.pyfunc.log_model`` with signature, a 3-pair input example and pinned requirements.

    Returns MLflow's ``ModelInfo`` (``model_uri``, ``model_id``, ``registered_model_version``).
    """
    example = pd.DataFrame(
        {
            Col.USER_IDX: np.arange(3, dtype=np.int64) % max(n_users, 1),
            Col.ITEM_IDX: np.arange(3, dtype=np.int64) % max(n_items, 1),
        }
    )
    if position:
        example["position"] = np.zeros(3, dtype=np.int64)
    # Quiet: no per-file download bar while MLflow validates the example, no note that the
    # wrapper is pickled (it is, by reference to this module, shipped as a code path).
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    log = logging.getLogger("mlflow.pyfunc")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=python_model,
            artifacts=artifacts,
            signature=signature(outputs, position),
            input_example=example,
            pip_requirements=requirements(),
            code_paths=[str(Path(models.__file__).parent), str(Path(features.__file__).parent)],
            registered_model_name=registered_model_name,
        )
    finally:
        log.setLevel(level)
