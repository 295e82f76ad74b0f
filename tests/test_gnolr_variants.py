"""GNOLR's ablations and baselines: scores, losses and thresholds against hand-computed cases."""

import math

import numpy as np
import pytest
import torch

from evaluation.metrics import gauc
from models.baselines import PerLevelScorer, PopularityScorer
from models.data import Interactions
from models.gnolr.config import GNOLRConfig, resolve_gamma
from models.gnolr.loss import gnolr_loss, listwise_loss
from models.gnolr.network import GNOLR, GNOLREmbeddings, level_scores


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


COS = torch.tensor([[0.5, -0.2, 0.4]])


def test_scores_nested_independent_and_shared():
    assert level_scores(COS, "nested", 3)[0].tolist() == pytest.approx([0.5, 0.3, 0.7])
    assert level_scores(COS, "independent", 3)[0].tolist() == pytest.approx([0.5, -0.2, 0.4])
    assert level_scores(COS[:, :1], "shared", 3)[0].tolist() == pytest.approx([0.5, 0.5, 0.5])


def test_multitask_bce_loss_is_the_sum_of_per_level_bce():
    logits = torch.tensor([[0.5, -1.0, -2.0], [1.0, 0.0, -0.5]], dtype=torch.float64)
    level = torch.tensor([1, 3])
    # row 0 reached click only: −log σ(0.5) − log(1−σ(−1)) − log(1−σ(−2)); row 1 reached all levels.
    row0 = -math.log(sig(0.5)) - math.log(1 - sig(-1.0)) - math.log(1 - sig(-2.0))
    row1 = -math.log(sig(1.0)) - math.log(sig(0.0)) - math.log(sig(-0.5))
    assert gnolr_loss(logits, level, "bce").item() == pytest.approx((row0 + row1) / 2, rel=1e-12)
    with pytest.raises(ValueError, match="unknown GNOLR loss"):
        gnolr_loss(logits, level, "hinge")


def test_naive_olr_full_nll_on_one_shared_score():
    # One cosine 0.3, γ = 2, thresholds (1, 2): l = (−0.4, −1.4); level 1 ⇒ −log(σ(l1) − σ(l2)).
    l1, l2 = 2 * 0.3 - 1, 2 * 0.3 - 2
    logits = torch.tensor([[l1, l2]], dtype=torch.float64)
    expected = -math.log(sig(l1) - sig(l2))
    assert gnolr_loss(logits, torch.tensor([1]), "full").item() == pytest.approx(expected)


def test_gamma_check_per_scoring():
    a = np.array([3.0, 4.0, 4.5])  # gaps 1.0 and 0.5
    names = ["click", "cart", "purchase"]
    resolve_gamma(0.45, a, names, "nested")
    with pytest.raises(ValueError, match="'cart' and 'purchase'"):
        resolve_gamma(0.45, a, names, "independent")  # 0.45 + 0.45 ≥ 0.5
    resolve_gamma(0.2, a, names, "independent")
    resolve_gamma(10.0, a, names, "shared")  # one shared cosine: any shared γ keeps the order
    with pytest.raises(ValueError, match="'cart' and 'purchase'"):
        resolve_gamma([1.0, 1.0, 1.6], a, names, "shared")
    assert resolve_gamma("auto", a, names, "independent")[0] == pytest.approx(0.9 * 0.25)


def test_learned_thresholds_start_at_base_rates_and_stay_ordered():
    a = np.array([3.0, 4.5, 5.5])
    cfg = GNOLRConfig(embedding_dim=8, hidden=[8], dim=4, learned_thresholds=True, lr=0.5)
    torch.manual_seed(0)
    model = GNOLR(20, 30, a, np.full(3, 0.5), cfg)
    assert model.thresholds.detach().numpy() == pytest.approx(a, rel=1e-5)
    opt = torch.optim.SGD(model.parameters(), lr=5.0)
    for _ in range(50):  # push hard so the thresholds move a lot
        users, items = torch.randint(0, 20, (64,)), torch.randint(0, 30, (64,))
        loss = gnolr_loss(model(users, items), torch.randint(0, 4, (64,)) * 0 + 3, "nested")
        opt.zero_grad()
        loss.backward()
        opt.step()
    t = model.thresholds.detach().numpy()
    assert np.all(np.diff(t) > 0)
    assert not np.allclose(t, a, atol=0.1)


def test_listwise_loss_hand_computed():
    q = [torch.tensor([[1.0, 0.0], [0.0, 1.0]])]
    v = [torch.tensor([[2.0, 0.0], [1.0, 1.0]])]
    # only row 0 is positive: scores (2, 1), target 0 ⇒ −log(e²/(e² + e)).
    got = listwise_loss(q, v, torch.tensor([1, 0])).item()
    assert got == pytest.approx(-math.log(math.exp(2) / (math.exp(2) + math.exp(1))))


