"""The shared retrieval path: filters give the same answer through ANN and exact search."""

import faiss
import numpy as np
import pytest

from features.seen import SeenItems
from serving.index import IndexConfig, build_index, recall_and_qps
from serving.retrieval import Retriever


@pytest.fixture(scope="module")
def vectors():
    rng = np.random.default_rng(0)
    return rng.normal(size=(500, 16)).astype(np.float32), rng.normal(size=(20, 16)).astype(
        np.float32
    )


def brute_force(items, query, k, exclude=(), allow=None):
    scores = items @ query
    cand = np.arange(len(items)) if allow is None else np.asarray(sorted(set(allow)))
    cand = np.array([c for c in cand if c not in set(exclude)], dtype=np.int64)
    order = cand[np.argsort(-scores[cand], kind="stable")]
    return order[:k]


def test_exact_search_matches_brute_force_with_exclusions(vectors):
    items, queries = vectors
    retriever = Retriever(items)
    exclude = [np.arange(q, 400, 7) for q in range(len(queries))]
    ids, scores = retriever.search(queries, 10, exclude=exclude)
    for q in range(len(queries)):
        np.testing.assert_array_equal(ids[q], brute_force(items, queries[q], 10, exclude[q]))
        np.testing.assert_allclose(scores[q], items[ids[q]] @ queries[q], rtol=1e-5)


def test_hnsw_and_exact_return_identical_filtered_results(vectors):
    items, queries = vectors
    hnsw, kind = build_index(items, IndexConfig(kind="hnsw", hnsw_ef_search=500))
    assert kind == "hnsw"
    exact = Retriever(items)
    ann = Retriever(items, hnsw)
    exclude = [brute_force(items, q, 15)[::2] for q in queries]  # drop some of the true top items
    a, _ = ann.search(queries, 10, exclude=exclude)
    e, _ = exact.search(queries, 10, exclude=exclude)
    np.testing.assert_array_equal(a, e)


def test_filters_that_remove_too_much_fall_back_to_exact_search(vectors):
    items, queries = vectors
    index = faiss.IndexFlatIP(items.shape[1])
    index.add(items)
    retriever = Retriever(items, index, overfetch=1)
    # Exclude everything except 5 items: over-fetching cannot fill k = 5 from the index's first pages.
    keep = np.array([3, 99, 250, 400, 499])
    exclude = [np.setdiff1d(np.arange(500), keep)]
    ids, _ = retriever.search(queries[:1], 5, exclude=exclude)
    np.testing.assert_array_equal(ids[0], brute_force(items, queries[0], 5, exclude[0]))
    ids, scores = retriever.search(queries[:1], 8, exclude=exclude)
    assert ids[0, 5:].tolist() == [-1, -1, -1] and np.isinf(scores[0, 5:]).all()


def test_allow_list_restricts_candidates_and_respects_deny_list(vectors):
    items, queries = vectors
    retriever = Retriever(items)
    allow = [np.array([1, 2, 3, 4, 5, 6, 600, -2])]  # out-of-range ids are ignored
    ids, _ = retriever.search(queries[:1], 3, exclude=[np.array([2])], allow=allow)
    np.testing.assert_array_equal(
        ids[0], brute_force(items, queries[0], 3, [2], allow=[1, 3, 4, 5, 6])
    )


def test_index_recall_is_measured_against_exact(vectors):
    items, queries = vectors
    flat, _ = build_index(items, IndexConfig(kind="flat"))
    assert recall_and_qps(flat, items, queries, 50)["recall"] == 1.0
    ivfpq, kind = build_index(items, IndexConfig(kind="ivfpq", ivf_nlist=4, ivf_nprobe=1, pq_m=4))
    rough = recall_and_qps(ivfpq, items, queries, 50)["recall"]
    assert kind == "ivfpq" and 0 < rough < 1.0


def test_seen_items_roundtrip(tmp_path):
    seen = SeenItems.from_pairs(np.array([0, 0, 2, 0]), np.array([5, 1, 3, 5]), n_users=4)
    assert [seen[u].tolist() for u in range(4)] == [[1, 5], [], [3], []]
    seen.save(tmp_path / "s.npz")
    assert SeenItems.load(tmp_path / "s.npz")[0].tolist() == [1, 5]
