"""The one retrieval path: top-k items by inner product, with seen/deny filters and allow-lists.

The evaluation stage, the batch stage and the service all call :meth:`Retriever.search`, so offline
metrics measure exactly what users get. Filters are applied after over-fetching from the index; a
query whose filters remove too many candidates falls back to exact search over the whole catalogue,
so the filtered result through an ANN index equals the filtered result of exact search whenever the
index returns the true neighbours.
"""

from __future__ import annotations

from collections.abc import Sequence

import faiss
import numpy as np

from models.ranking import top_k

NO_ITEM = -1


def _top_k_exact(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise top-k of a score matrix, ties broken by the lower index. −inf marks removed items."""
    ids = top_k(scores, k)
    vals = np.take_along_axis(scores, ids, axis=1)
    return np.where(np.isfinite(vals), ids, NO_ITEM), vals


class Retriever:
    """Maximum-inner-product retrieval over ``item_vectors`` (n_items, D).

    ``index`` is any FAISS index over the same vectors (Flat, HNSW, IVF…) or anything with the same
    ``ntotal``, ``d`` and ``search(queries, k) -> (scores, ids)`` (a Qdrant collection,
    serving/qdrant_index.py); without one an exact ``IndexFlatIP`` is built. ``overfetch``
    multiplies k when asking the index for candidates.
    """

    def __init__(
        self, item_vectors: np.ndarray, index: faiss.Index | None = None, overfetch: int = 2
    ):
        self.item_vectors = np.ascontiguousarray(item_vectors, dtype=np.float32)
        if self.item_vectors.ndim != 2 or len(self.item_vectors) == 0:
            raise ValueError("item_vectors must be a non-empty (n_items, D) matrix")
        if index is None:
            index = faiss.IndexFlatIP(self.item_vectors.shape[1])
            index.add(self.item_vectors)
        if index.ntotal != len(self.item_vectors) or index.d != self.item_vectors.shape[1]:
            raise ValueError(
                f"index holds {index.ntotal}×{index.d}, vectors are {self.item_vectors.shape}"
            )
        self.index = index
        self.overfetch = max(1, overfetch)

    @property
    def n_items(self) -> int:
        return len(self.item_vectors)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        exclude: Sequence[np.ndarray | None] | None = None,
        allow: Sequence[np.ndarray | None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` item indices and inner products per query, best first.

        ``exclude[q]`` lists items never returned to query q (seen items, a deny-list); ``allow[q]``,
        when given and not None, restricts query q to those candidates. Rows with fewer than k
        eligible items are padded with -1 and -inf.
        """
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        n_q = len(queries)
        if k < 1:
            raise ValueError("k must be at least 1")
        exclude = list(exclude) if exclude is not None else [None] * n_q
        allow = list(allow) if allow is not None else [None] * n_q
        if len(exclude) != n_q or len(allow) != n_q:
            raise ValueError("exclude and allow need one entry per query")
        ids = np.full((n_q, k), NO_ITEM, dtype=np.int64)
        scores = np.full((n_q, k), -np.inf, dtype=np.float32)

        restricted = [q for q in range(n_q) if allow[q] is not None]
        for q in restricted:
            ids[q], scores[q] = self._search_allowed(queries[q], k, allow[q], exclude[q])
        free = np.array([q for q in range(n_q) if allow[q] is None], dtype=np.int64)
        if free.size == 0:
            return ids, scores
        n_excl = max((len(exclude[q]) for q in free if exclude[q] is not None), default=0)
        fetch = min(self.n_items, k * self.overfetch + n_excl)
        cand_scores, cand_ids = self.index.search(queries[free], fetch)
        fallback = []
        for row, q in enumerate(free):
            keep = cand_ids[row] >= 0
            if exclude[q] is not None and len(exclude[q]):
                keep &= ~np.isin(cand_ids[row], exclude[q])
            got = cand_ids[row][keep][:k]
            n_eligible = self.n_items - (
                len(np.unique(exclude[q])) if exclude[q] is not None else 0
            )
            if len(got) < min(k, n_eligible):
                fallback.append(q)
                continue
            ids[q, : len(got)] = got
            scores[q, : len(got)] = cand_scores[row][keep][:k]
        if fallback:
            fb = np.array(fallback)
            exact = queries[fb] @ self.item_vectors.T
            for row, q in enumerate(fb):
                if exclude[q] is not None and len(exclude[q]):
                    exact[row, exclude[q]] = -np.inf
            ids[fb], scores[fb] = _top_k_exact(exact, k)
            ids[fb] = np.where(np.isfinite(scores[fb]), ids[fb], NO_ITEM)
        return ids, scores

    def _search_allowed(
        self, query: np.ndarray, k: int, allow: np.ndarray, exclude: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        cand = np.unique(np.asarray(allow, dtype=np.int64))
        cand = cand[(cand >= 0) & (cand < self.n_items)]
        if exclude is not None and len(exclude):
            cand = cand[~np.isin(cand, exclude)]
        out_ids = np.full(k, NO_ITEM, dtype=np.int64)
        out_scores = np.full(k, -np.inf, dtype=np.float32)
        if cand.size:
            top, vals = _top_k_exact((self.item_vectors[cand] @ query)[None, :], k)
            n = int((top[0] >= 0).sum())
            out_ids[:n] = cand[top[0, :n]]
            out_scores[:n] = vals[0, :n]
        return out_ids, out_scores