def test_level_vectors_rank_by_each_levels_score():
    rng = np.random.default_rng(1)
    users = rng.normal(size=(3, 2, 4))
    items = rng.normal(size=(5, 2, 4))
    users /= np.linalg.norm(users, axis=-1, keepdims=True)
    items /= np.linalg.norm(items, axis=-1, keepdims=True)
    for scoring in ("nested", "independent"):
        emb = GNOLREmbeddings(users, items, np.array([0.7, 0.9]), np.array([2.0, 3.0]), scoring)
        for c in range(2):
            q, v = emb.level_vectors(c)
            logits = emb.logits(np.repeat(np.arange(3), 5), np.tile(np.arange(5), 3))[:, c]
            np.testing.assert_allclose((q @ v.T).ravel() - 2.0 - c, logits, rtol=1e-5, atol=1e-6)


def test_baseline_scorers():
    counts = np.array([[5, 1], [2, 2], [9, 0]], dtype=float)
    pop = PopularityScorer(counts, n_users=2)
    assert pop.logits(np.array([0, 1]), np.array([2, 1])).tolist() == [[9, 0], [2, 2]]
    q, v = pop.level_vectors(1)
    assert (q @ v.T)[0].tolist() == [1, 2, 0]
    one = GNOLREmbeddings(
        np.ones((2, 1, 2)) / np.sqrt(2),
        np.ones((3, 1, 2)) / np.sqrt(2),
        np.array([2.0]),
        np.array([1.0]),
    )
    per_level = PerLevelScorer([one, one])
    assert per_level.logits(np.array([0]), np.array([1]))[0].tolist() == pytest.approx([1.0, 1.0])


def test_gauc_weights_per_user_auc_by_impressions():
    scores = np.array([0.9, 0.1, 0.5, 0.2, 0.8, 0.3, 0.3])
    labels = np.array([1, 0, 0, 1, 1, 0, 0])
    groups = np.array([0, 0, 1, 1, 1, 2, 2])  # user 2 has no positive: skipped
    # user 0: AUC 1 (2 rows); user 1: positives 0.2, 0.8 vs negative 0.5 ⇒ 0.5 (3 rows)
    assert gauc(scores, labels, groups) == pytest.approx((1.0 * 2 + 0.5 * 3) / 5)


def test_bce_heads_need_no_ordering_so_gamma_is_not_checked():
    a = np.array([3.0, 3.2])
    assert resolve_gamma("auto", a, ["click", "cart"], "independent", ordered=False).tolist() == [
        4.0,
        4.0,
    ]
    resolve_gamma(5.0, a, ["click", "cart"], "independent", ordered=False)
    with pytest.raises(ValueError, match="positive"):
        resolve_gamma(-1.0, a, ["click", "cart"], ordered=False)


def test_ips_level_loss_naive_log_equals_multitask_bce_and_clipping_reweights():
    from models.gnolr.loss import ips_level_loss
    from models.relmf.config import RelMFLoss

    logits = torch.tensor([[0.5, -1.0], [1.0, 0.0], [-0.3, -2.0]], dtype=torch.float64)
    level = torch.tensor([1, 2, 0])
    theta = torch.tensor([0.05, 0.5, 0.2], dtype=torch.float64)
    naive = RelMFLoss(estimator="naive", local_loss="log")
    assert ips_level_loss(logits, level, theta, naive).item() == pytest.approx(
        gnolr_loss(logits, level, "bce").item(), rel=1e-12
    )
    # Clipped at M = 0.1 with squared loss, level 1 only: weights w = Y / max(θ, M) per row.
    clipped = RelMFLoss(estimator="clipped", clip=0.1, local_loss="squared")
    p = torch.sigmoid(logits[:, 0])
    w = torch.tensor([1 / 0.1, 1 / 0.5, 0.0], dtype=torch.float64)
    expected = (w * (1 - p) ** 2 + (1 - w) * p**2).mean()
    got = ips_level_loss(logits[:, :1], level, theta, clipped)
    assert got.item() == pytest.approx(expected.item(), rel=1e-12)


def test_ips_training_needs_propensities():
    from models.data import Interactions
    from models.gnolr.fit import fit_gnolr

    rows = Interactions(np.array([0, 1]), np.array([0, 1]), np.array([0, 1]))
    with pytest.raises(ValueError, match="propensity"):
        fit_gnolr(rows, rows, 2, 2, ["click"], GNOLRConfig(loss="ips"), progress=False)


def test_per_level_baseline_trains_one_single_level_bce_model_per_level(monkeypatch):
    import models.gnolr.fit as mt

    seen = []

    def fake_fit(train, valid, n_users, n_items, names, cfg, validation, **kwargs):
        seen.append((train.levels.tolist(), names, cfg.loss))
        return names

    monkeypatch.setattr(mt, "fit_gnolr", fake_fit)
    rows = Interactions(np.array([0, 1, 2]), np.array([0, 1, 2]), np.array([0, 2, 1]))
    fits = mt.fit_per_level(rows, rows, 3, 3, ["click", "cart"], GNOLRConfig())
    assert fits == [["click"], ["cart"]]
    assert seen == [([0, 1, 1], ["click"], "bce"), ([0, 1, 0], ["cart"], "bce")]
