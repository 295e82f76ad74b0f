"""Published top-N protocols, reproduced exactly: the Microsoft Recommenders MovieLens-100K split.

**MS Recommenders, MovieLens-100K** (``python_stratified_split(data, ratio=0.75,
filter_by="user", seed=42)`` of ``recommenders`` ≤ 1.1.1, the version behind the published
ML-100K tables): every rating is a positive; the ratings of each user, in file order, are shuffled
by ``group.sample(frac=1, random_state=42)`` — i.e. by ``RandomState(42).permutation(n_u)``,
restarted for every user — and the first ``round(0.75·n_u)`` (Python's round, half to even) go to
train, the rest to test. The rows must be in the order of the original ``u.data``: RecBole's
``ml-100k.inter`` keeps it (checked row by row), and re-ordering the same rows moves about 37,500
of them between train and test. (``recommenders`` 1.2.x draws one ``rand()`` per row instead: a
different split of the same sizes; not implemented.)

Validation for tuning and early stopping is cut from train only, by the same rule applied to the
training rows in file order: ``inner`` (fit) / ``valid`` (score). Candidates at test time are the
items present in train; each user's training items are excluded; relevance is binary.

Sizes on ML-100K: train 74,992 / test 25,008; inner 56,246 / valid 18,746; 33 test items never
occur in train (so they are never candidates).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from features.sources.movielens import read_ratings


def _n_first(n: int, ratio: float) -> int:
    return int(round(ratio * n))  # Python's round: half to even, as the library computes it


def ms_recommenders_split(users: np.ndarray, ratio: float = 0.75, seed: int = 42) -> np.ndarray:
    """Boolean train mask over rows (in file order) of the per-user stratified random split.

    ``users`` (n,) are the rows' user codes (any integers; only equality matters). Per user, its
    rows in file order are permuted by ``RandomState(seed).permutation(n_u)`` (a generator restarted
    for every user) and the first ``round(ratio·n_u)`` of the permuted rows train.

    >>> ms_recommenders_split(np.array([7, 7, 7, 7, 3, 7, 3]), 0.75, 42).astype(int).tolist()
    [1, 1, 1, 0, 1, 1, 1]
    """
    users = np.asarray(users)
    if not 0 < ratio < 1:
        raise ValueError(f"ratio must lie in (0, 1), got {ratio}")
    train = np.zeros(users.size, dtype=bool)
    order = np.argsort(users, kind="stable")  # rows grouped by user, file order inside a group
    bounds = np.r_[0, np.flatnonzero(np.diff(users[order])) + 1, users.size]
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        rows = order[lo:hi]
        perm = np.random.RandomState(seed).permutation(hi - lo)
        train[rows[perm[: _n_first(hi - lo, ratio)]]] = True
    return train


@dataclass(frozen=True)
class RatingsSplit:
    """Ratings in file order with 0-based codes, and the protocol's masks over the rows.

    ``train`` / ``~train`` = train / test; ``inner`` ⊂ train fits the models during tuning and
    ``train & ~inner`` (= ``valid``) scores them. ``user_ids`` / ``item_ids`` map codes back to the
    raw ids (codes follow the sorted integer ids).
    """

    users: np.ndarray  # (n,) int64 codes
    items: np.ndarray  # (n,) int64 codes
    ratings: np.ndarray  # (n,) int64
    ts: np.ndarray  # (n,) int64 epoch seconds
    user_ids: np.ndarray
    item_ids: np.ndarray
    train: np.ndarray  # (n,) bool
    inner: np.ndarray  # (n,) bool, inner ⊂ train

    @property
    def n_users(self) -> int:
        return int(self.user_ids.size)

    @property
    def n_items(self) -> int:
        return int(self.item_ids.size)

    @property
    def test(self) -> np.ndarray:
        return ~self.train

    @property
    def valid(self) -> np.ndarray:
        return self.train & ~self.inner

    def sizes(self) -> dict[str, int]:
        return {
            "train": int(self.train.sum()),
            "test": int(self.test.sum()),
            "inner": int(self.inner.sum()),
            "valid": int(self.valid.sum()),
        }


def split_ratings(
    raw_users: np.ndarray,
    raw_items: np.ndarray,
    ratings: np.ndarray,
    ts: np.ndarray,
    ratio: float = 0.75,
    seed: int = 42,
) -> RatingsSplit:
    """Train/test by :func:`ms_recommenders_split`, then inner/valid by the same rule on train."""
    user_ids, users = np.unique(np.asarray(raw_users), return_inverse=True)
    item_ids, items = np.unique(np.asarray(raw_items), return_inverse=True)
    train = ms_recommenders_split(users, ratio, seed)
    inner = np.zeros_like(train)
    inner[np.flatnonzero(train)[ms_recommenders_split(users[train], ratio, seed)]] = True
    return RatingsSplit(
        users.astype(np.int64),
        items.astype(np.int64),
        np.asarray(ratings, np.int64),
        np.asarray(ts, np.int64),
        user_ids,
        item_ids,
        train,
        inner,
    )


def ms_recommenders_movielens(cache_dir: Path, ratio: float = 0.75, seed: int = 42) -> RatingsSplit:
    """ML-100K in ``u.data`` order (the pinned RecBole wheel), split by the MS protocol.

    Ids are read as integers, as MS Recommenders reads them.
    """
    frame = read_ratings(Path(cache_dir))
    return split_ratings(
        frame["user_id"].cast(int).to_numpy(),
        frame["item_id"].cast(int).to_numpy(),
        frame["rating"].to_numpy(),
        frame["ts"].dt.epoch("s").to_numpy(),
        ratio,
        seed,
    )
