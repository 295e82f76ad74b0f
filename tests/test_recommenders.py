"""The library API: exact filtered top-k, the reference models, negatives from training data only,
and GNOLR through the same front door — on tiny worked examples."""

import numpy as np
import pytest
import torch

from evaluation.validation import RankingNDCG
from features.negatives import PairSet
from models.als import ALS, ALSConfig
from models.bpr import BPR, BPRConfig
from models.data import Interactions, Pairs
from models.ease import EASE, EASEConfig
from models.gnolr.config import GNOLRConfig
from models.gnolr.recommender import GNOLRRecommender
from models.negatives import NegativeSampler
from models.recommender import Popularity, Recommender


class Fixed(Recommender):
    """Scores given in advance, to test the ranking of the base class."""

    def __init__(self, scores: np.ndarray) -> None:
        super().__init__()
        self.scores = scores

    def _fit(self, train, valid, validation) -> None:
        pass

    def score(self, users):
        return self.scores[users]


def test_recommend_is_exact_top_k_without_seen_items_and_inside_the_allow_list():
    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.5], [0.1, 0.2, 0.3, 0.4, 0.5]])
    train = Interactions(np.array([0, 0, 1]), np.array([0, 2, 4]), np.array([1, 1, 1]), n_items=5)
    model = Fixed(scores).fit(train)
    items, top = model.recommend(np.array([0, 1]), k=2)
    assert items.tolist() == [[1, 3], [3, 2]]
    assert top[0].tolist() == pytest.approx([0.8, 0.6])
    items, _ = model.recommend(np.array([0, 1]), k=2, filter_seen=False)
    assert items.tolist() == [[0, 1], [4, 3]]
    # Allow-list {1, 4}: user 0 has 1 and 4 left; user 1 has only 1 (4 is seen) → padded.
    items, top = model.recommend(np.array([0, 1]), k=2, items=np.array([1, 4]))
    assert items.tolist() == [[1, 4], [1, -1]]
    assert top[1, 1] == -np.inf


def test_popularity_counts_users_per_level_and_ranks_by_the_chosen_level():
    train = Interactions(
        np.array([0, 1, 2, 0, 1]), np.array([0, 0, 0, 1, 1]), np.array([1, 1, 1, 2, 2]), n_items=3
    )
    pop = Popularity().fit(train)
    assert pop.counts.tolist() == [[3, 0], [2, 2], [0, 0]]
    assert pop.recommend(np.array([2]), k=1, filter_seen=False)[0].tolist() == [[1]]  # deepest
    pop.rank_level = 0
    assert pop.recommend(np.array([2]), k=1, filter_seen=False)[0].tolist() == [[0]]


def test_ease_is_the_closed_form_with_a_zero_diagonal():
    x = np.array([[1, 1, 0], [1, 0, 1], [0, 1, 1], [1, 1, 1]], dtype=float)
    users, items = np.nonzero(x)
    model = EASE(EASEConfig(l2=2.0)).fit(Interactions(users, items, np.ones(users.size)))
    p = np.linalg.inv(x.T @ x + 2.0 * np.eye(3))
    expected = np.eye(3) - p / np.diag(p)[None, :]
    np.testing.assert_allclose(model.weights, expected, atol=1e-6)
    assert np.allclose(np.diag(model.weights), 0.0)
    np.testing.assert_allclose(model.score(np.array([0])), x[:1] @ expected, rtol=1e-5)


def test_pair_set_samples_only_outside_the_set_and_respects_times():
    rated = PairSet(np.array([0, 0, 1]), np.array([0, 1, 2]), 4, times=np.array([5, 9, 1]))
    assert rated.contains(np.array([0, 0]), np.array([1, 1]), at=np.array([8, 9])).tolist() == [
        False,
        True,
    ]
    rng = np.random.default_rng(0)
    draws = rated.sample_outside(np.zeros(2000, np.int64), 1, rng)
    assert set(np.unique(draws)) == {2, 3}
    # At time 6, user 0 had rated only item 0: item 1 (rated at 9) may be drawn.
    draws = rated.sample_outside(np.zeros(2000, np.int64), 1, rng, at=np.full(2000, 6))
    assert set(np.unique(draws)) == {1, 2, 3}


