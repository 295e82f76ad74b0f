"""params.yaml as typed, validated configuration: a wrong key fails in a second, naming the key.

Each section's schema lives beside the code it configures; this module only assembles them. It
imports configuration modules only (no deep-learning framework), so validation is fast.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from evaluation.policies import PLoveEvaluatorConfig, PLoveSweepConfig
from evaluation.promotion import PromoteConfig
from evaluation.protocol import EvaluateConfig
from evaluation.selection import TuneConfig
from features.contract import ContractConfig
from features.engine import DataEngineConfig
from features.feedback_log import RetentionConfig
from features.sources import SourceConfig
from features.training_sets import FeaturesConfig
from models.gnolr.config import GNOLRConfig
from models.plove.config import PLoveConfig
from models.relmf.config import RelMFConfig
from models.scale_config import TrainScaleConfig
from serving.config import BatchConfig
from serving.index import IndexConfig


class MlflowConfig(BaseModel):
    """params.yaml → ``mlflow``: the experiment every run of the pipeline is logged to."""

    model_config = ConfigDict(extra="forbid")

    experiment: str = "ladder"


class ScaleConfig(BaseModel):
    """params.yaml → ``scale``: the engines that take a stage past one process (docs/scaling-out.md).

    ``data`` runs ingest and features, ``train`` the trainers; the embedded defaults are the
    reference.
    """

    model_config = ConfigDict(extra="forbid")

    data: DataEngineConfig = Field(default_factory=DataEngineConfig)
    train: TrainScaleConfig = Field(default_factory=TrainScaleConfig)


class Params(BaseModel):
    """The whole of params.yaml."""

    model_config = ConfigDict(extra="forbid")

    seed: int = 0
    source: SourceConfig = Field(default_factory=SourceConfig)
    contract: ContractConfig = Field(default_factory=ContractConfig)
    feedback_log: RetentionConfig = Field(default_factory=RetentionConfig)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    gnolr: GNOLRConfig = Field(default_factory=GNOLRConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    index: IndexConfig = Field(default_factory=IndexConfig)
    relmf: RelMFConfig = Field(default_factory=RelMFConfig)
    plove: PLoveConfig = Field(default_factory=PLoveConfig)
    plove_evaluator: PLoveEvaluatorConfig = Field(default_factory=PLoveEvaluatorConfig)
    plove_sweep: PLoveSweepConfig = Field(default_factory=PLoveSweepConfig)
    promote: PromoteConfig = Field(default_factory=PromoteConfig)
    batch: BatchConfig = Field(default_factory=BatchConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)
    scale: ScaleConfig = Field(default_factory=ScaleConfig)


class ParamsError(ValueError):
    """params.yaml is missing, unreadable or invalid."""


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml; errors name the offending key path."""
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path} not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        return Params.model_validate(raw)
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path} is not valid YAML: {exc}") from exc
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ParamsError(f"invalid {path}: {problems}") from None
