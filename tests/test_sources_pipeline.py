"""`dvc repro` on every kind of log, each ending with a served recommendation.

Most real logs hold no reaction events (MovieLens, the Open Bandit Dataset, a shop's view / cart /
purchase export): the P[Love] stages then record why they were skipped, and the index, the serving
bundle, batch recommendations and promotion still complete. The synthetic source, which has every
kind of event, is covered by tests/test_dvc.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import polars as pl
import pytest
from starlette.testclient import TestClient

from features.sources.synthetic import SyntheticConfig, retail_log, simulate
from serving.bundle import bundle_dir
from tests.asgi import service_app
from tests.conftest import dvc_repo, run, stages_run

SMALL_MODELS = {
    "gnolr": {"embedding_dim": 16, "hidden": [16], "dim": 8, "max_epochs": 1, "batch_size": 4096},
    "relmf": {"max_epochs": 1},
    "evaluate": {"ks": [10]},
    "index": {"recall_queries": 20},
}
RETAIL_COLUMNS = {"user_id": "visitorid", "item_id": "itemid", "event": "event", "ts": "timestamp"}
RETAIL_EVENTS = {"view": "impression", "addtocart": "cart", "transaction": "purchase"}


def source_params(kind: str, directory: Path, wheels: Path) -> dict:
    """Small-size parameters for one source kind, as a user would set them in params.yaml."""
    if kind == "movielens-100k":
        source = {"kind": kind, "movielens": {"negatives_per_rating": 1}}
        contract = {"levels": ["click", "cart", "purchase"], "reactions": []}
    elif kind == "obd":
        source = {"kind": kind, "obd": {"policy": "bts", "campaign": "men"}}
        contract = {"levels": ["click"], "reactions": []}
    else:  # a shop's own export: no reactions, no propensities, no positions
        events, _ = simulate(SyntheticConfig(n_users=300, n_items=200, n_impressions=30_000))
        retail_log(events).write_csv(directory / "events.csv")
        source = {
            "kind": "csv",
            "tabular": {
                "path": "events.csv",
                "columns": RETAIL_COLUMNS,
                "events": RETAIL_EVENTS,
                "ts_unit": "ms",
            },
        }
        contract = {"levels": ["cart", "purchase"], "reactions": []}
    source["cache_dir"] = str(wheels)
    return {"source": source, "contract": contract, **SMALL_MODELS}


@pytest.mark.slow  # ~3 min each on the 2-core box: a whole `dvc repro`
@pytest.mark.parametrize("kind", ["movielens-100k", "obd", "csv"])
def test_repro_completes_on_a_log_without_reactions_and_serves(kind, tmp_path, wheel_cache):
    env = dvc_repo(tmp_path, source_params(kind, tmp_path, wheel_cache))
    out = run([sys.executable, "-m", "dvc", "repro"], tmp_path, env, timeout=900)

    assert {"ingest", "train_gnolr", "index", "batch_recommend", "promote"} <= set(stages_run(out))
    assert "train_plove: skipped" in out and "plove evaluator: skipped" in out
    plove = json.loads((tmp_path / "data/metrics/plove.json").read_text())
    assert "love" in plove["skipped"]
    served = bundle_dir(tmp_path / "data/serving")
    manifest = json.loads((served / "manifest.json").read_text())
    assert manifest["plove"] is False
    promoted = json.loads((tmp_path / "data/metrics/promote.json").read_text())
    assert promoted["gnolr"]["decision"] == "promoted"
    assert "love" in promoted["plove"]["skipped"]
    batch = pl.read_parquet(tmp_path / "data/batch/recommendations.parquet")
    assert batch.height > 0

    users = pl.read_parquet(served / "users.parquet")["user_id"].to_list()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LADDER_BUNDLE", str(tmp_path / "data/serving"))
        mp.setenv("LADDER_FEEDBACK_LOG", str(tmp_path / "feedback"))
        with TestClient(service_app()) as client:
            served = client.post("/recommend", json={"user_id": users[0], "k": 5})
            loved = client.post(
                "/recommend",
                json={"user_id": users[0], "k": 5, "objective_weights": {"love": 1.0}},
            )
    assert served.status_code == 200, served.text
    items = served.json()["items"]
    assert len(items) == 5 and all(item["p_love"] is None for item in items)
    assert served.json()["model_version"] == manifest["model_version"]
    assert loved.status_code == 400 and "P[Love]" in loved.text
