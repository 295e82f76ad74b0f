"""Implicit-feedback ALS (Hu, Koren, Volinsky 2008) from the ``implicit`` package: the reference.

``min Σ_{u,i} c_ui (p_ui − x_uᵀ y_i)² + λ(‖X‖² + ‖Y‖²)`` with ``p_ui = 1{u has a positive on i}``
and confidence ``c_ui = 1 + α`` on positives, 1 elsewhere (``implicit`` reads the values of the
matrix it is given, times its ``alpha``, as ``c_ui − 1``; it is given the binary X). The only
module that imports ``implicit``.
"""

from __future__ import annotations

import time

import numpy as np
from implicit.cpu.als import AlternatingLeastSquares
from pydantic import BaseModel, ConfigDict, Field

from models.data import Interactions
from models.recommender import Recommender


class ALSConfig(BaseModel):
    """Factors, λ, α and sweeps of the weighted matrix factorisation."""

    model_config = ConfigDict(extra="forbid")

    factors: int = Field(64, ge=1)
    regularization: float = Field(0.01, ge=0, description="λ")
    alpha: float = Field(10.0, gt=0, description="α: a positive pair weighs 1 + α")
    iterations: int = Field(15, ge=1, description="alternating sweeps")
    threads: int = Field(1, ge=0, description="implicit's num_threads (0 = all cores)")
    seed: int = 0


class ALS(Recommender):
    """``implicit.cpu.als.AlternatingLeastSquares`` on X with its ``alpha``; scores ``x_uᵀ y_i``."""

    def __init__(self, cfg: ALSConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or ALSConfig()

    def _fit(self, train: Interactions, valid, validation) -> None:
        c = self.cfg
        model = AlternatingLeastSquares(
            factors=c.factors,
            regularization=c.regularization,
            alpha=c.alpha,
            iterations=c.iterations,
            random_state=c.seed,
            num_threads=c.threads,
            calculate_training_loss=False,
        )
        start = time.perf_counter()
        model.fit(self.seen, show_progress=False)
        self.user_factors = np.asarray(model.user_factors)
        self.item_factors = np.asarray(model.item_factors)
        self.fit_info = {"seconds": time.perf_counter() - start}

    def score(self, users: np.ndarray) -> np.ndarray:
        return self.user_factors[users] @ self.item_factors.T
