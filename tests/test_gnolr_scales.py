"""GNOLR with a scale per head: the ordering holds for every embedding under any learned parameters,
without the cap on the first scale; serving vectors reproduce the logits; the shared form stays."""

import math

import numpy as np
import pytest
import torch

from models.data import Interactions
from models.gnolr.config import GNOLRConfig, resolve_scales, thresholds_from_base_rates
from models.gnolr.module import GNOLRModule
from models.gnolr.network import GNOLR, GNOLREmbeddings, level_weights
from models.negatives import NegativeSampler

A = thresholds_from_base_rates([0.04, 0.01, 0.0035])  # the default shop: gaps 1.41 and 1.06
NAMES = ["click", "cart", "purchase"]


def per_head(**kw) -> GNOLRConfig:
    base = dict(tower="id", dim=4, scale="per_head", item_bias="per_level", gamma=8.0)
    return GNOLRConfig(**{**base, **kw})


def test_the_shared_form_is_capped_and_the_per_head_form_is_not():
    with pytest.raises(ValueError, match="breaks the ordering"):
        resolve_scales(GNOLRConfig(gamma=2.0), A, NAMES)
    cap = float(np.diff(A).min())
    assert resolve_scales(GNOLRConfig(), A, NAMES) == pytest.approx([0.9 * cap] * 3)
    scales = resolve_scales(per_head(), A, NAMES)
    assert scales[0] == 8.0 > cap  # the first head's scale is free
    assert scales[1:] == pytest.approx(np.diff(A) / 2)  # deeper heads start inside their bound


def test_per_head_ordering_holds_for_random_embeddings_under_random_learned_parameters():
    torch.manual_seed(0)
    for trial in range(5):
        model = GNOLR(50, 60, A, resolve_scales(per_head(), A, NAMES), per_head())
        with torch.no_grad():  # any value the optimiser could reach
            model.log_gamma.normal_(0, 2)
            model.rho.normal_(0, 6)
            model.kappa.normal_(0, 4)
            model.bias.normal_(0, 4)
            model.user_tower.embedding.weight.normal_()
            model.item_tower.embedding.weight.normal_()
        users, items = torch.randint(0, 50, (20000,)), torch.randint(0, 60, (20000,))
        logits = model(users, items)
        gaps = logits[:, :-1] - logits[:, 1:]
        assert (gaps > 0).all(), f"trial {trial}: ordering broken"
        # the deeper scales never leave their bounds
        g = model.head_scales()
        assert ((g[1:] > 0) & (g[1:] < torch.as_tensor(np.diff(A), dtype=g.dtype))).all()


