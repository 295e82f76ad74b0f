"""Matrix factorisation trained with the Rel-MF loss (methods.md §2), with Lightning.

Model: ``R̂_ui = σ(z_ui)``, ``z_ui = <U_u, V_i> + b_u + b_i + b``. Training minimises the configured
Rel-MF loss (:func:`models.relmf.loss.relmf_loss`) over *all* (user, item) pairs D = users × items, with
``Y_ui = 1`` for the training positives and ``Y_ui = 0`` for every other pair. A batch is a block of
users against the whole catalogue (dense rows built from the positives' CSR), so every epoch sees
D exactly once without sampling unlabeled pairs — cheap while n_users × n_items fits in memory a
block at a time (the catalogue sizes of this project); sampling unlabeled pairs would be the next
step for far larger catalogues.

Propensity θ: an array over the full item index, shape (n_items,), or per pair, shape
(n_users, n_items). It must be the *exposure* probability P(O_ui = 1) of the pair over the training
period — e.g. the item estimate ``(n_i / max_j n_j)^η`` of :mod:`features.propensity`, or an oracle
from a simulator. A logged per-slot serving probability π(i | request) is *not* that (it is about one
slot of one request, ~1/n_items), and using it as θ would divide positives by ~1e-3.

Export: :class:`MFEmbeddings` with query vectors ``[U_u, 1]`` and item vectors ``[V_i, b_i]``: their
inner product is z_ui up to the per-user constant b_u + b, so it ranks items exactly like R̂ through
:class:`serving.retrieval.Retriever`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.optim import id_embedding


class MatrixFactorization(nn.Module):
    """Logits ``z_ui = <U_u, V_i> + b_u + b_i + b`` (biases start at zero, b at ``global_bias``)."""

    def __init__(
        self, n_users: int, n_items: int, dim: int, init_std: float = 0.1, global_bias: float = 0.0
    ) -> None:
        super().__init__()
        self.user = id_embedding(n_users, dim)  # looked up per user block: sparse gradients
        self.item = nn.Embedding(n_items, dim)  # every block scores all items: dense
        self.user_bias = id_embedding(n_users, 1)
        self.item_bias = nn.Embedding(n_items, 1)
        self.global_bias = nn.Parameter(torch.tensor(float(global_bias)))
        for emb in (self.user, self.item):
            nn.init.normal_(emb.weight, std=init_std)
        for emb in (self.user_bias, self.item_bias):
            nn.init.zeros_(emb.weight)

    @property
    def n_items(self) -> int:
        return self.item.num_embeddings

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """z of aligned pairs, shape (B,)."""
        dot = (self.user(users) * self.item(items)).sum(-1)
        bias = self.user_bias(users).squeeze(-1) + self.item_bias(items).squeeze(-1)
        return dot + bias + self.global_bias

    def score_users(self, users: torch.Tensor) -> torch.Tensor:
        """z of ``users`` against every item, shape (B, n_items)."""
        dot = self.user(users) @ self.item.weight.T
        return dot + self.user_bias(users) + self.item_bias.weight.T + self.global_bias


class MFEmbeddings:
    """A trained MF reduced to arrays: logits for any pair and vectors for the retrieval path.

    Follows the scorer protocol of :mod:`models.baselines` (``n_levels``, ``logits``,
    ``level_vectors``): one score serves every level, like any single-target model.
    """

    def __init__(
        self,
        user_factors: np.ndarray,
        item_factors: np.ndarray,
        user_bias: np.ndarray,
        item_bias: np.ndarray,
        global_bias: float,
        n_levels: int = 1,
    ) -> None:
        if user_factors.ndim != 2 or item_factors.ndim != 2:
            raise ValueError("factors must be (n, d) matrices")
        if user_factors.shape[1] != item_factors.shape[1]:
            raise ValueError(f"factor sizes differ: {user_factors.shape}, {item_factors.shape}")
        self.user_factors = np.asarray(user_factors, np.float32)
        self.item_factors = np.asarray(item_factors, np.float32)
        self.user_bias = np.asarray(user_bias, np.float32).reshape(-1)
        self.item_bias = np.asarray(item_bias, np.float32).reshape(-1)
        self.global_bias = float(global_bias)
        self.n_levels = int(n_levels)

    @classmethod
    def from_model(cls, model: MatrixFactorization, n_levels: int = 1) -> MFEmbeddings:
        with torch.no_grad():
            return cls(
                model.user.weight.detach().cpu().numpy(),
                model.item.weight.detach().cpu().numpy(),
                model.user_bias.weight.detach().cpu().numpy(),
                model.item_bias.weight.detach().cpu().numpy(),
                float(model.global_bias.detach().cpu()),
                n_levels,
            )

    def scores(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """z of aligned pairs, shape (n,)."""
        dot = np.einsum("nd,nd->n", self.user_factors[users], self.item_factors[items])
        return (dot + self.user_bias[users] + self.item_bias[items] + self.global_bias).astype(
            np.float64
        )

    def logits(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """z of aligned pairs repeated for every level, shape (n, n_levels)."""
        return np.repeat(self.scores(users, items)[:, None], self.n_levels, axis=1)

    def probabilities(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """R̂ = σ(z) of aligned pairs, shape (n,)."""
        return 1.0 / (1.0 + np.exp(-self.scores(users, items)))

    def user_vectors(self) -> np.ndarray:
        """Queries ``[U_u, 1]``, shape (n_users, d + 1)."""
        ones = np.ones((len(self.user_factors), 1), np.float32)
        return np.ascontiguousarray(np.hstack([self.user_factors, ones]))

    def item_vectors(self) -> np.ndarray:
        """Items ``[V_i, b_i]``, shape (n_items, d + 1); <query, item> = z − b_u − b."""
        return np.ascontiguousarray(np.hstack([self.item_factors, self.item_bias[:, None]]))

    def level_vectors(self, level: int) -> tuple[np.ndarray, np.ndarray]:
        return self.user_vectors(), self.item_vectors()

    def save(self, path: str | Path) -> None:
        np.savez(
            path,
            user_factors=self.user_factors,
            item_factors=self.item_factors,
            user_bias=self.user_bias,
            item_bias=self.item_bias,
            global_bias=np.array(self.global_bias),
            n_levels=np.array(self.n_levels),
        )

    @classmethod
    def load(cls, path: str | Path) -> MFEmbeddings:
        with np.load(path) as z:
            return cls(
                z["user_factors"],
                z["item_factors"],
                z["user_bias"],
                z["item_bias"],
                float(z["global_bias"]),
                int(z["n_levels"]),
            )
