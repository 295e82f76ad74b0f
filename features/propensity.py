"""Exposure propensities estimated from item popularity (methods.md §2)."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class PropensityConfig(BaseModel):
    """θ_i = max((n_i / max_j n_j)^η, floor), n_i = training positives of item i."""

    model_config = ConfigDict(extra="forbid")

    eta: float = Field(0.5, ge=0, description="η, the power of the popularity ratio")
    floor: float = Field(1e-3, gt=0, le=1, description="θ of items with too few positives")


def estimate_item_propensity(positives: np.ndarray, cfg: PropensityConfig) -> np.ndarray:
    """θ over the full item index: ``positives[i]`` counts item i's training positives.

    The vector has one entry per item of the catalogue, so items without positives keep their
    place (and get the floor) instead of shifting the others.
    """
    positives = np.asarray(positives, dtype=np.float64)
    if positives.ndim != 1 or positives.size == 0:
        raise ValueError("positives must be a non-empty 1-d array over the item index")
    top = positives.max()
    if top <= 0:
        return np.full(positives.shape, cfg.floor)
    return np.maximum((positives / top) ** cfg.eta, cfg.floor)
