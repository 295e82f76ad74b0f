"""GNOLR: one ordinal two-tower model for every feedback level (methods.md §1).

Each side has one id-embedding table shared by T per-level MLP heads; head c yields the
L2-normalised sub-embedding e^c. With nesting, ``s_c = Σ_{j≤c} cos(e_u^j, e_i^j)`` (the inner product
of the concatenations E^c = [e^1; …; e^c]) and ``P(k > c) = σ(γ_c·s_c − a_c)``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.gnolr.config import GNOLRConfig


class Tower(nn.Module):
    """One side of the two-tower model: id and side-feature embeddings, then per-level MLP heads.

    The input of the heads is ``x = emb(id) + Σ_f mean_{slots}(emb_f(code))``; ``features`` maps a
    feature name to its (n_ids, width) codes (0 = missing), kept as buffers so a batch needs ids only.
    """

    def __init__(
        self,
        n_ids: int,
        n_heads: int,
        cfg: GNOLRConfig,
        features: dict[str, np.ndarray] | None = None,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(n_ids, cfg.embedding_dim)
        nn.init.normal_(self.embedding.weight, std=0.1)
        self.id_dropout = cfg.id_dropout
        self.feature_names = sorted(features or {})
        self.feature_embeddings = nn.ModuleDict()
        for name in self.feature_names:
            codes = np.asarray(features[name], dtype=np.int64)
            if codes.ndim != 2 or len(codes) != n_ids:
                raise ValueError(
                    f"feature {name!r} must have shape ({n_ids}, width), got {codes.shape}"
                )
            table = nn.Embedding(int(codes.max()) + 1, cfg.embedding_dim, padding_idx=0)
            nn.init.normal_(table.weight, std=0.1)
            with torch.no_grad():
                table.weight[0].zero_()
            self.feature_embeddings[name] = table
            self.register_buffer(f"codes_{name}", torch.as_tensor(codes))
        widths = [cfg.embedding_dim, *cfg.hidden, cfg.dim]
        self.heads = nn.ModuleList()
        for _ in range(n_heads):
            layers: list[nn.Module] = []
            for w_in, w_out in zip(widths[:-1], widths[1:], strict=True):
                layers += [nn.Linear(w_in, w_out), nn.LeakyReLU()]
            self.heads.append(nn.Sequential(*layers[:-1]))

    def represent(
        self, ids: torch.Tensor | None, codes: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Head input for ``ids``; with ``ids=None`` (a cold entity) from ``codes`` alone."""
        if ids is None and not codes:
            raise ValueError("a cold entity needs its feature codes")
        x = None
        if ids is not None:
            x = self.embedding(ids)
            if self.training and self.id_dropout > 0:
                keep = torch.rand(x.shape[0], 1, device=x.device) >= self.id_dropout
                x = x * keep
        for name in self.feature_names:
            c = (
                codes[name]
                if codes is not None and name in codes
                else getattr(self, f"codes_{name}")[ids]
            )
            pooled = self.feature_embeddings[name](c).sum(1) / (c > 0).sum(1, keepdim=True).clamp(
                min=1
            )
            x = pooled if x is None else x + pooled
        return x

    def forward(
        self, ids: torch.Tensor | None, codes: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """L2-normalised sub-embeddings of every head, shape (B, H, d)."""
        x = self.represent(ids, codes)
        return F.normalize(torch.stack([head(x) for head in self.heads], dim=1), dim=-1)


def level_scores(cos: torch.Tensor, scoring: str, n_levels: int) -> torch.Tensor:
    """s_c per level from per-head cosines (B, H): cumulative, as is, or one cosine repeated."""
    if scoring == "nested":
        return torch.cumsum(cos, dim=1)
    if scoring == "shared":
        return cos[:, :1].expand(-1, n_levels)
    return cos


class GNOLR(nn.Module):
    """Two towers plus the cumulative-logit link ``l_c = γ_c·s_c − a_c``.

    Thresholds are fixed at a_c = −logit(p_c) or, with ``learned_thresholds``, parametrised as
    ``a = a_1 + [0, cumsum(exp(δ))]`` so they stay ordered while they learn.
    """

    def __init__(
        self,
        n_users: int,
        n_items: int,
        thresholds: np.ndarray,
        gamma: np.ndarray,
        cfg: GNOLRConfig,
        user_features: dict[str, np.ndarray] | None = None,
        item_features: dict[str, np.ndarray] | None = None,
    ) -> None:
        super().__init__()
        n_levels = len(thresholds)
        n_heads = 1 if cfg.scoring == "shared" else n_levels
        self.scoring = cfg.scoring
        self.user_tower = Tower(n_users, n_heads, cfg, user_features if cfg.use_features else None)
        self.item_tower = Tower(n_items, n_heads, cfg, item_features if cfg.use_features else None)
        base = torch.as_tensor(thresholds, dtype=torch.float32)
        self.register_buffer("base_thresholds", base)
        self.register_buffer("gamma", torch.as_tensor(gamma, dtype=torch.float32))
        self.learned = cfg.learned_thresholds
        if self.learned:
            self.a1 = nn.Parameter(base[:1].clone())
            self.log_gaps = nn.Parameter(torch.log(torch.clamp(torch.diff(base), min=1e-3)))

    @property
    def n_levels(self) -> int:
        return int(self.base_thresholds.numel())

    @property
    def thresholds(self) -> torch.Tensor:
        if not self.learned:
            return self.base_thresholds
        return torch.cat([self.a1, self.a1 + torch.cumsum(torch.exp(self.log_gaps), dim=0)])

    def embed(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.user_tower(users), self.item_tower(items)

    def logits_from(self, user_emb: torch.Tensor, item_emb: torch.Tensor) -> torch.Tensor:
        """l_c = γ_c·s_c − a_c from aligned sub-embeddings (B, H, d), shape (B, T)."""
        s = level_scores((user_emb * item_emb).sum(dim=-1), self.scoring, self.n_levels)
        return self.gamma * s - self.thresholds

    def level_vectors(
        self, user_emb: torch.Tensor, item_emb: torch.Tensor, level: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(query, item) vectors of 0-based ``level`` whose inner product is γ_c·s_c."""
        if self.scoring == "nested":
            u, i = user_emb[:, : level + 1].flatten(1), item_emb[:, : level + 1].flatten(1)
        else:
            head = 0 if self.scoring == "shared" else level
            u, i = user_emb[:, head], item_emb[:, head]
        return u * self.gamma[level], i

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Cumulative logits l_c, shape (B, T)."""
        return self.logits_from(*self.embed(users, items))


class GNOLREmbeddings:
    """A trained GNOLR reduced to its sub-embeddings: everything retrieval and serving need.

    ``users`` (n_users, H, d) and ``items`` (n_items, H, d) are the L2-normalised sub-embeddings
    (H = T heads, or 1 for shared scoring).
    """

    def __init__(
        self,
        users: np.ndarray,
        items: np.ndarray,
        gamma: np.ndarray,
        thresholds: np.ndarray,
        scoring: str = "nested",
    ) -> None:
        if users.ndim != 3 or items.ndim != 3 or users.shape[1:] != items.shape[1:]:
            raise ValueError(
                f"sub-embeddings must be (n, H, d) on both sides, got {users.shape}, {items.shape}"
            )
        self.users = users.astype(np.float32)
        self.items = items.astype(np.float32)
        self.gamma = np.asarray(gamma, dtype=np.float64)
        self.thresholds = np.asarray(thresholds, dtype=np.float64)
        self.scoring = scoring

    @property
    def n_levels(self) -> int:
        return len(self.thresholds)

    def logits(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """l_c = γ_c·s_c − a_c of aligned (user, item) index pairs, shape (n, T)."""
        cos = np.einsum("nhd,nhd->nh", self.users[users], self.items[items]).astype(np.float64)
        if self.scoring == "nested":
            s = np.cumsum(cos, axis=1)
        elif self.scoring == "shared":
            s = np.repeat(cos[:, :1], self.n_levels, axis=1)
        else:
            s = cos
        return self.gamma * s - self.thresholds

    def probabilities(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """P(k > c) for aligned pairs, shape (n, T)."""
        return 1.0 / (1.0 + np.exp(-self.logits(users, items)))

    def _heads(self, emb: np.ndarray, level: int) -> np.ndarray:
        """Level c's part of sub-embeddings (n, H, d) as flat vectors: the prefix E^c when nested,
        level c's own head when independent, the one head when shared."""
        if self.scoring == "nested":
            part = emb[:, : level + 1]
        else:
            part = emb[:, 0 if self.scoring == "shared" else level]
        return part.reshape(len(part), -1)

    def level_vectors(self, level: int) -> tuple[np.ndarray, np.ndarray]:
        """(user, item) vectors whose inner product is γ_c·s_c, for 0-based ``level`` c."""
        return (
            np.ascontiguousarray(self._heads(self.users, level) * self.gamma[level], np.float32),
            np.ascontiguousarray(self._heads(self.items, level), dtype=np.float32),
        )

    def item_vectors(self) -> np.ndarray:
        """Item side of the one serving index: the deepest level's vectors (E_i^T when nested)."""
        return self.level_vectors(self.n_levels - 1)[1]

    def user_vectors(self, users: np.ndarray | None = None) -> np.ndarray:
        """Query side, scaled by γ_T so that <query, item vector> − a_T is the deepest logit.

        Only the requested users are computed (a request must not cost O(n_users + n_items)).
        """
        level = self.n_levels - 1
        emb = self.users if users is None else self.users[np.atleast_1d(users)]
        return np.ascontiguousarray(self._heads(emb, level) * self.gamma[level], np.float32)

    def save(self, path) -> None:
        np.savez(
            path,
            users=self.users,
            items=self.items,
            gamma=self.gamma,
            thresholds=self.thresholds,
            scoring=np.array(self.scoring),
        )

    @classmethod
    def load(cls, path) -> GNOLREmbeddings:
        with np.load(path) as z:
            return cls(z["users"], z["items"], z["gamma"], z["thresholds"], str(z["scoring"]))

    @classmethod
    @torch.no_grad()
    def from_model(cls, model: GNOLR, batch_size: int = 65536) -> GNOLREmbeddings:
        model = model.eval()
        device = model.gamma.device

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
            model.thresholds.detach().cpu().numpy(),
            model.scoring,
        )
