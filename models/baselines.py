"""Baselines evaluated under GNOLR's protocol: popularity, per-level BCE two-towers, MF with BPR.

Every model here, and :class:`models.gnolr.GNOLREmbeddings`, is a *scorer*: ``logits(users, items)``
gives one score per level (monotone in P(level ≥ c)) and ``level_vectors(c)`` gives the (query,
item) vectors whose inner product ranks the catalogue for level c through the shared retrieval path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from models.gnolr.network import GNOLREmbeddings


class Scorer(Protocol):
    n_levels: int

    def logits(self, users: np.ndarray, items: np.ndarray) -> np.ndarray: ...

    def level_vectors(self, level: int) -> tuple[np.ndarray, np.ndarray]: ...


def popularity_counts(
    items: np.ndarray, levels: np.ndarray, n_items: int, n_levels: int
) -> np.ndarray:
    """counts[i, c−1] = training rows of item i with level ≥ c, shape (n_items, T)."""
    counts = np.zeros((n_items, n_levels), dtype=np.float64)
    for c in range(1, n_levels + 1):
        counts[:, c - 1] = np.bincount(items[levels >= c], minlength=n_items)
    return counts


def popularity_order(counts: np.ndarray) -> np.ndarray:
    """Item indices by ``counts`` (n_items,), most popular first; ties go to the lower index."""
    counts = np.asarray(counts)
    return np.lexsort((np.arange(counts.size), -counts))


class PopularityScorer:
    """Score of item i at level c = its training count at level ≥ c, the same for every user."""

    def __init__(self, counts: np.ndarray, n_users: int) -> None:
        self.counts = np.asarray(counts, dtype=np.float64)  # (n_items, T)
        self.n_levels = self.counts.shape[1]
        self.n_users = n_users

    def logits(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.counts[items]

    def level_vectors(self, level: int) -> tuple[np.ndarray, np.ndarray]:
        users = np.ones((self.n_users, 1), np.float32)
        return users, np.ascontiguousarray(self.counts[:, level : level + 1], dtype=np.float32)


class PerLevelScorer:
    """T independent single-level models (one BCE two-tower per level, the usual industry set-up)."""

    def __init__(self, models: Sequence[GNOLREmbeddings]) -> None:
        if any(m.n_levels != 1 for m in models):
            raise ValueError("each per-level model must have exactly one level")
        self.models = list(models)
        self.n_levels = len(models)

    def logits(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return np.concatenate([m.logits(users, items) for m in self.models], axis=1)

    def level_vectors(self, level: int) -> tuple[np.ndarray, np.ndarray]:
        return self.models[level].level_vectors(0)


class DotScorer:
    """One inner-product score for every level (matrix factorisation)."""

    def __init__(self, users: np.ndarray, items: np.ndarray, n_levels: int) -> None:
        self.users = np.ascontiguousarray(users, dtype=np.float32)
        self.items = np.ascontiguousarray(items, dtype=np.float32)
        self.n_levels = n_levels

    def logits(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        dot = np.einsum("nd,nd->n", self.users[users], self.items[items]).astype(np.float64)
        return np.repeat(dot[:, None], self.n_levels, axis=1)

    def level_vectors(self, level: int) -> tuple[np.ndarray, np.ndarray]:
        return self.users, self.items


class BPRConfig(BaseModel):
    """Matrix factorisation trained with Bayesian personalised ranking on level ≥ 1 pairs."""

    model_config = ConfigDict(extra="forbid")

    dim: int = Field(64, ge=1)
    lr: float = Field(0.01, gt=0)
    l2: float = Field(1e-5, ge=0, description="L2 penalty on the embeddings of each triple")
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(4096, ge=1)
    seed: int = 0


def fit_bpr(
    users: np.ndarray,
    items: np.ndarray,
    n_users: int,
    n_items: int,
    cfg: BPRConfig,
    n_levels: int = 1,
) -> DotScorer:
    """BPR: minimise −log σ(x_ui − x_uj) + λ(‖U_u‖² + ‖V_i‖² + ‖V_j‖²), j drawn uniformly.

    ``users``/``items`` are the positive pairs; x_ui = <U_u, V_i> + b_i (the item bias is folded into
    the vectors on export as an extra dimension, so retrieval stays a plain inner product).
    """
    gen = torch.Generator().manual_seed(cfg.seed)
    u_emb = torch.nn.Embedding(n_users, cfg.dim)
    i_emb = torch.nn.Embedding(n_items, cfg.dim)
    bias = torch.nn.Embedding(n_items, 1)
    for emb in (u_emb, i_emb):
        torch.nn.init.normal_(emb.weight, std=0.1, generator=gen)
    torch.nn.init.zeros_(bias.weight)
    params = [*u_emb.parameters(), *i_emb.parameters(), *bias.parameters()]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    pu = torch.as_tensor(np.asarray(users, dtype=np.int64))
    pi = torch.as_tensor(np.asarray(items, dtype=np.int64))
    for _ in range(cfg.epochs):
        order = torch.randperm(len(pu), generator=gen)
        for start in range(0, len(pu), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            u, i = pu[idx], pi[idx]
            j = torch.randint(0, n_items, (len(idx),), generator=gen)
            eu, ei, ej = u_emb(u), i_emb(i), i_emb(j)
            x = (eu * (ei - ej)).sum(1) + (bias(i) - bias(j)).squeeze(1)
            reg = cfg.l2 * (eu.pow(2).sum(1) + ei.pow(2).sum(1) + ej.pow(2).sum(1))
            loss = (torch.nn.functional.softplus(-x) + reg).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        user_vecs = torch.cat([u_emb.weight, torch.ones(n_users, 1)], dim=1).numpy()
        item_vecs = torch.cat([i_emb.weight, bias.weight], dim=1).numpy()
    return DotScorer(user_vecs, item_vecs, n_levels)
