"""GNOLR: one ordinal two-tower model for every feedback level (methods.md §1).

Each side has one id-embedding table shared by T per-level MLP heads; head c yields the
L2-normalised sub-embedding e^c. With nesting, ``s_c = Σ_{j≤c} cos(e_u^j, e_i^j)`` (the inner product
of the concatenations E^c = [e^1; …; e^c]) and ``P(k > c) = σ(γ_c·s_c − a_c)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn


class GNOLRConfig(BaseModel):
    """Architecture and training settings of GNOLR (params.yaml → ``gnolr``)."""

    model_config = ConfigDict(extra="forbid")

    embedding_dim: int = Field(64, ge=1, description="id embedding size inside each tower")
    hidden: list[int] = Field(default_factory=lambda: [128, 64], description="per-level MLP widths")
    dim: int = Field(32, ge=1, description="d, size of each level's sub-embedding")
    gamma: float | list[float] | Literal["auto"] = Field(
        "auto",
        description="γ, inverse temperature: one value, one per level, or 'auto' = 0.9 × the "
        "largest shared γ that keeps P(k>c) ≥ P(k>c+1)",
    )
    nested: bool = Field(True, description="nested embedding s_c = Σ_{j≤c} cos_j (False: GNOLR-V0)")
    loss: Literal["nested", "full"] = Field("nested", description="Σ_t L_t, or only L_T (GNOLR-V1)")
    eps: float = Field(1e-6, gt=0, lt=0.1, description="clamp of the probability differences")
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(2048, ge=1)
    max_epochs: int = Field(8, ge=1)
    patience: int = Field(3, ge=1, description="early-stopping patience in epochs")
    seed: int = 0


def thresholds_from_base_rates(base_rates: Sequence[float]) -> np.ndarray:
    """a_c = −logit(p_c), so that a zero score returns the base rate p_c."""
    p = np.asarray(base_rates, dtype=np.float64)
    if np.any((p <= 0) | (p >= 1)):
        raise ValueError(f"base rates must lie in (0, 1) to set thresholds, got {p.tolist()}")
    if np.any(np.diff(p) > 0):
        raise ValueError(f"base rates must not rise with depth, got {p.tolist()}")
    return np.log((1 - p) / p)


def max_shared_gamma(thresholds: np.ndarray) -> float:
    """The supremum of shared γ keeping the ordering: min_c (a_{c+1} − a_c); ∞ for T = 1."""
    gaps = np.diff(thresholds)
    return float(gaps.min()) if gaps.size else math.inf


def resolve_gamma(
    gamma: float | list[float] | str,
    thresholds: np.ndarray,
    names: Sequence[str],
    nested: bool = True,
) -> np.ndarray:
    """γ per level, validated so that P(k > c) ≥ P(k > c+1) for every possible score.

    With nesting, s_c ∈ [−c, c] and s_{c+1} = s_c + cos_{c+1}; the worst case of
    ``γ_c s_c − a_c ≥ γ_{c+1} s_{c+1} − a_{c+1}`` gives ``|γ_c − γ_{c+1}|·c + γ_{c+1} < a_{c+1} − a_c``
    (for a shared γ: γ < a_{c+1} − a_c). Without nesting both scores are one cosine in [−1, 1]:
    ``|γ_c − γ_{c+1}| + … `` is bounded by ``γ_c + γ_{c+1} < a_{c+1} − a_c`` in the worst case.
    """
    n = len(thresholds)
    if gamma == "auto":
        top = max_shared_gamma(thresholds) if nested else max_shared_gamma(thresholds) / 2
        return np.full(n, 4.0 if math.isinf(top) else 0.9 * top)
    g = (
        np.full(n, float(gamma))
        if isinstance(gamma, int | float)
        else np.asarray(gamma, dtype=np.float64)
    )
    if g.shape != (n,):
        raise ValueError(f"gamma has {g.size} values for {n} levels {list(names)}")
    if np.any(g <= 0):
        raise ValueError(f"gamma must be positive, got {g.tolist()}")
    for c in range(n - 1):
        gap = thresholds[c + 1] - thresholds[c]
        need = abs(g[c] - g[c + 1]) * (c + 1) + g[c + 1] if nested else g[c] + g[c + 1]
        if not need < gap:
            raise ValueError(
                f"gamma {g.tolist()} breaks the ordering P(k>c) ≥ P(k>c+1) between levels "
                f"'{names[c]}' and '{names[c + 1]}': it needs a worst-case logit gap {need:.3f} < "
                f"a_{names[c + 1]} − a_{names[c]} = {gap:.3f} (thresholds from training base rates). "
                f"Lower gamma below {gap:.3f} or use gamma: auto."
            )
    return g


class Tower(nn.Module):
    """One side of the two-tower model: a shared id embedding and T per-level MLP heads."""

    def __init__(self, n_ids: int, n_levels: int, cfg: GNOLRConfig) -> None:
        super().__init__()
        self.embedding = nn.Embedding(n_ids, cfg.embedding_dim)
        nn.init.normal_(self.embedding.weight, std=0.1)
        widths = [cfg.embedding_dim, *cfg.hidden, cfg.dim]
        self.heads = nn.ModuleList()
        for _ in range(n_levels):
            layers: list[nn.Module] = []
            for w_in, w_out in zip(widths[:-1], widths[1:], strict=True):
                layers += [nn.Linear(w_in, w_out), nn.LeakyReLU()]
            self.heads.append(nn.Sequential(*layers[:-1]))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """L2-normalised sub-embeddings e^1..e^T, shape (B, T, d)."""
        x = self.embedding(ids)
        return F.normalize(torch.stack([head(x) for head in self.heads], dim=1), dim=-1)


class GNOLR(nn.Module):
    """Two towers plus the cumulative-logit link with fixed thresholds a and inverse temperature γ."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        thresholds: np.ndarray,
        gamma: np.ndarray,
        cfg: GNOLRConfig,
    ) -> None:
        super().__init__()
        n_levels = len(thresholds)
        self.nested = cfg.nested
        self.user_tower = Tower(n_users, n_levels, cfg)
        self.item_tower = Tower(n_items, n_levels, cfg)
        self.register_buffer("thresholds", torch.as_tensor(thresholds, dtype=torch.float32))
        self.register_buffer("gamma", torch.as_tensor(gamma, dtype=torch.float32))

    @property
    def n_levels(self) -> int:
        return int(self.thresholds.numel())

    def scores(self, user_emb: torch.Tensor, item_emb: torch.Tensor) -> torch.Tensor:
        """s_c per level from sub-embeddings (B, T, d): cumulative cosines if nested, else cos_c."""
        cos = (user_emb * item_emb).sum(dim=-1)
        return torch.cumsum(cos, dim=1) if self.nested else cos

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Cumulative logits l_c = γ_c·s_c − a_c, shape (B, T)."""
        s = self.scores(self.user_tower(users), self.item_tower(items))
        return self.gamma * s - self.thresholds


class GNOLREmbeddings:
    """A trained GNOLR reduced to its sub-embeddings: everything retrieval and serving need.

    ``users`` (n_users, T, d) and ``items`` (n_items, T, d) are the L2-normalised sub-embeddings.
    """

    def __init__(
        self,
        users: np.ndarray,
        items: np.ndarray,
        gamma: np.ndarray,
        thresholds: np.ndarray,
        nested: bool = True,
    ) -> None:
        if users.ndim != 3 or items.ndim != 3 or users.shape[1:] != items.shape[1:]:
            raise ValueError(
                f"sub-embeddings must be (n, T, d) on both sides, got {users.shape}, {items.shape}"
            )
        self.users = users.astype(np.float32)
        self.items = items.astype(np.float32)
        self.gamma = np.asarray(gamma, dtype=np.float64)
        self.thresholds = np.asarray(thresholds, dtype=np.float64)
        self.nested = nested

    @property
    def n_levels(self) -> int:
        return self.users.shape[1]

    def logits(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """l_c = γ_c·s_c − a_c of aligned (user, item) index pairs, shape (n, T)."""
        cos = np.einsum("ntd,ntd->nt", self.users[users], self.items[items]).astype(np.float64)
        s = np.cumsum(cos, axis=1) if self.nested else cos
        return self.gamma * s - self.thresholds

    def probabilities(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """P(k > c) for aligned pairs, shape (n, T)."""
        return 1.0 / (1.0 + np.exp(-self.logits(users, items)))

    def item_vectors(self) -> np.ndarray:
        """Item side of the one index: E_i^T (nested) or e_i^T, float32 (n_items, D)."""
        vec = self.items.reshape(len(self.items), -1) if self.nested else self.items[:, -1]
        return np.ascontiguousarray(vec, dtype=np.float32)

    def user_vectors(self, users: np.ndarray | None = None) -> np.ndarray:
        """Query side, scaled by γ_T so that <query, item vector> + (−a_T) is the deepest logit."""
        emb = self.users if users is None else self.users[users]
        vec = emb.reshape(len(emb), -1) if self.nested else emb[:, -1]
        return np.ascontiguousarray(vec * self.gamma[-1], dtype=np.float32)

    def save(self, path) -> None:
        np.savez(
            path,
            users=self.users,
            items=self.items,
            gamma=self.gamma,
            thresholds=self.thresholds,
            nested=np.array(self.nested),
        )

    @classmethod
    def load(cls, path) -> GNOLREmbeddings:
        with np.load(path) as z:
            return cls(z["users"], z["items"], z["gamma"], z["thresholds"], bool(z["nested"]))

    @classmethod
    @torch.no_grad()
    def from_model(cls, model: GNOLR, batch_size: int = 65536) -> GNOLREmbeddings:
        model = model.eval()
        device = model.thresholds.device

        def embed(tower: Tower) -> np.ndarray:
            n = tower.embedding.num_embeddings
            parts = [
                tower(torch.arange(i, min(i + batch_size, n), device=device)).cpu().numpy()
                for i in range(0, n, batch_size)
            ]
            return np.concatenate(parts)

        return cls(
            embed(model.user_tower),
            embed(model.item_tower),
            model.gamma.cpu().numpy(),
            model.thresholds.cpu().numpy(),
            model.nested,
        )