def test_training_negatives_are_never_training_positives_but_may_be_held_out_items():
    train = Interactions(np.array([0, 0, 0]), np.array([0, 1, 2]), np.array([1, 1, 1]), n_items=5)
    sampler = NegativeSampler(train, seed=0)
    negs = sampler.uniform(torch.zeros(3000, dtype=torch.int64), 1).numpy().ravel()
    assert set(np.unique(negs)) == {3, 4}  # item 3 could be a test item: it is sampled like 4
    items, hit = sampler.popular(torch.zeros(3000, dtype=torch.int64), 2)
    np.testing.assert_array_equal(hit.numpy(), np.isin(items.numpy(), [0, 1, 2]))


def planted(seed: int = 0, n_users: int = 40, n_items: int = 30):
    """Two taste groups over two item groups, plus a few globally popular items: each user
    likes most of its group's items; one positive per user is held out."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(n_users):
        group = np.arange(n_items // 2) + (u % 2) * (n_items // 2)
        liked = rng.choice(group, size=9, replace=False)
        users += [u] * liked.size
        items += liked.tolist()
    users, items = np.array(users), np.array(items)
    held = np.zeros(users.size, bool)
    held[np.unique(users, return_index=True)[1]] = True  # the first positive of each user
    train = Interactions(users[~held], items[~held], np.ones((~held).sum()), None, n_users, n_items)
    test = Pairs(users[held], items[held])
    return train, test


@pytest.mark.parametrize(
    "model",
    [
        lambda: ALS(ALSConfig(factors=4, regularization=0.1, alpha=5.0, iterations=10)),
        lambda: EASE(EASEConfig(l2=5.0)),
        lambda: BPR(BPRConfig(factors=8, lr=0.05, max_epochs=40, batch_size=64)),
        lambda: GNOLRRecommender(
            GNOLRConfig(
                tower="id",
                dim=8,
                scale="per_head",
                gamma=4.0,
                learn_gamma=False,
                item_bias="shared",
                loss="softmax",
                logged_negatives=False,
                lr=0.05,
                batch_users=8,
                max_epochs=30,
            )
        ),
        lambda: GNOLRRecommender(
            GNOLRConfig(
                tower="id",
                dim=8,
                scale="per_head",
                gamma=4.0,
                learn_gamma=False,  # a learned γ drifts up and overfits (docs/quality.md)
                item_bias="shared",
                loss="nested",
                negatives=8,
                logged_negatives=False,
                lr=0.05,
                batch_users=8,
                max_epochs=30,
            )
        ),
    ],
    ids=["als", "ease", "bpr", "gnolr_softmax", "gnolr_pointwise"],
)
def test_every_model_finds_the_taste_groups_that_popularity_cannot(model):
    train, test = planted()
    metric = RankingNDCG(test, k=5)
    pop = metric(Popularity().fit(train))["ndcg_at_5"]
    fitted = model().fit(train)
    assert metric(fitted)["ndcg_at_5"] > pop + 0.15
    top, _ = fitted.recommend(np.arange(train.n_users), k=5)
    # never a training positive, and (for these groups) mostly the user's own group
    assert not train.matrix()[np.arange(train.n_users)[:, None], top].toarray().any()
    own_group = (top // 15) == (np.arange(train.n_users)[:, None] % 2)
    assert own_group.mean() > 0.8


def test_bpr_early_stops_on_the_ranking_validation_and_reports_the_chosen_epochs():
    train, test = planted(1)
    model = BPR(BPRConfig(factors=8, lr=0.05, max_epochs=40, eval_every=2, patience=2))
    model.fit(train, None, RankingNDCG(test, k=5))
    assert model.fit_info["epochs"] % 2 == 0 and model.fit_info["epochs"] <= 40
    assert model.fit_info["best_valid"] == pytest.approx(RankingNDCG(test, k=5)(model)["ndcg_at_5"])


def test_ranking_ndcg_hand_computed():
    train = Interactions(np.array([0, 1]), np.array([0, 0]), np.array([1, 1]), n_items=4)
    model = Fixed(np.array([[0.0, 0.9, 0.8, 0.1], [0.0, 0.1, 0.2, 0.9]])).fit(train)
    # user 0 truth {2}: ranks (1, 2) → hit at rank 2: 1/log2(3); user 1 truth {3, 1}: ranks (3, 2)
    # → hit at rank 1, ideal 2 hits: 1 / (1 + 1/log2(3)).
    got = RankingNDCG(Pairs(np.array([0, 1, 1]), np.array([2, 3, 1])), k=2)(model)
    expected = (1 / np.log2(3) + 1 / (1 + 1 / np.log2(3))) / 2
    assert got["ndcg_at_2"] == pytest.approx(expected)
    assert got["recall_at_2"] == pytest.approx((1 + 0.5) / 2)
