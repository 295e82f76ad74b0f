"""A weighted blend of fitted recommenders: ``score = Σ_m w_m·n_m``.

``n_m`` is model m's catalogue score normalised per user, so models with different score scales
add up: ``"z"`` standardises (``(s − mean) / sd`` over the user's catalogue), ``"rank"`` replaces
each score by its rank ``r / (n_items − 1)`` in [0, 1] (0 = the user's lowest score, ties share
their average rank), ``"none"`` keeps the raw scores. The components are fitted beforehand on the
same training table; ``fit`` only records what ``recommend`` filters. Equal weights (e.g. the
refits of one model over seeds: a seed ensemble) need no choice; otherwise choose the weights and
the normalisation on validation (:func:`choose_weights`), never on test.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np
from scipy.stats import rankdata

from models.data import Interactions
from models.recommender import Recommender


def standardised(model: Recommender, users: np.ndarray) -> np.ndarray:
    """The model's catalogue scores of ``users``, standardised per user, shape (U, n_items)."""
    s = np.asarray(model.score(users), dtype=np.float64)
    return (s - s.mean(axis=1, keepdims=True)) / (s.std(axis=1, keepdims=True) + 1e-12)


NORMALISATIONS = ("z", "rank", "none")


def rank_normalised(model: Recommender, users: np.ndarray) -> np.ndarray:
    """The model's catalogue scores of ``users`` as per-user ranks ``r / (n_items − 1)``: 0 for the
    lowest score, 1 for the highest, ties at their average rank; shape (U, n_items)."""
    s = np.asarray(model.score(users), dtype=np.float64)
    return (rankdata(s, method="average", axis=1) - 1.0) / max(s.shape[1] - 1, 1)


def normalised(model: Recommender, users: np.ndarray, how: str) -> np.ndarray:
    """The model's catalogue scores of ``users`` normalised per user by ``how`` (module doc)."""
    if how == "z":
        return standardised(model, users)
    if how == "rank":
        return rank_normalised(model, users)
    if how == "none":
        return np.asarray(model.score(users), dtype=np.float64)
    raise ValueError(f"normalisation {how!r}: expected one of {NORMALISATIONS}")


def simplex_grid(n: int, step: float = 0.1) -> list[np.ndarray]:
    """Every weight vector of ``n`` non-negative multiples of ``step`` summing to 1."""
    ticks = int(round(1 / step))
    return [
        np.array(c, dtype=np.float64) / ticks
        for c in itertools.product(range(ticks + 1), repeat=n)
        if sum(c) == ticks
    ]


class Ensemble(Recommender):
    """Σ_m w_m·n_m of already-fitted ``components`` (weights default to equal; ``normalise``
    ``"z"``, ``"rank"`` or ``"none"``, see the module doc)."""

    def __init__(
        self,
        components: Sequence[Recommender],
        weights: Sequence[float] | None = None,
        normalise: str = "z",
    ) -> None:
        super().__init__()
        self.components = list(components)
        n = len(self.components)
        if n == 0:
            raise ValueError("an ensemble needs at least one component")
        self.weights = np.full(n, 1.0 / n) if weights is None else np.asarray(weights, float)
        if self.weights.shape != (n,):
            raise ValueError(f"{n} components need {n} weights")
        if normalise not in NORMALISATIONS:
            raise ValueError(f"normalisation {normalise!r}: expected one of {NORMALISATIONS}")
        self.normalise = normalise

    def _fit(self, train: Interactions, valid, validation) -> None:
        self.fit_info = {"weights": self.weights.tolist(), "normalise": self.normalise}

    def score(self, users: np.ndarray) -> np.ndarray:
        total = np.zeros((len(users), self.n_items))
        for model, w in zip(self.components, self.weights, strict=True):
            if w != 0:
                total += w * normalised(model, np.asarray(users), self.normalise)
        return total


class Frozen(Recommender):
    """A fixed score matrix (n_users, n_items) as a recommender: a component's normalised scores
    computed once, so a weight search does not re-score the models at every grid point."""

    def __init__(self, scores: np.ndarray) -> None:
        super().__init__()
        self.scores = np.asarray(scores, dtype=np.float64)

    def _fit(self, train: Interactions, valid, validation) -> None:
        if self.scores.shape != (self.n_users, self.n_items):
            raise ValueError(f"scores {self.scores.shape} ≠ ({self.n_users}, {self.n_items})")

    def score(self, users: np.ndarray) -> np.ndarray:
        return self.scores[np.asarray(users)]


def choose_weights(
    components: Sequence[Recommender],
    train: Interactions,
    validation: Callable[[Recommender], dict[str, float]],
    metric: str = "ndcg_at_10",
    step: float = 0.1,
    normalisations: Sequence[str] = ("z",),
) -> tuple[np.ndarray, float, str]:
    """The simplex-grid weights and the normalisation maximising
    ``validation(Ensemble(components, w, normalise))[metric]``.

    ``components`` must be fitted on a part that excludes the validation rows (e.g. the MS
    protocol's inner part); the chosen weights are then applied to the same models refitted on all
    of train. Each component is scored once per normalisation (:class:`Frozen`). Ties keep the
    first normalisation, then the first grid point. Returns (weights, validation value,
    normalisation)."""
    users = np.arange(train.n_users)
    best_w, best_v, best_n = None, -np.inf, normalisations[0]
    for how in normalisations:
        frozen = [Frozen(normalised(m, users, how)).fit(train) for m in components]
        for w in simplex_grid(len(components), step):
            value = float(validation(Ensemble(frozen, w, "none").fit(train))[metric])
            if value > best_v:
                best_w, best_v, best_n = w, value, how
    return best_w, best_v, best_n
