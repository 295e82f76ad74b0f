"""params.yaml as typed, validated configuration: a wrong key fails in a second, naming the key."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from features.contract import EventNames
from features.sources.movielens import MovieLensConfig
from features.sources.obd import OBDConfig
from features.sources.synthetic import SyntheticConfig
from features.sources.tabular import TabularConfig
from features.training_sets import FeaturesConfig
from models.gnolr import GNOLRConfig
from models.mf import RelMFConfig
from models.plove import PLoveConfig
from models.promotion import PromoteConfig
from pipelines.batch_recommend import BatchConfig
from serving.index import IndexConfig

SourceKind = Literal["synthetic", "movielens-100k", "obd", "parquet", "csv"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceConfig(_Strict):
    kind: SourceKind = "synthetic"
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)
    movielens: MovieLensConfig = Field(default_factory=MovieLensConfig)
    obd: OBDConfig = Field(default_factory=OBDConfig)
    tabular: TabularConfig = Field(default_factory=TabularConfig)
    cache_dir: str = Field("data/external", description="where fetched wheels are kept")
    feedback_log: str | None = Field(
        None, description="the service's feedback log directory, appended to the source's events"
    )


class ContractConfig(_Strict):
    levels: list[str] = Field(default_factory=lambda: ["click", "cart", "purchase"])
    reactions: list[str] = Field(default_factory=lambda: ["love"])
    max_bad_fraction: float = Field(
        0.01, ge=0, le=1, description="quarantined share that fails ingest"
    )

    def names(self) -> EventNames:
        return EventNames(tuple(self.levels), tuple(self.reactions))


class EvaluateConfig(_Strict):
    ks: list[int] = Field(default_factory=lambda: [10, 20, 50, 100])
    batch_size: int = Field(1024, ge=1)


class MlflowConfig(_Strict):
    experiment: str = "ladder"


class Params(_Strict):
    seed: int = 0
    source: SourceConfig = Field(default_factory=SourceConfig)
    contract: ContractConfig = Field(default_factory=ContractConfig)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    gnolr: GNOLRConfig = Field(default_factory=GNOLRConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    index: IndexConfig = Field(default_factory=IndexConfig)
    relmf: RelMFConfig = Field(default_factory=RelMFConfig)
    plove: PLoveConfig = Field(default_factory=PLoveConfig)
    promote: PromoteConfig = Field(default_factory=PromoteConfig)
    batch: BatchConfig = Field(default_factory=BatchConfig)
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)


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


def flatten(params: BaseModel | dict, prefix: str = "") -> dict[str, object]:
    """Nested params as ``a.b.c`` keys (as named in the file), for MLflow."""
    data = params.model_dump(mode="json") if isinstance(params, BaseModel) else params
    out: dict[str, object] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out
