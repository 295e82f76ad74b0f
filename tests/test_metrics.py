"""Metrics against small worked examples."""

import math

import numpy as np
import pytest

from evaluation.metrics import auc, graded_ndcg, hit_matrix, recall_ndcg_mrr


def test_auc_counts_ordered_pairs_and_half_ties():
    # positives 0.35, 0.8; negatives 0.1, 0.4: pairs won (0.35>0.1), (0.8>0.1), (0.8>0.4) = 3 of 4
    assert auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == 0.75
    # a tie between a positive and a negative counts one half: (1 + 0.5) / 2
    assert auc(np.array([0.5, 0.5, 0.9]), np.array([0, 1, 1])) == pytest.approx(0.75)
    assert math.isnan(auc(np.array([0.1, 0.2]), np.array([1, 1])))


def test_recall_ndcg_mrr_worked_example():
    # user 0 relevant {3, 7}; top-3 = [7, 1, 3] → hits at ranks 1 and 3
    # user 1 relevant {2};    top-3 = [5, 6, 2] → hit at rank 3
    top = np.array([[7, 1, 3], [5, 6, 2]])
    hits = hit_matrix(top, np.array([0, 1]), np.array([0, 0, 1]), np.array([3, 7, 2]), n_items=10)
    assert hits.tolist() == [[True, False, True], [False, False, True]]
    m = recall_ndcg_mrr(hits, np.array([2, 1]), k=3)
    ndcg0 = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    ndcg1 = (1 / math.log2(4)) / 1
    assert m["recall"] == pytest.approx((1.0 + 1.0) / 2)
    assert m["ndcg"] == pytest.approx((ndcg0 + ndcg1) / 2)
    assert m["mrr"] == pytest.approx((1 + 1 / 3) / 2)
    m1 = recall_ndcg_mrr(hits, np.array([2, 1]), k=1)
    assert m1["recall"] == pytest.approx((0.5 + 0) / 2)
    assert m1["ndcg"] == pytest.approx(0.5)


def test_graded_ndcg_uses_true_gains():
    gains = np.array([[0.1, 0.5, 0.2, 0.0]])
    top = np.array([[2, 1]])  # gains 0.2, 0.5 against the ideal 0.5, 0.2
    dcg = 0.2 + 0.5 / math.log2(3)
    ideal = 0.5 + 0.2 / math.log2(3)
    assert graded_ndcg(np.take_along_axis(gains, top, 1), gains, 2) == pytest.approx(dcg / ideal)
