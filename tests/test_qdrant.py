"""The Qdrant backend (local mode, for real): the one retrieval path over a Qdrant collection gives
the same filtered top-k as exact FAISS search, the alias swap is atomic under concurrent queries,
and the index stage publishes a bundle version whose vectors live in Qdrant."""

from __future__ import annotations

import json
import shutil
import threading
import time

import faiss
import numpy as np
import pytest
import yaml

pytest.importorskip("qdrant_client", reason="the Qdrant backend needs `pip install '.[team]'`")

from serving import qdrant_index  # noqa: E402
from serving.bundle import bundle_dir, current_version, load_bundle  # noqa: E402
from serving.recommend import recommend  # noqa: E402
from serving.retrieval import Retriever  # noqa: E402

N_ITEMS, DIM = 3000, 48


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.standard_normal((N_ITEMS, DIM)).astype(np.float32)


@pytest.fixture(scope="module")
def client():
    from qdrant_client import QdrantClient

    return QdrantClient(location=":memory:")


def exact_retriever(vectors: np.ndarray) -> Retriever:
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    return Retriever(vectors, index)


def test_qdrant_gives_the_same_filtered_top_k_as_exact_faiss(client, vectors):
    qdrant_index.write_collection(client, "items-a", vectors)
    through_qdrant = Retriever(vectors, qdrant_index.QdrantIndex(client, "items-a"))
    exact = exact_retriever(vectors)
    rng = np.random.default_rng(0)
    queries = rng.standard_normal((60, DIM)).astype(np.float32)
    seen = [rng.choice(N_ITEMS, size=rng.integers(0, 200), replace=False) for _ in queries]
    allow = [
        rng.choice(N_ITEMS, size=300, replace=False) if q % 3 == 0 else None
        for q in range(len(queries))
    ]
    for k in (1, 10, 100):
        got = through_qdrant.search(queries, k, exclude=seen, allow=allow)
        want = exact.search(queries, k, exclude=seen, allow=allow)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-5)
    # the filters really applied: no seen item comes back, allow-lists are respected
    ids, _ = got
    for q in range(len(queries)):
        assert not np.isin(ids[q], seen[q]).any()
        if allow[q] is not None:
            assert np.isin(ids[q][ids[q] >= 0], allow[q]).all()


def test_the_alias_swap_is_atomic_under_concurrent_queries(client, vectors):
    """Two collections rank differently; queries by the alias while it flips back and forth always
    get one collection's whole answer, never an error or a mix."""
    other = vectors[::-1].copy()  # item i of b is item n-1-i of a: every top-k differs
    qdrant_index.write_collection(client, "items-a", vectors)
    qdrant_index.write_collection(client, "items-b", other)
    qdrant_index.move_alias(client, "items", "items-a")
    by_alias = Retriever(vectors, qdrant_index.QdrantIndex(client, "items"))
    queries = np.random.default_rng(1).standard_normal((8, DIM)).astype(np.float32)
    k = 10
    answers = {
        "a": exact_retriever(vectors).search(queries, k)[0],
        "b": exact_retriever(other).search(queries, k)[0],
    }
    assert not np.array_equal(answers["a"], answers["b"])
    stop = threading.Event()
    seen_answers: set[str] = set()
    problems: list[str] = []

    def query() -> None:
        while not stop.is_set():
            try:
                _, ids = by_alias.index.search(queries, k)  # FAISS order: scores, ids
            except Exception as exc:  # noqa: BLE001 — any failure is what this test looks for
                problems.append(repr(exc))
                continue
            for q in range(len(queries)):  # each query is answered by one collection, whole
                which = [n for n, a in answers.items() if np.array_equal(ids[q], a[q])]
                if not which:
                    problems.append(f"query {q}: {ids[q]} is neither collection's answer")
                seen_answers.update(which)

    threads = [threading.Thread(target=query) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for n in range(100):
            qdrant_index.move_alias(client, "items", "items-b" if n % 2 == 0 else "items-a")
            assert qdrant_index.alias_target(client, "items") in ("items-a", "items-b")
            time.sleep(0.005)  # let the queries run against each target
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not problems, problems[:5]
    assert seen_answers == {"a", "b"}


def test_a_missing_collection_is_named(client):
    with pytest.raises(qdrant_index.QdrantUnavailableError, match="nothing-here"):
        qdrant_index.QdrantIndex(client, "nothing-here")


@pytest.fixture
def qdrant_stage_dir(pipeline_dir, tmp_path, monkeypatch):
    """A copy of the tiny pipeline's outputs with ``index.backend: qdrant`` in memory."""
    for name in ("data", "params.yaml"):
        src = pipeline_dir / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["index"] |= {"backend": "qdrant", "qdrant": {"url": ":memory:", "collection": "tiny"}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return tmp_path


def test_the_index_stage_publishes_its_vectors_to_qdrant_and_serves_the_same_slates(
    qdrant_stage_dir, pipeline_dir, capsys
):
    from pipelines import index

    index.main()
    root = qdrant_stage_dir / "data/serving"
    version = current_version(root)
    manifest = json.loads((bundle_dir(root) / "manifest.json").read_text())
    assert manifest["index_backend"] == "qdrant" and manifest["qdrant_alias"] == "tiny"
    assert not (bundle_dir(root) / "index.faiss").exists()
    client = qdrant_index.connect(":memory:")
    assert qdrant_index.alias_target(client, "tiny") == f"tiny-{version}"
    metrics = json.loads((qdrant_stage_dir / "data/metrics/index.json").read_text())
    assert metrics["kind"] == "qdrant" and metrics["recall_at_100"] == pytest.approx(1.0)
    assert f"tiny-{version} ← alias tiny" in capsys.readouterr().out

    served = load_bundle(root)
    reference = load_bundle(pipeline_dir / "data/serving")  # the same model through FAISS
    assert isinstance(served.retriever.index, qdrant_index.QdrantIndex)
    users = list(served.user_index)[:20]
    some_items = [str(i) for i in reference.item_ids[:40]]
    for n, user in enumerate(users):
        filters = {"deny_items": some_items[:5]} if n % 2 else {"allow_items": some_items}
        got = recommend(served, user, 10, **filters)
        want = recommend(reference, user, 10, **filters)
        assert [r.item_id for r in got.items] == [r.item_id for r in want.items]

    # new versions (other vectors) get their own collections; the alias moves, old ones go
    emb = np.load(qdrant_stage_dir / "data/models/gnolr/embeddings.npz")
    arrays = {k: emb[k] for k in emb.files}
    for change in (lambda x: x[::-1].copy(), lambda x: 0.5 * x):
        arrays["items"] = change(arrays["items"])
        np.savez(qdrant_stage_dir / "data/models/gnolr/embeddings.npz", **arrays)
        index.main()
    versions = sorted(p.name for p in (root / "versions").iterdir())
    assert len(versions) == 2 and version not in versions  # keep_versions: 2
    collections = sorted(c.name for c in client.get_collections().collections)
    assert collections == sorted(f"tiny-{v}" for v in versions)
    assert qdrant_index.alias_target(client, "tiny") == f"tiny-{current_version(root)}"
    newest = load_bundle(root)
    assert newest.retriever.index.name == f"tiny-{newest.model_version}"
