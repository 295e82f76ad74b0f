"""Side-feature towers: codes from any source, predictions that follow features, cold items."""

import numpy as np
import polars as pl
import torch

from features import side_features
from models.gnolr.config import GNOLRConfig
from models.gnolr.network import GNOLR


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
