"""Negatives for training, re-drawn at every step from training data only.

A negative of user u is an item without a *training* positive of u (never a validation or test
item decision: the pool is the complement of the training positives, so held-out items are
sampled like any other). Two proposals: uniform over that complement, or ∝ (training count + 1)^β
over the catalogue (a popularity proposal, for sampled softmax with log-Q correction; draws that hit
one of u's positives are flagged so the loss can drop them).
"""

from __future__ import annotations

import numpy as np
import torch

from features.negatives import PairSet
from models.data import Interactions


class NegativeSampler:
    """Draws negatives for the rows of a batch from a seeded stream (a fresh set every call).

    ``positives`` are the training positives (level ≥ 1) that must never be drawn by the uniform
    proposal; ``popularity_power`` β sets the popularity proposal q_i ∝ (n_i + 1)^β, n_i = training
    positives of item i.
    """

    def __init__(self, train: Interactions, seed: int = 0, popularity_power: float = 0.75) -> None:
        pos = train.positives()
        self.n_items = int(train.n_items)
        self.positives = PairSet(pos.users, pos.items, self.n_items)
        self.rng = np.random.default_rng(seed)
        counts = np.bincount(pos.items, minlength=self.n_items).astype(np.float64)
        q = (counts + 1.0) ** popularity_power
        self.q = q / q.sum()
        self.log_q = torch.as_tensor(np.log(self.q), dtype=torch.float32)

    def uniform(self, users: torch.Tensor, k: int) -> torch.Tensor:
        """(len(users), k) items, uniform over each user's non-positives."""
        draws = self.positives.sample_outside(users.cpu().numpy(), k, self.rng)
        return torch.as_tensor(draws, device=users.device)

    def popular(self, users: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(items (len(users), k) drawn ∝ q, mask of draws that are the user's training positives)."""
        u = users.cpu().numpy()
        draws = self.rng.choice(self.n_items, size=(u.size, k), p=self.q)
        hit = self.positives.contains(np.repeat(u, k), draws.ravel()).reshape(u.size, k)
        return torch.as_tensor(draws, device=users.device), torch.as_tensor(
            hit, device=users.device
        )
