"""P[Love]: a reward model of the love reaction per impression (methods.md §3).

Inputs of an impression (u, i, p): user and item ids, the user's activity bucket and the item's
popularity bucket (quantiles of training impressions, 0 = unseen) and the slate position p as
context. Each head h is a factorisation machine restricted to those fields:

    l_h(u, i, p) = <x_u^h, y_i^h> + b_u^h + b_i^h + c_p^h + b^h,
    x_u = E_user[u] + E_activity[bucket(u)],   y_i = E_item[i] + E_popularity[bucket(i)].

``factorised`` (default) uses two heads, P[Love] = σ(l_click)·σ(l_love|click), mirroring the funnel
"a love needs a click", so the ten times more frequent clicks (auxiliary BCE, weight
``click_weight``) teach the first factor; otherwise one head, P[Love] = σ(l). The love term is the
BCE of P[Love] itself. With negatives down-sampled at rate w the raw logit is corrected by + log w
(features.love_labels), then a calibrator fitted on held-out, unsampled data maps it to P[Love].
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.optim import id_embedding
from models.plove.calibration import Calibrator, Identity, calibrator_from_dict
from models.plove.config import PLoveConfig


def log1mexp(a: torch.Tensor) -> torch.Tensor:
    """log(1 − eᵃ) for a < 0, accurate at both ends (Mächler, 2012)."""
    a = a.clamp(max=-1e-7)
    return torch.where(a > -0.6931, torch.log(-torch.expm1(a)), torch.log1p(-torch.exp(a)))


class PLoveNet(nn.Module):
    """Head logits l_h(u, i, p), shape (B, H); H = 2 (click, love|click) or 1."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        user_buckets: np.ndarray,
        item_buckets: np.ndarray,
        cfg: PLoveConfig,
        head_bias: np.ndarray,
    ) -> None:
        super().__init__()
        self.n_heads = 2 if cfg.factorised else 1
        if len(head_bias) != self.n_heads:
            raise ValueError(f"need {self.n_heads} head biases, got {len(head_bias)}")
        self.dim = cfg.dim
        self.max_position = cfg.max_position
        width = self.n_heads * cfg.dim
        self.register_buffer("user_bucket", torch.as_tensor(user_buckets, dtype=torch.long))
        self.register_buffer("item_bucket", torch.as_tensor(item_buckets, dtype=torch.long))
        n_ub, n_ib = int(user_buckets.max()) + 1, int(item_buckets.max()) + 1
        self.user = id_embedding(n_users, width)
        self.item = id_embedding(n_items, width)
        self.activity = nn.Embedding(n_ub, width)
        self.popularity = nn.Embedding(n_ib, width)
        for table in (self.user, self.item, self.activity, self.popularity):
            nn.init.normal_(table.weight, std=0.01)
        self.user_bias = id_embedding(n_users, self.n_heads)
        self.item_bias = id_embedding(n_items, self.n_heads)
        self.activity_bias = nn.Embedding(n_ub, self.n_heads)
        self.popularity_bias = nn.Embedding(n_ib, self.n_heads)
        self.position_bias = nn.Embedding(cfg.max_position, self.n_heads)
        for table in (
            self.user_bias,
            self.item_bias,
            self.activity_bias,
            self.popularity_bias,
            self.position_bias,
        ):
            nn.init.zeros_(table.weight)
        self.bias = nn.Parameter(torch.as_tensor(head_bias, dtype=torch.float32))

    def sides(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_u, y_i) reshaped to (B, H, d)."""
        x = self.user(users) + self.activity(self.user_bucket[users])
        y = self.item(items) + self.popularity(self.item_bucket[items])
        return x.view(-1, self.n_heads, self.dim), y.view(-1, self.n_heads, self.dim)

    def forward(
        self, users: torch.Tensor, items: torch.Tensor, positions: torch.Tensor
    ) -> torch.Tensor:
        x, y = self.sides(users, items)
        pos = positions.clamp(0, self.max_position - 1)
        return (
            (x * y).sum(-1)
            + self.user_bias(users)
            + self.activity_bias(self.user_bucket[users])
            + self.item_bias(items)
            + self.popularity_bias(self.item_bucket[items])
            + self.position_bias(pos)
            + self.bias
        )


def love_log_prob(head_logits: torch.Tensor) -> torch.Tensor:
    """log P[Love] = Σ_h log σ(l_h) (product of the heads), shape (B,)."""
    return F.logsigmoid(head_logits).sum(-1)


@dataclass
class PLoveScorer:
    """A trained P[Love] reduced to numpy arrays plus its calibrator: what evaluation and serving need.

    Shapes: ``user_vectors`` (H, n_users, d), ``item_vectors`` (H, n_items, d), ``user_bias``
    (H, n_users), ``item_bias`` (H, n_items), ``position_bias`` (H, max_position), ``bias`` (H,).
    """

    user_vectors: np.ndarray
    item_vectors: np.ndarray
    user_bias: np.ndarray
    item_bias: np.ndarray
    position_bias: np.ndarray
    bias: np.ndarray
    negative_rate: float = 1.0
    calibrator: Calibrator = field(default_factory=Identity)
    user_buckets: np.ndarray | None = None
    item_buckets: np.ndarray | None = None

    @property
    def n_heads(self) -> int:
        return self.bias.shape[0]

    @property
    def n_users(self) -> int:
        return self.user_vectors.shape[1]

    @property
    def n_items(self) -> int:
        return self.item_vectors.shape[1]

    def _positions(self, positions: np.ndarray | int) -> np.ndarray:
        return np.clip(np.asarray(positions, dtype=np.int64), 0, self.position_bias.shape[1] - 1)

    @staticmethod
    def _to_logit(heads: np.ndarray) -> np.ndarray:
        """logit of Π_h σ(l_h) from head logits stacked on axis 0."""
        log_p = -np.logaddexp(0.0, -heads).sum(axis=0)
        log_p = np.minimum(log_p, -1e-12)
        return log_p - np.log(-np.expm1(log_p))

    def raw_logit(
        self, users: np.ndarray, items: np.ndarray, positions: np.ndarray | int = 0
    ) -> np.ndarray:
        """Uncalibrated logit of P[Love] of aligned (user, item, position), corrected by + log w."""
        users, items = np.asarray(users), np.asarray(items)
        if users.shape != items.shape:
            raise ValueError(f"users and items must be aligned, got {users.shape}, {items.shape}")
        positions = np.broadcast_to(self._positions(positions), users.shape)
        heads = (
            np.einsum("hnd,hnd->hn", self.user_vectors[:, users], self.item_vectors[:, items])
            + self.user_bias[:, users]
            + self.item_bias[:, items]
            + self.position_bias[:, positions]
            + self.bias[:, None]
        )
        return self._to_logit(heads.astype(np.float64)) + np.log(self.negative_rate)

    def raw_logit_matrix(
        self, users: np.ndarray, items: np.ndarray | None = None, position: int = 0
    ) -> np.ndarray:
        """Uncalibrated logits of ``users`` × ``items`` (default: every item) at one position."""
        items = np.arange(self.n_items) if items is None else np.asarray(items)
        users = np.asarray(users)
        pos = self._positions(position)
        heads = (
            np.einsum("hud,hid->hui", self.user_vectors[:, users], self.item_vectors[:, items])
            + self.user_bias[:, users, None]
            + self.item_bias[:, None, items]
            + (self.position_bias[:, pos] + self.bias)[:, None, None]
        )
        return self._to_logit(heads.astype(np.float64)) + np.log(self.negative_rate)

    def predict(
        self, users: np.ndarray, items: np.ndarray, positions: np.ndarray | int = 0
    ) -> np.ndarray:
        """Calibrated P[Love] of aligned (user, item, position) triples."""
        return self.calibrator.predict(self.raw_logit(users, items, positions))

    def predict_matrix(
        self, users: np.ndarray, items: np.ndarray | None = None, position: int = 0
    ) -> np.ndarray:
        """Calibrated P[Love] of ``users`` × ``items`` at ``position``, shape (U, n_items)."""
        raw = self.raw_logit_matrix(users, items, position)
        return self.calibrator.predict(raw.ravel()).reshape(raw.shape)

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        arrays = {
            k: getattr(self, k)
            for k in (
                "user_vectors",
                "item_vectors",
                "user_bias",
                "item_bias",
                "position_bias",
                "bias",
            )
        }
        for k in ("user_buckets", "item_buckets"):
            if getattr(self, k) is not None:
                arrays[k] = getattr(self, k)
        np.savez(directory / "scorer.npz", negative_rate=np.array(self.negative_rate), **arrays)
        (directory / "calibrator.json").write_text(json.dumps(self.calibrator.to_dict()))

    @classmethod
    def load(cls, directory: str | Path) -> PLoveScorer:
        directory = Path(directory)
        with np.load(directory / "scorer.npz") as z:
            arrays = {k: z[k] for k in z.files}
        rate = float(arrays.pop("negative_rate"))
        calibrator = calibrator_from_dict(json.loads((directory / "calibrator.json").read_text()))
        return cls(**arrays, negative_rate=rate, calibrator=calibrator)

    @classmethod
    @torch.no_grad()
    def from_model(cls, model: PLoveNet, negative_rate: float) -> PLoveScorer:
        model = model.eval().cpu()
        h, d = model.n_heads, model.dim
        ub, ib = model.user_bucket, model.item_bucket
        users = model.user.weight + model.activity(ub)
        items = model.item.weight + model.popularity(ib)
        return cls(
            user_vectors=users.view(-1, h, d).permute(1, 0, 2).numpy().copy(),
            item_vectors=items.view(-1, h, d).permute(1, 0, 2).numpy().copy(),
            user_bias=(model.user_bias.weight + model.activity_bias(ub)).T.numpy().copy(),
            item_bias=(model.item_bias.weight + model.popularity_bias(ib)).T.numpy().copy(),
            position_bias=model.position_bias.weight.T.numpy().copy(),
            bias=model.bias.numpy().copy(),
            negative_rate=negative_rate,
            user_buckets=ub.numpy().copy(),
            item_buckets=ib.numpy().copy(),
        )
