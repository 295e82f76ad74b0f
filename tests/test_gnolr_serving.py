"""A per-head GNOLR with a per-level item bias (the pipeline's default) served end to end: the
trained network → GNOLREmbeddings → bundle (FAISS index on disk) → /recommend and /score's plain
functions. The served score of an item is the network's own l_T and every served probability is
σ(l_c) of the network, so the per-level bias b_i^c reaches the client."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from features.contract import Col
from features.seen import SeenItems
from models.gnolr.config import GNOLRConfig, resolve_scales, thresholds_from_base_rates
from models.gnolr.network import GNOLR, GNOLREmbeddings
from serving.bundle import load_bundle, write_bundle
from serving.index import IndexConfig, build_index
from serving.recommend import recommend, score_pairs

A = thresholds_from_base_rates([0.04, 0.01, 0.0035])
LEVELS = ["click", "cart", "purchase"]
N_USERS, N_ITEMS = 30, 80


@pytest.fixture(scope="module")
def network() -> GNOLR:
    cfg = GNOLRConfig(
        embedding_dim=8, hidden=[8], dim=4, scale="per_head", item_bias="per_level", gamma=6.0
    )
    torch.manual_seed(0)
    model = GNOLR(N_USERS, N_ITEMS, A, resolve_scales(cfg, A, LEVELS), cfg)
    with torch.no_grad():  # parameters a training run could reach: biases that differ per level
        model.bias.normal_(0, 1.5)
        model.kappa.normal_(0, 2)
        model.rho.normal_(0, 1)
    return model.eval()


def _bundle(tmp_path, network: GNOLR, kind: str):
    emb = GNOLREmbeddings.from_model(network)
    index, _ = build_index(emb.item_vectors(), IndexConfig(kind=kind, hnsw_ef_search=512))
    rng = np.random.default_rng(0)
    seen_users = np.repeat(np.arange(N_USERS), 5)
    seen_items = rng.integers(0, N_ITEMS, seen_users.size)
    directory = tmp_path / kind
    directory.mkdir()
    write_bundle(
        directory,
        emb,
        index,
        pl.DataFrame({Col.USER: [f"u{u}" for u in range(N_USERS)], Col.USER_IDX: range(N_USERS)}),
        pl.DataFrame({Col.ITEM: [f"i{i}" for i in range(N_ITEMS)], Col.ITEM_IDX: range(N_ITEMS)}),
        SeenItems.from_pairs(seen_users, seen_items, N_USERS),
        np.arange(N_ITEMS),
        {"levels": LEVELS, "index_backend": "faiss"},
    )
    return load_bundle(directory)


@torch.no_grad()
def _network_logits(network: GNOLR, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    return network(torch.as_tensor(users), torch.as_tensor(items)).double().numpy()


def test_the_per_level_bias_is_in_the_bundle_and_differs_between_levels(tmp_path, network):
    bundle = _bundle(tmp_path, network, "flat")
    bias = bundle.embeddings.item_bias
    assert bundle.embeddings.scale == "per_head" and bias is not None and bias.shape == (80, 3)
    assert np.abs(np.diff(bias, axis=1)).min() > 1e-3  # b^1 ≠ b^2 ≠ b^3 for every item
    assert bundle.retriever.item_vectors.shape[1] == 3 * 4 + 1  # E^T plus the bias dimension


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_served_slate_scores_are_the_networks_deepest_logit(tmp_path, network, kind):
    bundle = _bundle(tmp_path, network, kind)
    every = np.arange(N_ITEMS)
    for user in range(0, N_USERS, 7):
        result = recommend(bundle, f"u{user}", k=10)
        ids = np.array([int(r.item_id[1:]) for r in result.items])
        logits = _network_logits(network, np.full(ids.size, user), ids)
        served = np.array([r.score for r in result.items])
        np.testing.assert_allclose(served, logits[:, -1], rtol=1e-4, atol=1e-4)
        probs = np.array([[r.probabilities[c] for c in LEVELS] for r in result.items])
        np.testing.assert_allclose(probs, 1 / (1 + np.exp(-logits)), rtol=1e-4, atol=1e-6)
        # the slate is the exact top-10 of l_T over the user's unseen items
        full = _network_logits(network, np.full(N_ITEMS, user), every)[:, -1]
        full[bundle.seen[user]] = -np.inf
        np.testing.assert_array_equal(ids, np.argsort(-full, kind="stable")[:10])


def test_score_returns_the_networks_probabilities_at_every_level(tmp_path, network):
    bundle = _bundle(tmp_path, network, "flat")
    rng = np.random.default_rng(3)
    users, items = rng.integers(0, N_USERS, 40), rng.integers(0, N_ITEMS, 40)
    scores = score_pairs(bundle, [(f"u{u}", f"i{i}") for u, i in zip(users, items, strict=True)])
    expected = 1 / (1 + np.exp(-_network_logits(network, users, items)))
    got = np.array([[s.probabilities[c] for c in LEVELS] for s in scores])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-7)
    assert (got[:, :-1] >= got[:, 1:]).all()  # P(click) ≥ P(cart) ≥ P(purchase)
    # without the bias the served probabilities would differ: the bias does reach /score
    no_bias = bundle.embeddings.logits(users, items) - bundle.embeddings.item_bias[items]
    assert np.abs(1 / (1 + np.exp(-no_bias)) - expected).max() > 1e-2
