"""The GNOLR loss and link against hand-computed cases (methods.md §1)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.gnolr.config import GNOLRConfig, resolve_gamma, thresholds_from_base_rates
from models.gnolr.loss import gnolr_loss, subtask_nll
from models.gnolr.network import GNOLR, GNOLREmbeddings


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
    logits = torch.tensor([[2.0, 0.0, -2.0]], dtype=torch.float64)
    p = [sig(2.0), sig(0.0), sig(-2.0)]
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
