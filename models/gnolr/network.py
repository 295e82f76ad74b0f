"""GNOLR: one ordinal two-tower model for every feedback level (methods.md §1).

Each side yields per head h an L2-normalised sub-embedding e^h: an id-embedding table shared by per-level
MLP heads (``tower: mlp``, with side features) or one id embedding per head (``tower: id``). The
logit of level c is a weighted sum of the head cosines, ``l_c = Σ_h W[c, h]·cos(e_u^h, e_i^h) − a_c
+ b_i^c``:

* ``scale: shared`` (the paper's form): W[c, h] = γ_c for h ≤ c when nested, so
  ``l_c = γ_c·s_c − a_c`` with ``s_c = Σ_{j≤c} cos_j``; the ordering needs the cap
  ``γ < a_{c+1} − a_c`` (config.py);
* ``scale: per_head``: W[c, h] = γ_h for h ≤ c, so ``l_c = Σ_{j≤c} γ_j·cos_j − a_c`` and
  ``l_c − l_{c+1} = (a_{c+1} − a_c) − γ_{c+1}·cos_{c+1}``: the ordering needs only
  ``γ_{c+1} < a_{c+1} − a_c``. γ_1 = exp(θ) is free; deeper scales are parametrised inside their
  bounds, ``γ_{c+1} = (a_{c+1} − a_c)·σ(ρ_{c+1})``, so no learned value can break the order;
* item bias: none, one b_i for every level (l_c − l_{c+1} unchanged), or per level inside the
  ordering bound (nested, per-head scales): ``b^{c+1} = b^c + (a_{c+1} − a_c − γ_{c+1}) −
  softplus(κ^{c+1})``, so ``l_c − l_{c+1} = γ_{c+1}(1 − cos_{c+1}) + softplus(κ^{c+1}) > 0``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.gnolr.config import GNOLRConfig
from models.optim import id_embedding


def _zero_rows(embedding: nn.Embedding, rows: np.ndarray | None) -> None:
    """Zero the rows of ``embedding`` where the mask ``rows`` is true (cold ids)."""
    if rows is not None and np.any(rows):
        with torch.no_grad():
            embedding.weight[torch.as_tensor(np.flatnonzero(rows))] = 0.0


class Tower(nn.Module):
    """One side of the two-tower model: id and side-feature embeddings, then per-level MLP heads.

    The input of the heads is ``x = emb(id) + Σ_f mean_{slots}(emb_f(code))``; ``features`` maps a
    feature name to its (n_ids, width) codes (0 = missing), kept as buffers so a batch needs ids only.
    ``cold`` ids (without any training row) get a zero id embedding that no step updates, so their
    input is their features alone — what a cold entity gets when served without an id.
    """

    def __init__(
        self,
        n_ids: int,
        n_heads: int,
        cfg: GNOLRConfig,
        features: dict[str, np.ndarray] | None = None,
        cold: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        self.embedding = id_embedding(n_ids, cfg.embedding_dim)
        nn.init.normal_(self.embedding.weight, std=0.1)
        _zero_rows(self.embedding, cold)
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

    def raw(
        self, ids: torch.Tensor | None, codes: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Head outputs before normalisation, shape (B, H, d)."""
        x = self.represent(ids, codes)
        return torch.stack([head(x) for head in self.heads], dim=1)

    def forward(
        self, ids: torch.Tensor | None, codes: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """L2-normalised sub-embeddings of every head, shape (B, H, d)."""
        return F.normalize(self.raw(ids, codes), dim=-1)

    @property
    def n_ids(self) -> int:
        return self.embedding.num_embeddings


class IdTower(nn.Module):
    """One id embedding per head and nothing else (``tower: id``): the plain retrieval tower.

    ``cold`` ids (those without any training row) start at zero and get no gradient, so their
    cosines are 0 and they are ranked by the item bias alone rather than by a random vector.
    """

    def __init__(self, n_ids: int, n_heads: int, dim: int, cold: np.ndarray | None = None) -> None:
        super().__init__()
        self.n_heads, self.dim = n_heads, dim
        self.embedding = id_embedding(n_ids, n_heads * dim)
        nn.init.normal_(self.embedding.weight, std=0.1)
        _zero_rows(self.embedding, cold)

    @property
    def n_ids(self) -> int:
        return self.embedding.num_embeddings

    def raw(self, ids: torch.Tensor, codes=None) -> torch.Tensor:
        return self.embedding(ids).view(-1, self.n_heads, self.dim)

    def forward(self, ids: torch.Tensor, codes=None) -> torch.Tensor:
        return F.normalize(self.raw(ids), dim=-1)


def level_scores(cos: torch.Tensor, scoring: str, n_levels: int) -> torch.Tensor:
    """s_c per level from per-head cosines (B, H): cumulative, as is, or one cosine repeated."""
    if scoring == "nested":
        return torch.cumsum(cos, dim=1)
    if scoring == "shared":
        return cos[:, :1].expand(-1, n_levels)
    return cos


def level_weights(
    scales: np.ndarray | torch.Tensor, n_levels: int, scoring: str, scale: str
) -> np.ndarray | torch.Tensor:
    """W (T, H): ``l_c = Σ_h W[c, h]·cos_h − a_c + b^c``.

    ``scale = shared``: ``scales`` are γ per level (T,), W[c, h] = γ_c on the heads of level c
    (h ≤ c nested, h = c independent, the one head when shared). ``scale = per_head``: ``scales``
    are γ per head (H,), W[c, h] = γ_h on the same heads.
    """
    n_heads = 1 if scoring == "shared" else n_levels
    if isinstance(scales, torch.Tensor):  # on the scales' device (a GPU in training)
        c = torch.arange(n_levels, device=scales.device)[:, None]
        h = torch.arange(n_heads, device=scales.device)[None, :]
    else:
        c, h = np.arange(n_levels)[:, None], np.arange(n_heads)[None, :]
    if scoring == "nested":
        mask = h <= c
    elif scoring == "independent":
        mask = h == c
    else:
        mask = (c >= 0) & (h == 0)
    w = scales[:, None] * mask if scale == "shared" else scales[None, :] * mask
    return w * 1.0


def level_heads(level: int, scoring: str) -> slice:
    """The heads whose cosines enter level ``level``'s logit (0-based)."""
    if scoring == "nested":
        return slice(0, level + 1)
    if scoring == "independent":
        return slice(level, level + 1)
    return slice(0, 1)


class GNOLR(nn.Module):
    """Two towers plus the cumulative-logit link ``l_c = Σ_h W[c, h]·cos_h − a_c + b_i^c``.

    Thresholds are fixed at a_c = −logit(p_c) or, with ``learned_thresholds``, parametrised as
    ``a = a_1 + [0, cumsum(exp(δ))]`` so they stay ordered while they learn. ``gamma``: γ per level
    (T,) for ``scale: shared``; the initial γ per head (H,) for ``scale: per_head`` (deeper heads
    must lie inside their bounds). ``cold_users``: users without training rows (a zero id
    embedding in either tower: with ``tower: id`` a zero vector, with ``mlp`` their features alone).
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
        cold_users: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        n_levels = len(thresholds)
        n_heads = 1 if cfg.scoring == "shared" else n_levels
        self.scoring = cfg.scoring
        self.scale = cfg.scale
        self.ordered = cfg.loss not in ("bce", "ips")
        if cfg.tower == "id":
            self.user_tower: nn.Module = IdTower(n_users, n_heads, cfg.dim, cold_users)
            self.item_tower: nn.Module = IdTower(n_items, n_heads, cfg.dim)
        else:
            uf = user_features if cfg.use_features else None
            self.user_tower = Tower(n_users, n_heads, cfg, uf, cold_users)
            self.item_tower = Tower(
                n_items, n_heads, cfg, item_features if cfg.use_features else None
            )
        self.dropout = nn.Dropout(cfg.dropout)
        base = torch.as_tensor(thresholds, dtype=torch.float32)
        self.register_buffer("base_thresholds", base)
        self.learned = cfg.learned_thresholds
        if self.learned:
            self.a1 = nn.Parameter(base[:1].clone())
            self.log_gaps = nn.Parameter(torch.log(torch.clamp(torch.diff(base), min=1e-3)))
        g = torch.as_tensor(np.asarray(gamma, dtype=np.float64), dtype=torch.float32)
        if self.scale == "shared":
            self.register_buffer("gamma", g)
        else:
            self._init_head_scales(g, n_heads, cfg.learn_gamma)
        self.item_bias = cfg.item_bias
        if cfg.item_bias != "none":
            self.bias = nn.Parameter(torch.zeros(n_items))
        if cfg.item_bias == "per_level" and n_levels > 1:
            # softplus(κ) = the initial slack: deeper biases start equal to b^1
            slack = (torch.diff(base) - self.head_scales()[1:]).detach().clamp(min=1e-3)
            self.kappa = nn.Parameter(torch.log(torch.expm1(slack))[:, None].repeat(1, n_items))

    def _init_head_scales(self, g: torch.Tensor, n_heads: int, learn: bool) -> None:
        nested_ordered = self.scoring == "nested" and self.ordered
        n_free = 1 if nested_ordered else n_heads
        if g.numel() != n_heads:
            raise ValueError(f"per-head scales need {n_heads} initial values, got {g.numel()}")
        self.log_gamma = nn.Parameter(torch.log(g[:n_free]).clone(), requires_grad=learn)
        if nested_ordered and n_heads > 1:
            frac = g[1:] / torch.diff(self.base_thresholds)
            if torch.any((frac <= 0) | (frac >= 1)):
                raise ValueError("a deeper head's initial scale must lie inside (0, a_{c+1} − a_c)")
            self.rho = nn.Parameter(torch.logit(frac), requires_grad=learn)

    @property
    def n_levels(self) -> int:
        return int(self.base_thresholds.numel())

    @property
    def thresholds(self) -> torch.Tensor:
        if not self.learned:
            return self.base_thresholds
        return torch.cat([self.a1, self.a1 + torch.cumsum(torch.exp(self.log_gaps), dim=0)])

    def head_scales(self) -> torch.Tensor:
        """γ per head (per_head scales): γ_1 = exp(θ); nested, ordered: γ_{c+1} = (a_{c+1} − a_c)·σ(ρ)."""
        if self.scale == "shared":
            raise ValueError("shared scales are per level: use .gamma")
        first = torch.exp(self.log_gamma)
        if not hasattr(self, "rho"):
            return first
        return torch.cat([first, torch.diff(self.thresholds) * torch.sigmoid(self.rho)])

    def scales(self) -> torch.Tensor:
        """γ per level (shared) or per head (per_head), the argument of :func:`level_weights`."""
        return self.gamma if self.scale == "shared" else self.head_scales()

    def weights(self) -> torch.Tensor:
        return level_weights(self.scales(), self.n_levels, self.scoring, self.scale)

    def item_biases(self, items: torch.Tensor | None = None) -> torch.Tensor | None:
        """b_i^c of ``items`` (all items when None), shape (n, T); None without item bias."""
        if self.item_bias == "none":
            return None
        b = self.bias if items is None else self.bias.index_select(0, items)
        if not hasattr(self, "kappa"):
            return b[:, None].expand(-1, self.n_levels)
        kappa = self.kappa if items is None else self.kappa.index_select(1, items)
        slack = (torch.diff(self.thresholds) - self.head_scales()[1:])[:, None]
        steps = slack - F.softplus(kappa)  # (T−1, n)
        return torch.cumsum(torch.cat([b[None, :], steps]), dim=0).T

    def side(self, tower: nn.Module, ids: torch.Tensor) -> torch.Tensor:
        """Normalised sub-embeddings (B, H, d), dropout on the head outputs in training."""
        return F.normalize(self.dropout(tower.raw(ids)), dim=-1)

    def embed(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.side(self.user_tower, users), self.side(self.item_tower, items)

    def logits_from(
        self, user_emb: torch.Tensor, item_emb: torch.Tensor, items: torch.Tensor | None = None
    ) -> torch.Tensor:
        """l_c of aligned sub-embeddings (B, H, d) (and item indices, for the bias), shape (B, T)."""
        cos = (user_emb * item_emb).sum(dim=-1)
        out = cos @ self.weights().T - self.thresholds
        bias = None if items is None else self.item_biases(items)
        return out if bias is None else out + bias

    def catalogue_logits(self, user_emb: torch.Tensor, item_emb: torch.Tensor) -> torch.Tensor:
        """l_c of every user × every item of ``item_emb`` (all items, in index order), (B, T, N)."""
        cos = torch.einsum("bhd,nhd->bhn", user_emb, item_emb)
        out = torch.einsum("ch,bhn->bcn", self.weights(), cos) - self.thresholds[None, :, None]
        bias = self.item_biases()
        return out if bias is None else out + bias.T[None]

    def level_vectors(
        self, user_emb: torch.Tensor, item_emb: torch.Tensor, level: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(query, item) vectors of 0-based ``level`` whose inner product is l_c + a_c − b_i^c."""
        h = level_heads(level, self.scoring)
        w = self.weights()[level, h]
        return (user_emb[:, h] * w[None, :, None]).flatten(1), item_emb[:, h].flatten(1)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Cumulative logits l_c, shape (B, T)."""
        return self.logits_from(*self.embed(users, items), items)


class GNOLREmbeddings:
    """A trained GNOLR reduced to its sub-embeddings: everything retrieval and serving need.

    ``users`` (n_users, H, d) and ``items`` (n_items, H, d) are the L2-normalised sub-embeddings
    (H = T heads, or 1 for shared scoring); ``gamma`` γ per level (``scale = shared``) or per head
    (``per_head``); ``item_bias`` (n_items, T) b_i^c or None.
    """

    def __init__(
        self,
        users: np.ndarray,
        items: np.ndarray,
        gamma: np.ndarray,
        thresholds: np.ndarray,
        scoring: str = "nested",
        scale: str = "shared",
        item_bias: np.ndarray | None = None,
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
        self.scale = scale
        self.item_bias = None if item_bias is None else np.asarray(item_bias, dtype=np.float64)
        if self.item_bias is not None and self.item_bias.shape != (len(items), self.n_levels):
            raise ValueError(f"item_bias must be (n_items, T), got {self.item_bias.shape}")
        self.weights = np.asarray(
            level_weights(self.gamma, self.n_levels, scoring, scale), dtype=np.float64
        )

    @property
    def n_levels(self) -> int:
        return len(self.thresholds)

    def with_users(self, users: np.ndarray) -> GNOLREmbeddings:
        """The same item side and link with other user sub-embeddings (e.g. a cold pseudo-user)."""
        return GNOLREmbeddings(
            users, self.items, self.gamma, self.thresholds, self.scoring, self.scale, self.item_bias
        )

    def logits(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """l_c of aligned (user, item) index pairs, shape (n, T)."""
        cos = np.einsum("nhd,nhd->nh", self.users[users], self.items[items]).astype(np.float64)
        out = cos @ self.weights.T - self.thresholds
        return out if self.item_bias is None else out + self.item_bias[items]

    def probabilities(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """P(k > c) for aligned pairs, shape (n, T)."""
        return 1.0 / (1.0 + np.exp(-self.logits(users, items)))

    def _query(self, emb: np.ndarray, level: int) -> np.ndarray:
        h = level_heads(level, self.scoring)
        q = (emb[:, h] * self.weights[level, h][None, :, None]).reshape(len(emb), -1)
        if self.item_bias is not None:
            q = np.concatenate([q, np.ones((len(emb), 1))], axis=1)
        return np.ascontiguousarray(q, dtype=np.float32)

    def level_vectors(self, level: int) -> tuple[np.ndarray, np.ndarray]:
        """(user, item) vectors whose inner product is l_c + a_c, for 0-based ``level`` c: the heads
        of level c (the prefix E^c when nested) weighted on the user side, plus the item bias as an
        extra dimension (user side 1) when there is one."""
        h = level_heads(level, self.scoring)
        v = self.items[:, h].reshape(len(self.items), -1)
        if self.item_bias is not None:
            v = np.concatenate([v, self.item_bias[:, level : level + 1]], axis=1)
        return self._query(self.users, level), np.ascontiguousarray(v, dtype=np.float32)

    def item_vectors(self) -> np.ndarray:
        """Item side of the one serving index: the deepest level's vectors (E_i^T when nested)."""
        return self.level_vectors(self.n_levels - 1)[1]

    def user_vectors(self, users: np.ndarray | None = None) -> np.ndarray:
        """Query side of the deepest level: <query, item vector> − a_T is the deepest logit.

        Only the requested users are computed (a request must not cost O(n_users + n_items)).
        """
        emb = self.users if users is None else self.users[np.atleast_1d(users)]
        return self._query(emb, self.n_levels - 1)

    def save(self, path) -> None:
        extra = {} if self.item_bias is None else {"item_bias": self.item_bias}
        np.savez(
            path,
            users=self.users,
            items=self.items,
            gamma=self.gamma,
            thresholds=self.thresholds,
            scoring=np.array(self.scoring),
            scale=np.array(self.scale),
            **extra,
        )

    @classmethod
    def load(cls, path) -> GNOLREmbeddings:
        with np.load(path) as z:
            return cls(
                z["users"],
                z["items"],
                z["gamma"],
                z["thresholds"],
                str(z["scoring"]),
                str(z["scale"]) if "scale" in z else "shared",
                z.get("item_bias", None),
            )

    @classmethod
    @torch.no_grad()
    def from_model(cls, model: GNOLR, batch_size: int = 65536) -> GNOLREmbeddings:
        model = model.eval()
        device = model.base_thresholds.device

        def embed(tower: nn.Module) -> np.ndarray:
            n = tower.n_ids
            parts = [
                tower(torch.arange(i, min(i + batch_size, n), device=device)).cpu().numpy()
                for i in range(0, n, batch_size)
            ]
            return np.concatenate(parts)

        bias = model.item_biases()
        return cls(
            embed(model.user_tower),
            embed(model.item_tower),
            model.scales().detach().cpu().numpy(),
            model.thresholds.detach().cpu().numpy(),
            model.scoring,
            model.scale,
            None if bias is None else bias.detach().cpu().numpy(),
        )
