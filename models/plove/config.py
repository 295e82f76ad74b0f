"""P[Love]'s configuration (params.yaml → ``plove``): labels, model, training and calibration."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from features.love_labels import LoveLabelConfig
from models.plove.calibration import CalibrationMethod


class PLoveConfig(BaseModel):
    """Labels, model, training and calibration of P[Love] (params.yaml → ``plove``)."""

    model_config = ConfigDict(extra="forbid")

    labels: LoveLabelConfig = Field(default_factory=LoveLabelConfig)
    dim: int = Field(32, ge=1, description="size of each head's user and item vectors")
    factorised: bool = Field(
        True, description="P[Love] = P(click)·P(love|click) with an auxiliary click loss"
    )
    click_weight: float = Field(1.0, ge=0, description="weight of the auxiliary click BCE")
    user_buckets: int = Field(4, ge=1, description="quantile buckets of user activity")
    item_buckets: int = Field(10, ge=1, description="quantile buckets of item popularity")
    max_position: int = Field(
        20, ge=1, description="positions at or beyond this share the last bias"
    )
    exposure_weighting: Literal["none", "ips"] = Field(
        "none",
        description="ips: weight training rows by 1/max(logged propensity, ips_floor) (normalised "
        "to mean 1), to fit the model for uniform exposure rather than the logging policy's",
    )
    ips_floor: float = Field(1e-3, gt=0, le=1, description="M of the clipped weight 1/max(π, M)")
    l2: float = Field(3e-3, ge=0, description="L2 penalty on the embedding rows of each batch")
    lr: float = Field(1e-2, gt=0)
    batch_size: int = Field(16384, ge=1)
    max_epochs: int = Field(20, ge=1)
    patience: int = Field(3, ge=1, description="early stopping on the valid log loss")
    calibration: CalibrationMethod = Field(
        "auto",
        description="auto = lowest cross-fitted valid log loss of identity/temperature/isotonic",
    )
    calibration_folds: int = Field(5, ge=2)
    ece_bins: int = Field(10, ge=2, description="equal-mass bins of ECE and the reliability curve")
    seed: int = 0