def test_per_head_ordering_survives_training_with_a_large_step():
    torch.manual_seed(1)
    cfg = per_head(lr=0.5)
    model = GNOLR(30, 40, A, resolve_scales(cfg, A, NAMES), cfg)
    opt = torch.optim.SGD(model.parameters(), lr=5.0)
    for _ in range(40):  # push towards purchase everywhere: the bounds must hold anyway
        users, items = torch.randint(0, 30, (256,)), torch.randint(0, 40, (256,))
        loss = -torch.nn.functional.logsigmoid(model(users, items)[:, -1]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    probs = torch.sigmoid(model(torch.randint(0, 30, (5000,)), torch.randint(0, 40, (5000,))))
    assert (probs[:, :-1] >= probs[:, 1:]).all()
    assert not torch.isclose(model.head_scales()[0], torch.tensor(8.0))  # the scales did learn


def test_level_weights_per_form():
    g = np.array([1.0, 2.0, 3.0])
    assert level_weights(g, 3, "nested", "shared").tolist() == [
        [1, 0, 0],
        [2, 2, 0],
        [3, 3, 3],
    ]
    assert level_weights(g, 3, "nested", "per_head").tolist() == [
        [1, 0, 0],
        [1, 2, 0],
        [1, 2, 3],
    ]
    assert level_weights(g[:1], 3, "shared", "per_head").tolist() == [[1], [1], [1]]
    assert level_weights(g, 3, "independent", "shared").tolist() == np.diag(g).tolist()


@pytest.mark.parametrize("scoring", ["nested", "independent", "shared"])
@pytest.mark.parametrize("scale", ["shared", "per_head"])
def test_level_weights_stay_on_the_scales_device(scoring, scale):
    # The per-head default once built its head mask on the CPU and failed on a GPU (an H200 run):
    # the "meta" device stands in for any device that is not the CPU
    n = 1 if scoring == "shared" and scale == "per_head" else 3
    w = level_weights(torch.ones(n, device="meta"), 3, scoring, scale)
    assert w.device.type == "meta" and w.shape == (3, 1 if scoring == "shared" else 3)


def test_serving_vectors_with_per_head_scales_and_item_bias_give_every_levels_logit(tmp_path):
    rng = np.random.default_rng(2)
    users = rng.normal(size=(4, 3, 5))
    items = rng.normal(size=(6, 3, 5))
    users /= np.linalg.norm(users, axis=-1, keepdims=True)
    items /= np.linalg.norm(items, axis=-1, keepdims=True)
    bias = rng.normal(size=(6, 3))
    emb = GNOLREmbeddings(users, items, np.array([6.0, 0.5, 0.3]), A, "nested", "per_head", bias)
    cos = np.einsum("hd,nhd->nh", users[1], items)
    expected = (
        np.stack(
            [
                6.0 * cos[:, 0],
                6.0 * cos[:, 0] + 0.5 * cos[:, 1],
                6 * cos[:, 0] + 0.5 * cos[:, 1] + 0.3 * cos[:, 2],
            ],
            axis=1,
        )
        - A
        + bias
    )
    np.testing.assert_allclose(emb.logits(np.full(6, 1), np.arange(6)), expected, rtol=1e-5)
    for c in range(3):
        q, v = emb.level_vectors(c)
        np.testing.assert_allclose((q[1] @ v.T) - A[c], expected[:, c], rtol=1e-5, atol=1e-6)
    emb.save(tmp_path / "e.npz")
    back = GNOLREmbeddings.load(tmp_path / "e.npz")
    assert back.scale == "per_head"
    np.testing.assert_allclose(back.logits(np.full(6, 1), np.arange(6)), expected, rtol=1e-5)


def test_configurations_that_cannot_work_fail_at_construction():
    with pytest.raises(ValueError, match="per_level needs"):
        GNOLRConfig(item_bias="per_level")  # needs per_head scales
    with pytest.raises(ValueError, match="sampled_softmax needs negatives"):
        GNOLRConfig(loss="sampled_softmax")
    with pytest.raises(ValueError, match="propensities"):
        GNOLRConfig(loss="ips", negatives=4)
    with pytest.raises(ValueError, match="needs negatives"):
        GNOLRConfig(logged_negatives=False)
    with pytest.raises(ValueError, match="no ordering bound"):
        GNOLRConfig(scale="per_head", scoring="independent")


def test_softmax_loss_is_the_catalogue_cross_entropy_per_level():
    cfg = GNOLRConfig(tower="id", dim=3, scale="per_head", loss="softmax", logged_negatives=False)
    torch.manual_seed(0)
    a = thresholds_from_base_rates([0.3])
    model = GNOLR(2, 4, a, np.array([3.0]), cfg)
    train = Interactions(np.array([0, 0, 1]), np.array([1, 2, 3]), np.array([1, 1, 1]), n_items=4)
    module = GNOLRModule(model, cfg, sampler=NegativeSampler(train))
    batch = tuple(t for t in train.tensors())
    got = module._loss(batch).item()
    with torch.no_grad():
        ue = model.side(model.user_tower, torch.arange(2))
        ie = model.side(model.item_tower, torch.arange(4))
        logits = model.catalogue_logits(ue, ie)[:, 0]  # (2, 4)
        lsm = torch.log_softmax(logits, dim=1)
        expected = -(lsm[0, 1] + lsm[0, 2] + lsm[1, 3]) / 3
    assert got == pytest.approx(expected.item(), rel=1e-5)
    assert math.isfinite(got)
