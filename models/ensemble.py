"""A weighted blend of fitted recommenders: ``score = Σ_m w_m·z_m``.

``z_m`` is model m's score standardised per user over the catalogue (mean 0, sd 1), so models
with different score scales add up. The components are fitted beforehand on the same training
table; ``fit`` only records what ``recommend`` filters. Equal weights (e.g. the refits of one
model over seeds) need no choice; otherwise choose the weights on validation
(:func:`simplex_grid` and a validation metric), never on test.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np

from models.data import Interactions
from models.recommender import Recommender


def standardised(model: Recommender, users: np.ndarray) -> np.ndarray:
    """The model's catalogue scores of ``users``, standardised per user, shape (U, n_items)."""
    s = np.asarray(model.score(users), dtype=np.float64)
    return (s - s.mean(axis=1, keepdims=True)) / (s.std(axis=1, keepdims=True) + 1e-12)


def simplex_grid(n: int, step: float = 0.1) -> list[np.ndarray]:
    """Every weight vector of ``n`` non-negative multiples of ``step`` summing to 1."""
    ticks = int(round(1 / step))
    return [
        np.array(c, dtype=np.float64) / ticks
        for c in itertools.product(range(ticks + 1), repeat=n)
        if sum(c) == ticks
    ]


class Ensemble(Recommender):
    """Σ_m w_m·z_m of already-fitted ``components`` (weights default to equal)."""

    def __init__(
        self, components: Sequence[Recommender], weights: Sequence[float] | None = None
    ) -> None:
        super().__init__()
        self.components = list(components)
        n = len(self.components)
        self.weights = np.full(n, 1.0 / n) if weights is None else np.asarray(weights, float)
        if self.weights.shape != (n,):
            raise ValueError(f"{n} components need {n} weights")

    def _fit(self, train: Interactions, valid, validation) -> None:
        self.fit_info = {"weights": self.weights.tolist()}

    def score(self, users: np.ndarray) -> np.ndarray:
        total = np.zeros((len(users), self.n_items))
        for model, w in zip(self.components, self.weights, strict=True):
            if w != 0:
                total += w * standardised(model, np.asarray(users))
        return total


def choose_weights(
    components: Sequence[Recommender],
    train: Interactions,
    validation: Callable[[Recommender], dict[str, float]],
    metric: str = "ndcg_at_10",
    step: float = 0.1,
) -> tuple[np.ndarray, float]:
    """The simplex-grid weights maximising ``validation(Ensemble(components, w))[metric]``.

    ``components`` must be fitted on a part that excludes the validation rows (e.g. the MS
    protocol's inner part); the chosen weights are then applied to the same models refitted on all
    of train. Ties keep the first grid point. Returns (weights, validation value)."""
    best_w, best_v = None, -np.inf
    for w in simplex_grid(len(components), step):
        value = float(validation(Ensemble(components, w).fit(train))[metric])
        if value > best_v:
            best_w, best_v = w, value
    return best_w, best_v
