"""Item vectors in Qdrant: the vector-database backend of the one retrieval path.

``params.yaml: index.backend: qdrant`` puts the serving item vectors in Qdrant instead of a FAISS
file inside the bundle. :class:`QdrantIndex` answers ``search(queries, k)`` like a FAISS index, so
:class:`serving.retrieval.Retriever` applies the same seen / allow / deny filters (over-fetch, exact
fallback) and the `index` stage measures the same recall@K against exact search.

Versions and the alias. The `index` stage writes each bundle version's vectors to a new collection
``<collection>-<model_version>`` (point id = item_idx, dot product) and then moves the alias
``<collection>`` to it with one ``update_collection_aliases`` request (delete + create together,
which Qdrant applies atomically: a query by the alias sees the old collection or the new one, never
neither). A bundle pins its own collection, as it pins its own id maps: a worker still serving
version A queries A's collection until it swaps in version B's bundle, so an item index never
refers to another version's catalogue. The alias names the newest version for everything outside
the bundles (other services, ad-hoc queries) and is the switch for a rollback.

``url``: ``http(s)://host:port`` (a Qdrant server), ``:memory:`` (in this process only: tests) or a
directory (Qdrant's embedded on-disk mode: one process at a time, so one worker). Clients are
cached per URL in a process, so an in-memory store is shared by the stage and the loader in tests.

qdrant-client is an optional dependency (``pip install '.[team]'``), imported only in this module.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from qdrant_client import QdrantClient

UPSERT_BATCH = 1024
QUERY_BATCH = 256


class QdrantUnavailableError(RuntimeError):
    """qdrant-client is not installed, or the collection a bundle needs is not there."""


def _qdrant():
    try:
        import qdrant_client
        from qdrant_client import models
    except ImportError as exc:  # an optional backend: say how to get it
        raise QdrantUnavailableError(
            "index.backend: qdrant needs qdrant-client: pip install -c constraints.txt '.[team]'"
        ) from exc
    return qdrant_client, models


@functools.cache
def connect(url: str) -> QdrantClient:
    """The process's client for ``url`` (a server URL, ``:memory:`` or a local directory)."""
    qdrant_client, _ = _qdrant()
    if url == ":memory:":
        return qdrant_client.QdrantClient(location=":memory:")
    if url.startswith(("http://", "https://")):
        return qdrant_client.QdrantClient(url=url)
    return qdrant_client.QdrantClient(path=url)


def collection_name(alias: str, version: str) -> str:
    """The collection holding one bundle version's vectors."""
    return f"{alias}-{version}"


class QdrantIndex:
    """A FAISS-like view of one Qdrant collection (or alias): ``ntotal``, ``d``, ``search``.

    ``hnsw_ef`` is the search-time beam of a server's HNSW index (``exact=True`` searches every
    point); Qdrant's local mode always searches exactly.
    """

    def __init__(
        self, client: QdrantClient, name: str, hnsw_ef: int | None = None, exact: bool = False
    ) -> None:
        _, models = _qdrant()
        if not client.collection_exists(name):
            raise QdrantUnavailableError(f"Qdrant has no collection or alias {name!r}")
        info = client.get_collection(name)
        params = info.config.params.vectors
        self.client, self.name = client, name
        self.d = int(params.size)
        self.ntotal = int(client.count(name, exact=True).count)
        self._params = models.SearchParams(hnsw_ef=hnsw_ef, exact=exact)
        self._models = models

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` inner products and item indices per query row, padded with -inf and -1."""
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        for lo in range(0, len(queries), QUERY_BATCH):
            requests = [
                self._models.QueryRequest(
                    query=q.tolist(), limit=k, params=self._params, with_payload=False
                )
                for q in queries[lo : lo + QUERY_BATCH]
            ]
            answers = self.client.query_batch_points(self.name, requests=requests)
            for row, answer in enumerate(answers, start=lo):
                points = answer.points[:k]
                ids[row, : len(points)] = [int(p.id) for p in points]
                scores[row, : len(points)] = [p.score for p in points]
        return scores, ids


def write_collection(client: QdrantClient, name: str, vectors: np.ndarray) -> None:
    """Create collection ``name`` holding ``vectors`` (n, D) with ids 0..n-1, dot product.

    An existing collection of that name (an earlier run of the same version) is reused when it holds
    n points, else recreated.
    """
    _, models = _qdrant()
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    if client.collection_exists(name):
        if client.count(name, exact=True).count == n:
            return
        client.delete_collection(name)
    client.create_collection(
        name, vectors_config=models.VectorParams(size=dim, distance=models.Distance.DOT)
    )
    for lo in range(0, n, UPSERT_BATCH):
        chunk = vectors[lo : lo + UPSERT_BATCH]
        client.upsert(
            name,
            points=models.Batch(ids=list(range(lo, lo + len(chunk))), vectors=chunk.tolist()),
            wait=True,
        )


def move_alias(client: QdrantClient, alias: str, name: str) -> None:
    """Point ``alias`` at collection ``name`` in one request (delete + create, applied together)."""
    _, models = _qdrant()
    current = {a.alias_name for a in client.get_aliases().aliases}
    ops = []
    if alias in current:
        ops.append(models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias)))
    ops.append(
        models.CreateAliasOperation(
            create_alias=models.CreateAlias(collection_name=name, alias_name=alias)
        )
    )
    client.update_collection_aliases(change_aliases_operations=ops)


def alias_target(client: QdrantClient, alias: str) -> str | None:
    """The collection ``alias`` points to, or None."""
    for a in client.get_aliases().aliases:
        if a.alias_name == alias:
            return a.collection_name
    return None


def prune_collections(client: QdrantClient, alias: str, keep_versions: list[str]) -> list[str]:
    """Delete the ``<alias>-*`` collections of versions not in ``keep_versions``; returns them."""
    keep = {collection_name(alias, v) for v in keep_versions}
    target = alias_target(client, alias)
    gone = []
    for c in client.get_collections().collections:
        if c.name.startswith(f"{alias}-") and c.name not in keep and c.name != target:
            client.delete_collection(c.name)
            gone.append(c.name)
    return gone
