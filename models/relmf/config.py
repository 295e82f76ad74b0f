"""Rel-MF's configuration (params.yaml → ``relmf``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from models.relmf.loss import RelMFLoss


class RelMFConfig(BaseModel):
    """Rel-MF settings (params.yaml → ``relmf``)."""

    model_config = ConfigDict(extra="forbid")

    loss: RelMFLoss = Field(default_factory=RelMFLoss, description="estimator, M, local loss")
    level: int = Field(1, ge=1, description="Y = 1{level ≥ c}; 1 = click, the shallowest level")
    dim: int = Field(32, ge=1, description="embedding size d")
    init_std: float = Field(0.1, gt=0, description="std of the initial embeddings")
    lr: float = Field(0.01, gt=0, description="Adam learning rate")
    weight_decay: float = Field(1e-5, ge=0, description="L2 penalty λ (Adam weight decay)")
    batch_users: int = Field(128, ge=1, description="users per batch, each against every item")
    max_epochs: int = Field(60, ge=1)
    patience: int = Field(5, ge=1, description="early stopping on the validation IPS-DCG@k")
    valid_k: int = Field(5, ge=1, description="k of the validation IPS-DCG")
    valid_floor: float = Field(0.01, gt=0, le=1, description="propensity floor of the validation")
    seed: int = 0
