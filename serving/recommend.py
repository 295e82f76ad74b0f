"""The one recommend path: the logic behind every endpoint, the batch stage and offline evaluation.

Plain functions of a :class:`~serving.bundle.Bundle` (testable without HTTP; the BentoML service
only validates, calls these and maps errors), plus :func:`ranker` / :func:`level_ranker`, the same
retrieval for any scorer's vectors, which the evaluation stage and training validation rank with.
Every candidate list comes from :meth:`serving.retrieval.Retriever.search` — the one retrieval path,
with the seen / deny filters as ``exclude`` and the allow-list as ``allow`` — so what is served is
what offline evaluation measured.

Who the query is:

- a known ``user_id``: the user's GNOLR query vector; ``recent_item_ids`` are then only excluded
  (with ``exclude_seen``) — the trained vector already knows the user;
- an unknown user with ``recent_item_ids`` (a cold user, ``fallback="recent_items"``): a pseudo-user
  whose per-level sub-embeddings are the per-head means of those items' sub-embeddings, each
  re-normalised to unit length like a trained user's, ū^h = Σ_i e_i^h / ‖Σ_i e_i^h‖; its query and
  per-level probabilities follow from ū exactly as for a trained user; no P[Love] (it is per user);
- an unknown user without recent items: the most popular items (``fallback="popular"``, score =
  −rank among the items the filters leave, no probabilities).

Ids in ``recent_item_ids``, ``allow_items``, ``deny_items``, ``similar_items`` and ``score`` pairs
must exist in the bundle: unknown ones raise :class:`UnknownIdsError` (a 400 naming them).
``objective_weights`` re-rank known users' candidates (methods.md §3); cold and unknown users get
the relevance or popularity order. Exploration (``serving.exploration``) samples the slate from a
softmax over the scores of the top ``max(N_CANDIDATES, k)`` candidates.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from evaluation.protocol import LevelRanker, RecommendFn
from features.contract import IMPRESSION
from features.seen import SeenItems
from models.baselines import Scorer
from models.blend import BlendWeights, blended_recommend
from models.gnolr.network import GNOLREmbeddings
from serving.bundle import Bundle
from serving.exploration import sample_slate
from serving.retrieval import NO_ITEM, Retriever

N_CANDIDATES = 100  # relevance candidates re-ranked by the blend, and the exploration pool
ANONYMOUS_PREFIX = "anon-"  # user id logged for a request with recent items but no user id
# A slate id as minted below (uuid4().hex): what /feedback accepts as a slate_id.
SLATE_ID_PATTERN = re.compile(r"[0-9a-f]{12}4[0-9a-f]{3}[89ab][0-9a-f]{15}")


class UnknownIdsError(ValueError):
    """Ids that the served bundle does not know; the message names (up to 10 of) them."""

    def __init__(self, field_name: str, ids: Sequence[str]) -> None:
        self.field_name, self.ids = field_name, list(ids)
        shown = ", ".join(repr(i) for i in self.ids[:10])
        more = f" and {len(self.ids) - 10} more" if len(self.ids) > 10 else ""
        super().__init__(f"unknown {field_name}: {shown}{more}")


def item_indices(bundle: Bundle, ids: Sequence[str], field_name: str) -> np.ndarray:
    """Bundle indices of external item ids; any unknown id raises :class:`UnknownIdsError`."""
    unknown = list(dict.fromkeys(i for i in ids if i not in bundle.item_index))
    if unknown:
        raise UnknownIdsError(field_name, unknown)
    return np.fromiter((bundle.item_index[i] for i in ids), dtype=np.int64, count=len(ids))


@dataclass
class Recommendation:
    item_id: str
    score: float
    probabilities: dict[str, float] | None = None
    p_love: float | None = None
    position: int = 0
    propensity: float = 1.0


@dataclass
class RecommendResult:
    items: list[Recommendation]
    model_version: str
    fallback: str | None = None  # "recent_items" (cold user) or "popular" (unknown user)
    user_id: str | None = None
    slate_id: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass
class _Restricted:
    """A retriever whose every search is limited to ``allow`` (for the blend's candidate search)."""

    retriever: Retriever
    allow: np.ndarray | None

    def search(self, queries, k, exclude=None, allow=None):
        n = len(np.atleast_2d(queries))
        restrict = None if self.allow is None else [self.allow] * n
        return self.retriever.search(queries, k, exclude=exclude, allow=restrict)


def _cold_user(bundle: Bundle, recent: np.ndarray) -> GNOLREmbeddings:
    """A one-user GNOLREmbeddings whose user is the normalised mean of ``recent`` items (per head)."""
    emb = bundle.embeddings
    mean = emb.items[recent].astype(np.float64).mean(axis=0)  # (H, d)
    norm = np.linalg.norm(mean, axis=1, keepdims=True)
    pseudo = np.where(norm > 0, mean / np.where(norm > 0, norm, 1.0), 0.0)[None]
    return emb.with_users(pseudo)


def _concat(*parts: np.ndarray | None) -> np.ndarray:
    kept = [np.asarray(p, dtype=np.int64) for p in parts if p is not None and len(p)]
    return np.unique(np.concatenate(kept)) if kept else np.zeros(0, np.int64)


def ranked_by_relevance(
    bundle: Bundle,
    users: np.ndarray,
    k: int,
    exclude: Sequence[np.ndarray | None] | None = None,
    allow: Sequence[np.ndarray | None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k item indices (n, k) of bundle user indices ``users`` by the deepest logit, best first,
    and every level's logit l_c of those pairs (n, k, T). One :meth:`Retriever.search` for all
    users; rows with fewer than k eligible items are padded with -1 and NaN."""
    users = np.asarray(users, dtype=np.int64)
    ids, _ = bundle.retriever.search(bundle.embeddings.user_vectors(users), k, exclude, allow)
    logits = np.full((*ids.shape, bundle.embeddings.n_levels), np.nan)
    valid = ids != NO_ITEM
    rows = np.broadcast_to(users[:, None], ids.shape)
    logits[valid] = bundle.embeddings.logits(rows[valid], ids[valid])
    return ids, logits


def ranker(
    retriever: Retriever, user_vectors: np.ndarray, seen: SeenItems, batch: int = 1024
) -> RecommendFn:
    """``(users, k) -> top-k item indices``, best first, over ``retriever`` for the query vectors
    ``user_vectors[users]``, each user's ``seen`` items excluded; searched ``batch`` users at a
    time."""

    def recommend_users(users: np.ndarray, k: int) -> np.ndarray:
        out = []
        for start in range(0, users.size, batch):
            chunk = users[start : start + batch]
            ids, _ = retriever.search(user_vectors[chunk], k, exclude=[seen[u] for u in chunk])
            out.append(ids)
        return np.concatenate(out) if out else np.zeros((0, k), np.int64)

    return recommend_users


def level_ranker(scorer: Scorer, seen: SeenItems) -> LevelRanker:
    """Level c → the :func:`ranker` of the scorer's level-c (query, item) vectors: exact search
    (the serving index is exact up to ``index.auto_exact_max_items``)."""

    def at_level(level: int) -> RecommendFn:
        user_vectors, item_vectors = scorer.level_vectors(level)
        return ranker(Retriever(item_vectors), user_vectors, seen)

    return at_level


def popular_items(
    bundle: Bundle, k: int, allow: np.ndarray | None = None, deny: np.ndarray | None = None
) -> np.ndarray:
    """The fallback of an unknown user: the ``k`` most popular items the filters leave."""
    ids = np.asarray(bundle.popular, dtype=np.int64)
    if allow is not None:
        ids = ids[np.isin(ids, allow)]
    if deny is not None and deny.size:
        ids = ids[~np.isin(ids, deny)]
    return ids[:k]


def recommend(
    bundle: Bundle,
    user_id: str | None,
    k: int,
    exclude_seen: bool = True,
    weights: BlendWeights | None = None,
    *,
    recent_item_ids: Sequence[str] = (),
    allow_items: Sequence[str] | None = None,
    deny_items: Sequence[str] = (),
    exploration: float = 0.0,
    rng: np.random.Generator | None = None,
) -> RecommendResult:
    """A slate of up to ``k`` items, best first (or sampled when ``exploration`` > 0).

    Scores: the deepest level's logit l_T; the blend ``w_rel·l_T + w_love·logit(P[Love])`` over the
    top ``max(N_CANDIDATES, k)`` by relevance when ``weights`` are given (known users); −rank for
    the popularity fallback. Fewer than k items come back when the filters leave fewer.
    """
    if k < 1:
        raise ValueError("k must be at least 1")
    if weights is not None and weights.love > 0 and bundle.plove is None:
        raise ValueError("a love weight needs the P[Love] model, which this bundle does not have")
    if not user_id and not recent_item_ids:
        raise ValueError("give a user_id or recent_item_ids (or both)")
    recent = item_indices(bundle, recent_item_ids, "recent_item_ids")
    allow = None if allow_items is None else item_indices(bundle, allow_items, "allow_items")
    deny = item_indices(bundle, deny_items, "deny_items")
    n_pool = max(N_CANDIDATES, k) if exploration > 0 else k
    user = bundle.user_index.get(user_id) if user_id else None
    probs = love = None
    fallback = None
    if user is not None:
        exclude = _concat(
            bundle.seen[user] if exclude_seen else None, recent if exclude_seen else None, deny
        )
        if weights is None:
            ids, logits = ranked_by_relevance(bundle, np.array([user]), n_pool, [exclude], [allow])
            keep = ids[0] != NO_ITEM
            ids, logits = ids[0][keep], logits[0][keep]
            scores = logits[:, -1]
        else:
            ids, blend = blended_recommend(
                _Restricted(bundle.retriever, allow),
                bundle.embeddings.user_vectors(np.array([user])),
                float(bundle.embeddings.thresholds[-1]),
                bundle.plove,
                np.array([user]),
                n_pool,
                weights,
                max(N_CANDIDATES, n_pool),
                [exclude],
            )
            keep = ids[0] != NO_ITEM
            ids, scores = ids[0][keep], blend[0][keep]
            logits = bundle.embeddings.logits(np.full(ids.size, user), ids)
        probs = 1.0 / (1.0 + np.exp(-logits))
        if bundle.plove is not None:
            love = bundle.plove.predict(np.full(ids.size, user), ids, 0)
    elif recent.size:
        fallback = "recent_items"
        pseudo = _cold_user(bundle, recent)
        exclude = _concat(recent if exclude_seen else None, deny)
        ids, _ = bundle.retriever.search(
            pseudo.user_vectors(), n_pool, exclude=[exclude], allow=[allow]
        )
        ids = ids[0][ids[0] != NO_ITEM]
        logits = pseudo.logits(np.zeros(ids.size, np.int64), ids)
        scores, probs = logits[:, -1], 1.0 / (1.0 + np.exp(-logits))
    else:
        fallback = "popular"
        ids = popular_items(bundle, n_pool, allow, deny)
        scores = -np.arange(ids.size, dtype=np.float64)

    if exploration > 0 and ids.size:
        order, propensity = sample_slate(scores, k, exploration, rng)
    else:
        order, propensity = np.arange(min(k, ids.size)), np.ones(min(k, ids.size))
    levels = bundle.levels
    items = [
        Recommendation(
            item_id=str(bundle.item_ids[ids[n]]),
            score=float(scores[n]),
            probabilities=None
            if probs is None
            else {c: float(probs[n, j]) for j, c in enumerate(levels)},
            p_love=None if love is None else float(love[n]),
            position=pos,
            propensity=float(propensity[pos]),
        )
        for pos, n in enumerate(order.tolist())
    ]
    result = RecommendResult(items, bundle.model_version, fallback)
    result.user_id = user_id or f"{ANONYMOUS_PREFIX}{result.slate_id}"
    return result


def impression_records(result: RecommendResult, now: datetime | None = None) -> list[dict]:
    """The slate as ``impression`` events for the feedback log (data contract + slate/model ids)."""
    ts = (now or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="microseconds")
    return [
        {
            "user_id": result.user_id,
            "item_id": r.item_id,
            "event": IMPRESSION,
            "ts": ts,
            "position": r.position,
            "propensity": r.propensity,
            "slate_id": result.slate_id,
            "model_version": result.model_version,
        }
        for r in result.items
    ]


def similar_items(bundle: Bundle, item_id: str, k: int) -> list[tuple[str, float]]:
    """The ``k`` items with the largest inner product ⟨v_i, v_j⟩ of serving item vectors, i ≠ j."""
    if k < 1:
        raise ValueError("k must be at least 1")
    idx = item_indices(bundle, [item_id], "item_id")
    query = bundle.retriever.item_vectors[idx]
    ids, scores = bundle.retriever.search(query, k, exclude=[idx])
    keep = ids[0] != NO_ITEM
    return [
        (str(bundle.item_ids[i]), float(s))
        for i, s in zip(ids[0][keep], scores[0][keep], strict=True)
    ]


@dataclass
class PairScore:
    user_id: str
    item_id: str
    probabilities: dict[str, float]
    p_love: float | None


def score_pairs(bundle: Bundle, pairs: Sequence[tuple[str, str]]) -> list[PairScore]:
    """P(level ≥ c) = σ(l_c) per level and P[Love] (position 0) of known (user, item) pairs."""
    unknown_users = list(dict.fromkeys(u for u, _ in pairs if u not in bundle.user_index))
    if unknown_users:
        raise UnknownIdsError("user_id", unknown_users)
    items = item_indices(bundle, [i for _, i in pairs], "item_id")
    users = np.fromiter((bundle.user_index[u] for u, _ in pairs), np.int64, len(pairs))
    if not len(pairs):
        return []
    probs = bundle.embeddings.probabilities(users, items)
    love = None if bundle.plove is None else bundle.plove.predict(users, items, 0)
    return [
        PairScore(
            u,
            i,
            {c: float(probs[n, j]) for j, c in enumerate(bundle.levels)},
            None if love is None else float(love[n]),
        )
        for n, (u, i) in enumerate(pairs)
    ]
