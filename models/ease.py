"""EASE (Steck 2019): a closed-form item-item model, a strong reference for top-N on small catalogues.

``B = argmin ‖X − XB‖² + λ‖B‖²`` subject to ``diag(B) = 0`` has the closed form
``B = I − P·diag(1/diag P)``, ``P = (XᵀX + λI)⁻¹``; a user's scores are ``X_u·B``. X is the binary
(n_users, n_items) matrix of training positives. Memory and time grow with n_items² / n_items³.
"""

from __future__ import annotations

import time

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from models.data import Interactions
from models.recommender import Recommender


class EASEConfig(BaseModel):
    """λ of the ridge penalty on B."""

    model_config = ConfigDict(extra="forbid")

    l2: float = Field(500.0, gt=0, description="λ")


class EASE(Recommender):
    def __init__(self, cfg: EASEConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or EASEConfig()

    def _fit(self, train: Interactions, valid, validation) -> None:
        start = time.perf_counter()
        x = self.seen
        gram = (x.T @ x).toarray().astype(np.float64)
        gram[np.diag_indices_from(gram)] += self.cfg.l2
        p = np.linalg.inv(gram)
        b = -p / np.diag(p)[None, :]
        b[np.diag_indices_from(b)] = 0.0
        self.weights = b.astype(np.float32)
        self.fit_info = {"seconds": time.perf_counter() - start}

    def score(self, users: np.ndarray) -> np.ndarray:
        return np.asarray(self.seen[users] @ self.weights)
