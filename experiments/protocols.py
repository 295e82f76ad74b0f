"""The named comparison protocols of ``experiments.compare`` and ``experiments.tune``.

* ``ms-recommenders`` — MovieLens-100K under the Microsoft Recommenders protocol exactly
  (:mod:`features.protocols`): every rating a positive, per-user stratified random 75/25 with seed
  42 on the ``u.data`` row order, candidates = items present in train, each user's train items
  excluded, top-10, binary relevance; NDCG / Precision / Recall / MAP @10 as their
  ``python_evaluation``. Tuning fits on ``inner`` and scores ``valid`` (both cut from train by the
  same rule); the chosen settings are refitted on all of train (iterative models for the chosen
  number of epochs) and scored once on test.
* ``graded-temporal`` — the source's levels (MovieLens: rated / ≥ 4 / 5) under the features
  stage's temporal split: train on the past, early-stop on the validation window, test on the
  latest window; per level NDCG@10 over the full catalogue (training positives excluded) and AUC
  on the test rows (impressions, MovieLens' sampled ones included).
* ``simulator`` — the synthetic shop of params.yaml (``--shop`` overrides its settings), one world
  and model seed per ``--seeds`` value; as ``graded-temporal`` plus NDCG@10 against the simulator's
  true probabilities (``gt_ndcg_at_10``). The truth is never used to choose anything.

Every model goes through the library API (:class:`models.recommender.Recommender`): ``fit(train,
valid, validation)`` and ``recommend``. Intervals: 95 % percentile bootstrap over users (per-user
metrics; AUC by resampling users' rows), paired with the reference model for differences; over
seeds for the simulator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from evaluation.metrics import graded_ndcg_per_user
from evaluation.protocol import simulator_gain
from evaluation.validation import LevelAUC, LevelsNDCG, RankingNDCG
from features.protocols import RatingsSplit, ms_recommenders_movielens
from features.training_sets import training_sets_from_source
from models.data import Interactions, Pairs
from models.recommender import Recommender
from pipelines.params import Params

PROTOCOLS = ("ms-recommenders", "graded-temporal", "simulator")
K = 10


@dataclass
class Stage:
    """One fit: the rows, the validation rows and the validation injected into iterative fits."""

    train: Interactions
    valid: Interactions | None
    validation: object | None
    levels: list[str]
    user_features: dict[str, np.ndarray] = field(default_factory=dict)
    item_features: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class Scores:
    """A fitted model's test results: per-user metric values (aligned over the protocol's users for
    that metric, NaN = undefined for that user) and, for AUCs, the test rows (scores, labels, users).
    """

    per_user: dict[str, np.ndarray]
    rows: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)


def pair_scores(model: Recommender, users: np.ndarray, items: np.ndarray, n_levels: int):
    """Level scores (n, T) of aligned pairs: the model's own per-level scores when it has them,
    else its one ranking score repeated for every level."""
    if hasattr(model, "pair_scores"):
        return model.pair_scores(users, items)
    uniq, inv = np.unique(users, return_inverse=True)
    out = np.empty(users.size)
    for lo in range(0, uniq.size, 512):
        block = model.score(uniq[lo : lo + 512])
        rows = (inv >= lo) & (inv < lo + 512)
        out[rows] = np.asarray(block)[inv[rows] - lo, items[rows]]
    return np.repeat(out[:, None], n_levels, axis=1)


# --------------------------------------------------------------------------- MS Recommenders


class MSRecommenders:
    """MovieLens-100K, the Microsoft Recommenders top-N protocol (see the module docstring)."""

    name = "ms-recommenders"
    levels = ["rated"]

    def __init__(self, cache_dir: str | Path) -> None:
        self.split: RatingsSplit = ms_recommenders_movielens(Path(cache_dir))

    def _part(self, mask: np.ndarray) -> Interactions:
        s = self.split
        ones = np.ones(int(mask.sum()), np.int64)
        return Interactions(s.users[mask], s.items[mask], ones, None, s.n_users, s.n_items)

    def _ranking(self, truth: np.ndarray, fit_on: np.ndarray) -> RankingNDCG:
        s = self.split
        candidates = np.unique(s.items[fit_on])  # the items present in the fitted part
        return RankingNDCG(Pairs(s.users[truth], s.items[truth]), K, candidates)

    def tuning(self) -> Stage:
        s = self.split
        return Stage(
            self._part(s.inner), self._part(s.valid), self._ranking(s.valid, s.inner), self.levels
        )

    def final(self) -> Stage:
        """All of train, no validation: iterative models run the epochs chosen in tuning."""
        return Stage(self._part(self.split.train), None, None, self.levels)

    def score(self, model: Recommender, stage: Stage) -> Scores:
        s = self.split
        test = self._ranking(s.test, s.train)
        return Scores({f"{m}_at_{K}": v for m, v in test.per_user(model).items()})

    def facts(self) -> dict:
        s = self.split
        test_items = np.unique(s.items[s.test])
        return {
            **s.sizes(),
            "users": s.n_users,
            "items": s.n_items,
            "test_items_not_in_train": int(np.setdiff1d(test_items, s.items[s.train]).size),
        }


# --------------------------------------------------------------------------- graded protocols


class Graded:
    """A source's graded levels under the temporal split (``graded-temporal``; with the synthetic
    source and its truth, ``simulator``). ``validation``: ``ndcg`` (mean over levels of validation
    NDCG@10 through ``recommend``) or ``auc`` (the product of per-level validation AUCs, the
    pipeline's criterion)."""

    def __init__(self, params: Params, validation: str = "ndcg") -> None:
        self.params = params
        self.name = "simulator" if params.source.kind == "synthetic" else "graded-temporal"
        sets, world, user_side, item_side = training_sets_from_source(
            params.source, params.contract, params.features
        )
        self.sets, self.world = sets, world
        self.user_side, self.item_side = user_side, item_side
        self.levels = list(sets.meta["levels"])
        n_users, n_items = sets.meta["n_users"], sets.meta["n_items"]
        self.parts = {
            s: Interactions.from_frame(sets.splits[s], n_users, n_items)
            for s in ("train", "valid", "test")
        }
        valid = self.parts["valid"]
        self.validation = (
            LevelAUC(self.levels)
            if validation == "auc"
            else LevelsNDCG(valid.users, valid.items, valid.levels, self.levels, K)
        )
        self.gain = (
            simulator_gain(sets.users, sets.items, world, self.levels)
            if world is not None
            else None
        )

    def tuning(self) -> Stage:
        return Stage(
            self.parts["train"],
            self.parts["valid"],
            self.validation,
            self.levels,
            self.user_side,
            self.item_side,
        )

    def final(self) -> Stage:
        return self.tuning()  # the validation window is later than train: no refit

    def score(self, model: Recommender, stage: Stage) -> Scores:
        test = self.parts["test"]
        out = Scores({})
        scores = pair_scores(model, test.users, test.items, len(self.levels))
        before = model.rank_level
        try:
            for c, name in enumerate(self.levels, start=1):
                out.rows[f"auc/{name}"] = (scores[:, c - 1], test.levels >= c, test.users)
                model.rank_level = c - 1
                rel = test.levels >= c
                truth = RankingNDCG(Pairs(test.users[rel], test.items[rel]), K)
                out.per_user[f"ndcg_at_{K}/{name}"] = truth.per_user(model)["ndcg"]
                if self.gain is not None:
                    out.per_user[f"gt_ndcg_at_{K}/{name}"] = self._truth_ndcg(model, name)
        finally:
            model.rank_level = before
        return out

    def eval_users(self) -> np.ndarray:
        return np.unique(self.parts["test"].users)

    def _truth_ndcg(self, model: Recommender, name: str) -> np.ndarray:
        """Per test user, NDCG@10 of the model's top-10 against the true P(level ≥ c), training
        positives excluded from the ranking and from the ideal."""
        users = self.eval_users()
        out = []
        for lo in range(0, users.size, 512):
            chunk = users[lo : lo + 512]
            top, _ = model.recommend(chunk, K, filter_seen=True)
            gains = self.gain(chunk)[name].copy()
            seen = model.seen[chunk].tocoo()
            gains[seen.row, seen.col] = 0.0
            top_g = np.where(top >= 0, np.take_along_axis(gains, np.maximum(top, 0), 1), 0.0)
            out.append(graded_ndcg_per_user(top_g, gains, K))
        return np.concatenate(out)

    def facts(self) -> dict:
        meta = self.sets.meta
        test = self.parts["test"]
        train_users = np.unique(self.parts["train"].users)
        deepest = test.levels >= len(self.levels)
        deep_users = np.unique(test.users[deepest])
        return {
            "rows": meta["rows"],
            "users": meta["n_users"],
            "items": meta["n_items"],
            "base_rates": meta["base_rates"],
            "deepest_level_test_users": int(deep_users.size),
            "deepest_level_test_users_without_training_rows": int(
                np.setdiff1d(deep_users, train_users).size
            ),
        }
