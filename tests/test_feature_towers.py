"""Side-feature towers: codes from any source, predictions that follow features, cold items."""

import numpy as np
import polars as pl
import torch

from features import side_features
from models.data import Interactions
from models.gnolr.config import GNOLRConfig
from models.gnolr.network import GNOLR
from models.gnolr.recommender import GNOLRRecommender


def test_encode_strings_numbers_and_lists_with_missing_entities():
    vocab = pl.DataFrame({"item_id": ["a", "b", "c"], "item_idx": [0, 1, 2]})
    table = pl.DataFrame(
        {
            "item_id": ["c", "a"],
            "genre": ["drama", "comedy"],
            "year": [1995, 1970],
            "tags": [["x", "y"], ["y"]],
        }
    )
    codes = side_features.encode(vocab, table, "item_id", "item_idx")
    assert codes["genre"][:, 0].tolist() == [1, 0, 2]  # comedy=1, drama=2, b missing=0
    assert codes["year"][1, 0] == 0 and codes["year"][0, 0] < codes["year"][2, 0]
    assert codes["tags"].tolist() == [[2, 0], [0, 0], [1, 2]]
    assert side_features.cardinalities(codes)["genre"] == 2


def model_with(item_codes: np.ndarray) -> GNOLR:
    cfg = GNOLRConfig(embedding_dim=8, hidden=[8], dim=4)
    torch.manual_seed(0)
    return GNOLR(
        5,
        4,
        np.array([2.0, 3.0]),
        np.array([0.5, 0.5]),
        cfg,
        item_features={"category": item_codes},
    )


def test_predictions_change_when_features_change():
    codes = np.array([[1], [2], [1], [3]])
    model = model_with(codes).eval()
    users, items = torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2])
    before = model(users, items).detach()
    model.item_tower.codes_category[1] = 3  # item 1 changes category
    after = model(users, items).detach()
    assert torch.allclose(before[[0, 2]], after[[0, 2]])
    assert not torch.allclose(before[1], after[1])


def test_cold_item_is_scored_from_its_features_alone():
    model = model_with(np.array([[1], [2], [1], [3]])).eval()
    same = model.item_tower(None, {"category": torch.tensor([[1]])})
    other = model.item_tower(None, {"category": torch.tensor([[2]])})
    assert same.shape == (1, 2, 4)
    assert torch.allclose(same.norm(dim=-1), torch.ones(1, 2))
    assert not torch.allclose(same, other)


def test_features_are_ignored_when_switched_off():
    cfg = GNOLRConfig(embedding_dim=8, hidden=[8], dim=4, use_features=False)
    model = GNOLR(
        5,
        4,
        np.array([2.0, 3.0]),
        np.array([0.5, 0.5]),
        cfg,
        item_features={"category": np.ones((4, 1), np.int64)},
    )
    assert model.item_tower.feature_names == []


def test_a_user_without_training_rows_is_ranked_from_its_features_alone():
    """A cold user's id embedding stays zero through training, so its vectors are those of the
    features-only path a cold user is served by, not a random id vector."""
    users = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    items = np.array([0, 1, 1, 2, 2, 3, 0, 3])
    train = Interactions(users, items, np.ones(8, np.int64), n_users=5, n_items=4)
    codes = {"age": np.array([[1], [2], [1], [2], [1]])}  # user 4: cold, age group 1
    cfg = GNOLRConfig(tower="mlp", embedding_dim=8, hidden=[8], dim=4, negatives=2, max_epochs=2)
    model = GNOLRRecommender(cfg, ["rated"], user_features=codes).fit(train)
    weight = model.model.user_tower.embedding.weight.detach()
    assert torch.count_nonzero(weight[4]) == 0
    assert torch.count_nonzero(weight[:4].abs().sum(1)) == 4
    with torch.no_grad():
        by_id = model.model.user_tower(torch.tensor([4]))
        by_features = model.model.user_tower(None, {"age": torch.tensor([[1]])})
    assert torch.allclose(by_id, by_features)
