"""The GNOLR loss and link against hand-computed cases (methods.md §1)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.gnolr.config import GNOLRConfig, resolve_gamma, thresholds_from_base_rates
from models.gnolr.loss import gnolr_loss, ips_level_loss, listwise_loss, subtask_nll
from models.gnolr.network import GNOLR, GNOLREmbeddings
from models.relmf.config import RelMFLoss


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


LOGITS = torch.tensor([[0.5, -1.0]] * 3, dtype=torch.float64)
LEVELS = torch.tensor([0, 1, 2])


def test_two_level_subtask_losses_match_hand_computation():
    nll = subtask_nll(LOGITS, LEVELS).numpy()
    p1, p2 = sig(0.5), sig(-1.0)  # P(k > 1), P(k > 2)
    expected = np.array(
        [
            [-math.log(1 - p1), -math.log(1 - p1)],  # no feedback: class 1 in both sub-tasks
            [-math.log(p1), -math.log(p1 - p2)],  # level 1: top class of t=1, middle class of t=2
            [-math.log(p1), -math.log(p2)],  # level 2: top class in both
        ]
    )
    np.testing.assert_allclose(nll, expected, rtol=1e-9)
    # The same numbers written out: 0.974077, 0.474077, 1.039821, 1.313262.
    np.testing.assert_allclose(expected[:, 1], [0.974077, 1.039821, 1.313262], atol=1e-6)
    nested = gnolr_loss(LOGITS, LEVELS, "nested").item()
    assert nested == pytest.approx(expected.sum(axis=1).mean(), rel=1e-9)
    full = gnolr_loss(LOGITS, LEVELS, "full").item()
    assert full == pytest.approx(expected[:, 1].mean(), rel=1e-9)


def test_three_levels_middle_classes():
    # Asymmetric gaps (p0 − p1 ≠ p1 − p2), so picking the wrong middle class shows.
    logits = torch.tensor([[2.0, 0.5, -1.5]], dtype=torch.float64)
    p = [sig(2.0), sig(0.5), sig(-1.5)]
    got = subtask_nll(logits, torch.tensor([1])).numpy()[0]
    # level 1 ⇒ k = 2: t=1 top class, t=2 and t=3 class 2 = P(k>1) − P(k>2)
    np.testing.assert_allclose(
        got, [-math.log(p[0]), -math.log(p[0] - p[1]), -math.log(p[0] - p[1])]
    )
    got = subtask_nll(logits, torch.tensor([2])).numpy()[0]
    np.testing.assert_allclose(got, [-math.log(p[0]), -math.log(p[1]), -math.log(p[1] - p[2])])


def test_single_level_reduces_to_binary_cross_entropy():
    logits = torch.tensor([[1.3], [-0.7], [0.2], [-2.5]], dtype=torch.float64)
    labels = torch.tensor([1, 0, 0, 1])
    expected = F.binary_cross_entropy_with_logits(logits[:, 0], labels.double())
    assert gnolr_loss(logits, labels).item() == pytest.approx(expected.item(), rel=1e-12)
    assert gnolr_loss(logits, labels, "full").item() == pytest.approx(expected.item(), rel=1e-12)


def test_disordered_probabilities_are_clamped_not_nan():
    logits = torch.tensor([[-1.0, 0.5]], dtype=torch.float64, requires_grad=True)  # P(k>2) > P(k>1)
    loss = gnolr_loss(logits, torch.tensor([1]), eps=1e-6)
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(-math.log(sig(-1.0)) - math.log(1e-6), rel=1e-9)
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_thresholds_return_base_rate_at_zero_score():
    a = thresholds_from_base_rates([0.04, 0.01, 0.0035])
    np.testing.assert_allclose(1 / (1 + np.exp(a)), [0.04, 0.01, 0.0035])
    with pytest.raises(ValueError, match="must not rise"):
        thresholds_from_base_rates([0.01, 0.04])
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        thresholds_from_base_rates([0.04, 0.0])


def test_gamma_check_rejects_ordering_violation_and_names_the_levels():
    a = thresholds_from_base_rates([0.04, 0.01, 0.0035])  # gaps 1.417 and 1.057
    names = ["click", "cart", "purchase"]
    np.testing.assert_allclose(resolve_gamma(1.0, a, names), [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="'cart' and 'purchase'"):
        resolve_gamma(1.2, a, names)
    with pytest.raises(ValueError, match="'click' and 'cart'"):
        resolve_gamma([2.0, 0.5, 0.5], a, names)  # |2.0 − 0.5|·1 + 0.5 = 2.0 > 1.417
    with pytest.raises(ValueError, match="3 levels"):
        resolve_gamma([1.0, 1.0], a, names)
    auto = resolve_gamma("auto", a, names)
    assert auto[0] == pytest.approx(0.9 * (a[2] - a[1]))


def test_valid_gamma_keeps_cumulative_probabilities_ordered_for_any_embedding():
    a = thresholds_from_base_rates([0.04, 0.01, 0.0035])
    gamma = resolve_gamma("auto", a, ["click", "cart", "purchase"])
    cfg = GNOLRConfig(embedding_dim=8, hidden=[8], dim=4)
    torch.manual_seed(0)
    model = GNOLR(50, 60, a, gamma, cfg)
    probs = torch.sigmoid(model(torch.randint(0, 50, (5000,)), torch.randint(0, 60, (5000,))))
    assert (probs[:, :-1] >= probs[:, 1:]).all()


def test_nested_scores_are_cumulative_cosines_and_index_vectors_give_the_top_logit():
    rng = np.random.default_rng(0)
    users = rng.normal(size=(4, 3, 5))
    items = rng.normal(size=(6, 3, 5))
    users /= np.linalg.norm(users, axis=-1, keepdims=True)
    items /= np.linalg.norm(items, axis=-1, keepdims=True)
    emb = GNOLREmbeddings(
        users, items, gamma=np.array([0.8, 0.8, 0.8]), thresholds=np.array([3.0, 4.0, 5.0])
    )
    u, i = np.array([1]), np.array([4])
    cos = [float(users[1, c] @ items[4, c]) for c in range(3)]
    expected = [0.8 * sum(cos[: c + 1]) - [3.0, 4.0, 5.0][c] for c in range(3)]
    np.testing.assert_allclose(emb.logits(u, i)[0], expected, rtol=1e-5)
    inner = emb.user_vectors(u) @ emb.item_vectors().T
    np.testing.assert_allclose(
        inner[0] - 5.0, emb.logits(np.full(6, 1), np.arange(6))[:, -1], rtol=1e-5
    )


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_multi_task_bce_sums_one_binary_loss_per_level():
    logits = torch.tensor([[0.5, -1.0], [2.0, 0.3]], dtype=torch.float64)
    # level 1 reaches threshold 1 only (label 1 exactly at c = level); level 2 reaches both.
    got = gnolr_loss(logits, torch.tensor([1, 2]), "bce").item()
    row0 = softplus(-0.5) + softplus(-1.0)  # −log σ(0.5) − log(1 − σ(−1))
    row1 = softplus(-2.0) + softplus(-0.3)
    assert got == pytest.approx((row0 + row1) / 2, rel=1e-12)
    assert got == pytest.approx(0.734311, abs=1e-6)


def test_unknown_loss_kind_and_bad_shapes_are_rejected_by_name():
    with pytest.raises(ValueError, match="unknown GNOLR loss 'nestd'; use nested, full or bce"):
        gnolr_loss(LOGITS, LEVELS, "nestd")
    with pytest.raises(
        ValueError, match=r"expected logits \(B, T\) and level \(B,\), got \(3,\), \(3,\)"
    ):
        subtask_nll(LOGITS[:, 0], LEVELS)
    with pytest.raises(ValueError, match=r"got \(3, 2\), \(3, 1\)"):
        subtask_nll(LOGITS, LEVELS.unsqueeze(1))
    with pytest.raises(ValueError, match=r"got \(3, 2\), \(2,\)"):
        subtask_nll(LOGITS, LEVELS[:2])


def test_default_eps_floors_a_disordered_middle_class_at_one_in_a_million():
    logits = torch.tensor([[-1.0, 0.5]], dtype=torch.float64)
    assert subtask_nll(logits, torch.tensor([1]))[0, 1].item() == pytest.approx(
        -math.log(1e-6), rel=1e-12
    )
    assert gnolr_loss(logits, torch.tensor([1]), "full").item() == pytest.approx(
        -math.log(1e-6), rel=1e-12
    )
    assert gnolr_loss(logits, torch.tensor([1]), "full", eps=1e-3).item() == pytest.approx(
        -math.log(1e-3), rel=1e-12
    )


def test_listwise_loss_is_the_in_batch_softmax_of_each_level_over_rows_that_reached_it():
    # Level 1: both rows reached it; level 2: only row 1 (target = its batch index 1, not 0);
    # level 3: no row, contributes nothing.
    users = [
        torch.tensor([[1.0], [2.0]], dtype=torch.float64),
        torch.tensor([[0.5], [3.0]], dtype=torch.float64),
        torch.tensor([[9.0], [9.0]], dtype=torch.float64),
    ]
    items = [
        torch.tensor([[1.0], [-1.0]], dtype=torch.float64),
        torch.tensor([[2.0], [1.0]], dtype=torch.float64),
        torch.tensor([[1.0], [2.0]], dtype=torch.float64),
    ]
    got = listwise_loss(users, items, torch.tensor([1, 2]))
    # level 1: row 0 scores (1, −1) → −log softmax[0]; row 1 scores (2, −2) → −log softmax[1]
    level1 = (softplus(-2.0) + softplus(4.0)) / 2
    # level 2: row 1 scores (6, 3) → −log softmax[1]
    level2 = softplus(3.0)
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(level1 + level2, rel=1e-12)
    none = listwise_loss(users, items, torch.tensor([0, 0]))
    assert none.item() == 0.0 and none.dtype == torch.float64


def test_ips_level_loss_sums_a_debiased_classifier_per_level():
    logits = torch.tensor([[0.5, 1.0], [2.0, -1.0]], dtype=torch.float64)
    level = torch.tensor([1, 0])  # row 0 sits exactly at level 1: positive for c = 1 only
    theta = torch.tensor([0.3, 0.25], dtype=torch.float64)
    loss = RelMFLoss(estimator="ips", local_loss="log")
    got = ips_level_loss(logits, level, theta, loss)
    # ℓ = w softplus(−z) + (1 − w) softplus(z), w = Y/θ: row 0 at c = 1 has w = 1/0.3.
    w = 1 / 0.3
    c1 = (w * softplus(-0.5) + (1 - w) * softplus(0.5) + softplus(2.0)) / 2
    c2 = (softplus(1.0) + softplus(-1.0)) / 2
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(c1 + c2, rel=1e-12)


def test_listwise_loss_needs_one_item_vector_per_user_vector():
    q = [torch.ones(2, 1, dtype=torch.float64)] * 2
    with pytest.raises(ValueError):
        listwise_loss(q, q[:1], torch.tensor([1, 2]))


@pytest.mark.parametrize("kind", ["nested", "full", "bce", "ips"])
def test_losses_follow_the_logits_device(kind):
    # Their level grids (torch.arange) must live on the logits' device: a grid built on the CPU
    # fails on a GPU, as the per-head weights once did on an H200. "meta" stands in for any
    # device that is not the CPU (shapes only, no data).
    logits = torch.zeros(4, 3, device="meta")
    level = torch.zeros(4, dtype=torch.long, device="meta")
    if kind == "ips":  # naive: IPS would check θ's values, which a meta tensor does not have
        naive = RelMFLoss(estimator="naive")
        out = ips_level_loss(logits, level, torch.ones(4, device="meta"), naive)
    else:
        out = gnolr_loss(logits, level, kind)
    assert out.device.type == "meta" and out.shape == ()
    assert subtask_nll(logits, level).device.type == "meta"
