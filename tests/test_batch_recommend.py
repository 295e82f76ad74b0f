"""The batch stage ranks exactly like the service's recommend() and never returns seen items."""

import numpy as np
import polars as pl
import pytest

from pipelines import batch_recommend as stage
from serving.batch import SCHEMA, batch_recommend
from serving.bundle import load_bundle
from serving.recommend import recommend

K = 12


@pytest.fixture(scope="module")
def bundle(pipeline_dir):
    return load_bundle(pipeline_dir / "data/serving")


@pytest.fixture(scope="module")
def table(bundle):
    return batch_recommend(bundle, k=K, batch_size=37)  # several uneven batches


def _ids_by_index(bundle) -> list[str]:
    return sorted(bundle.user_index, key=bundle.user_index.__getitem__)


def test_every_known_user_gets_k_ranked_rows_of_the_bundle_version(bundle, table):
    assert table.columns == ["user_id", "rank", "item_id", "score", "model_version"]
    assert set(table["user_id"]) == set(bundle.user_index)
    per_user = table.group_by("user_id").agg(pl.len(), pl.col("rank").sort())
    assert (per_user["len"] == K).all()
    assert all(r == list(range(K)) for r in per_user["rank"].to_list())
    assert set(table["model_version"]) == {bundle.model_version}
    assert table.select(pl.struct("user_id", "item_id").is_unique().all()).item()


def test_batch_equals_the_service_function_item_for_item(bundle, table):
    counts = np.diff(bundle.seen.indptr)
    ids = _ids_by_index(bundle)
    users = [ids[int(np.argmax(counts))], ids[int(np.argmin(counts))], ids[0], ids[-1], ids[57]]
    for user in users:
        served = recommend(bundle, user, K, exclude_seen=True)
        rows = table.filter(pl.col("user_id") == user).sort("rank")
        assert rows["item_id"].to_list() == [r.item_id for r in served.items]
        np.testing.assert_allclose(rows["score"].to_numpy(), [r.score for r in served.items])


def test_seen_items_are_excluded_and_the_order_is_the_exact_top_k_of_the_logit(bundle, table):
    embeddings = bundle.embeddings
    for user_id, rows in table.partition_by("user_id", as_dict=True).items():
        user = bundle.user_index[user_id[0]]
        seen = set(bundle.item_ids[bundle.seen[user]])
        assert not seen & set(rows["item_id"])
    # Brute force for one user: every item's deepest logit, seen items removed, sorted.
    user_id = _ids_by_index(bundle)[int(np.argmax(np.diff(bundle.seen.indptr)))]
    user = bundle.user_index[user_id]
    n = len(bundle.item_ids)
    logit = embeddings.logits(np.full(n, user), np.arange(n))[:, -1]
    logit[bundle.seen[user]] = -np.inf
    expected = bundle.item_ids[np.argsort(-logit, kind="stable")[:K]]
    got = table.filter(pl.col("user_id") == user_id).sort("rank")["item_id"].to_list()
    assert got == list(expected)


def test_without_exclusion_it_matches_the_service_too_and_keeps_seen_items(bundle):
    user = _ids_by_index(bundle)[int(np.argmax(np.diff(bundle.seen.indptr)))]
    n = len(bundle.item_ids)
    full = batch_recommend(bundle, [user], k=n, exclude_seen=False)
    served = recommend(bundle, user, n, exclude_seen=False)
    assert full["item_id"].to_list() == [r.item_id for r in served.items]
    assert len(full) == n  # the whole catalogue, seen items included


def test_unknown_users_get_the_services_popularity_fallback(bundle):
    out = batch_recommend(bundle, ["nobody", _ids_by_index(bundle)[3]], k=5)
    fallback = out.filter(pl.col("user_id") == "nobody").sort("rank")
    assert fallback["item_id"].to_list() == list(bundle.item_ids[bundle.popular[:5]])
    assert fallback["score"].to_list() == [0.0, -1.0, -2.0, -3.0, -4.0]


def test_command_line_writes_the_parquet_file(bundle, pipeline_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no params.yaml: the defaults, then the flags
    users = _ids_by_index(bundle)[:4]
    stage.main(
        [
            "--bundle",
            str(pipeline_dir / "data/serving"),
            "--out",
            str(tmp_path / "batch"),
            "--k",
            "3",
            "--users",
            ",".join(users),
        ]
    )
    out = pl.read_parquet(tmp_path / "batch" / stage.FILE)
    assert out.schema == pl.Schema(SCHEMA)
    assert out.height == 12 and out["user_id"].unique().sort().to_list() == sorted(users)
