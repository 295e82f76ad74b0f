"""Rel-MF's configuration (params.yaml → ``relmf``)."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Estimator = Literal["naive", "ips", "clipped"]
LocalLoss = Literal["squared", "log"]


class RelMFLoss(BaseModel):
    """One configurable Rel-MF loss: naive, IPS or clipped IPS, squared or log local loss.

    Per pair: ``ℓ = w δ1(R̂) + (1 − w) δ0(R̂)`` with ``w = Y`` (naive), ``Y/θ`` (ips) or
    ``Y/max(θ, M)`` (clipped); the loss is the (optionally weighted) mean of ℓ over the pairs.

    For Y = 1 and an effective propensity below 1 the weight ``1 − w`` on δ0 is negative, so with the
    log loss ℓ → −∞ as R̂ → 1 and the empirical objective is unbounded below. ``non_negative``
    bounds every per-pair loss from below: ``ℓ⁺ = max(ℓ, 0)`` (the ideal per-pair loss is never
    negative). The squared loss is bounded anyway (ℓ ≥ 1 − w), hence the default.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    estimator: Estimator = Field("clipped", description="naive | ips | clipped")
    clip: float = Field(
        0.1, description="M ∈ (0, 1]: propensities below M count as M (clipped only)"
    )
    local_loss: LocalLoss = Field("squared", description="squared | log (needs care: see above)")
    non_negative: bool = Field(False, description="bound each per-pair loss below by 0")

    @field_validator("clip")
    @classmethod
    def _clip_in_unit_interval(cls, value: float) -> float:
        if not math.isfinite(value) or not 0 < value <= 1:
            raise ValueError(f"clip M must lie in (0, 1], got {value}")
        return value


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
