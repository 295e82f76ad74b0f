"""The comparison report built from a small set of runs in a real (temporary) MLflow store."""

from __future__ import annotations

import base64
import csv
import json
import re
from pathlib import Path

import pytest
from mlflow import MlflowClient

from reporting import ReportConfig, ReportError, build_report
from reporting.index_kinds import index_points

RELIABILITY = "bin,count,predicted,observed,lower,upper\n" + "\n".join(
    [
        "0,100,0.01,0.02,0.005,0.07",
        "1,300,0.05,0.04,0.02,0.07",
        "2,600,0.20,0.25,0.21,0.29",
    ]
)
# ECE = Σ n_b·|p̂_b − ō_b| / Σ n_b = (100·0.01 + 300·0.01 + 600·0.05) / 1000 = 0.034
LOVE_SWEEP = """candidates,w_rel,w_love,love_rate,purchase_rate,coverage,novelty,guardrail_ok
100,1.0,0.0,0.0040,0.0034,0.051,6.50,true
100,1.0,1.0,0.0049,0.0041,0.0525,6.43,true
100,1.0,4.0,0.0046,0.0037,0.059,6.61,true
100,0.0,1.0,0.0042,0.0035,0.061,6.69,false
"""
LEVELS = ("click", "cart", "purchase")


def _run(client, exp_id, name, start, tags, metrics, artifacts=None, tmp=None) -> str:
    run = client.create_run(exp_id, start_time=start, run_name=name, tags=tags)
    rid = run.info.run_id
    for key, value in metrics.items():
        client.log_metric(rid, key, value, timestamp=start)
    for rel, text in (artifacts or {}).items():
        local = Path(tmp) / rid / Path(rel).name
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_text(text)
        client.log_artifact(rid, str(local), artifact_path=str(Path(rel).parent))
    client.set_terminated(rid, end_time=start + 1000)
    return rid


def _tags(stage, model, pipeline_run) -> dict[str, str]:
    tags = {
        "stage": stage,
        "pipeline_run": pipeline_run,
        "git_commit": f"commit-{pipeline_run}",
        "params_digest": f"digest-{pipeline_run}",
        "source": "synthetic",
        "dvc_exp": "",
    }
    if model:
        tags["model"] = model
    return tags


def _levels(metric: str, values: tuple[float, float, float]) -> dict[str, float]:
    return {f"test/{metric}/{lv}": v for lv, v in zip(LEVELS, values, strict=True)}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two pipeline runs: ``pr-old`` (all stages) and ``pr-new`` (P[Love] not re-run)."""
    tmp_path = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("ladder", artifact_location=(tmp_path / "art").as_uri())
    t0 = 1_700_000_000_000
    ids = {
        "old_gnolr": _run(
            client,
            exp,
            "gnolr",
            t0,
            _tags("evaluate", "gnolr", "pr-old"),
            _levels("ndcg_at_10", (0.4321, 0.3, 0.2)),
        ),
        "plove": _run(
            client,
            exp,
            "plove",
            t0 + 10,
            _tags("train_plove", "plove", "pr-old"),
            {"test/ece": 0.0339, "test/log_loss": 0.0712},
            {"plots/plove_reliability.csv": RELIABILITY},
            tmp_path / "up",
        ),
        "gnolr": _run(
            client,
            exp,
            "gnolr",
            t0 + 100,
            _tags("train_gnolr", "gnolr", "pr-new"),
            _levels("ndcg_at_10", (0.1234, 0.0567, 0.0321))
            | _levels("gt_ndcg_at_10", (0.2111, 0.1122, 0.0733))
            | _levels("auc", (0.7296, 0.8532, 0.8936)),
        ),
        "popularity": _run(
            client,
            exp,
            "popularity",
            t0 + 110,
            _tags("evaluate", "popularity", "pr-new"),
            _levels("ndcg_at_10", (0.0987, 0.0456, 0.0222)),
        ),
        "index": _run(
            client,
            exp,
            "index",
            t0 + 120,
            _tags("index", "gnolr", "pr-new") | {"index_kind": "hnsw"},
            {"test/recall_at_100": 0.9731, "test/qps": 12345.6},
        ),
        # promote repeats a gated metric: not the model's evaluation
        "promote": _run(
            client,
            exp,
            "promote-gnolr",
            t0 + 130,
            _tags("promote", "gnolr", "pr-new"),
            {"test/ndcg_at_10/purchase": 0.8888},
        ),
        "promote_plove": _run(
            client,
            exp,
            "promote-plove",
            t0 + 131,
            _tags("promote", "plove", "pr-new"),
            {"test/ece": 0.0777},
        ),
        # another protocol: never part of a pipeline run's report
        "compare": _run(
            client,
            exp,
            "gnolr",
            t0 + 200,
            {"stage": "compare", "model": "gnolr"},
            _levels("ndcg_at_10", (0.9999, 0.9, 0.9)),
        ),
    }
    root = tmp_path / "workspace"
    sweep = root / "data/metrics/plove/love_weight_sweep_c100.csv"
    sweep.parent.mkdir(parents=True)
    sweep.write_text(LOVE_SWEEP)
    return {"uri": uri, "root": root, "ids": ids}


def _section(html: str, key: str) -> str:
    match = re.search(rf'<section id="{key}">(.*?)</section>', html, re.S)
    assert match, f"no section {key}"
    return match.group(1)


def _build(store: dict, **kw):
    cfg = ReportConfig(store["uri"], "ladder", root=store["root"], recall_floor=0.9, **kw)
    return build_report(cfg)


def test_report_of_the_newest_pipeline_run(store):
    report = _build(store)
    html = report.html
    assert report.pipeline_run == "pr-new"

    ndcg = _section(html, "ndcg")
    for model, values in {
        "gnolr": ("0.1234", "0.0567", "0.0321", "0.2111", "0.7296"),
        "popularity": ("0.0987", "0.0456", "0.0222"),
    }.items():
        row = re.search(rf"<tr><td class=\"l\">{model}</td>.*?</tr>", ndcg).group(0)
        assert all(f"<td>{v}</td>" in row for v in values), row
    # older pipeline run, compare protocol, promote's gate
    assert not any(v in html for v in ("0.4321", "0.9999", "0.8888", "0.0777"))

    calibration = _section(html, "calibration")
    assert "ECE recomputed from the 3 plotted bins = <b>0.0340</b>" in calibration
    assert "<code>test/ece</code>) = <b>0.0339</b>" in calibration
    assert "earlier pipeline run <code>pr-old</code>" in calibration  # train_plove not re-run
    assert store["ids"]["plove"] in calibration

    index = _section(html, "index")
    assert (
        '<td class="l">served (hnsw)</td><td class="l"></td><td>0.9731</td><td>12,345.6</td>'
        in index
    )
    assert "Other index kinds not tracked yet" in index

    love = _section(html, "love_weight")
    assert "workspace file <code>data/metrics/plove/love_weight_sweep_c100.csv</code>" in love

    m_sweep = _section(html, "m_sweep")
    assert "Not tracked yet: run <code>python -m experiments.unbiased synthetic</code>" in m_sweep
    assert "<img" not in m_sweep
    for key in ("ndcg", "calibration", "index", "love_weight"):
        images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', _section(html, key))
        assert len(images) == 1 and base64.b64decode(images[0]).startswith(b"\x89PNG"), key

    # self-contained: nothing fetched from anywhere
    assert not re.search(r"https?://", html)
    assert not re.search(r"<(script|link|iframe)\b", html, re.I)
    assert not re.search(r'src="(?!data:)', html)

    # the header names the runs, commits and digests it used
    for rid in ("gnolr", "popularity", "index", "plove"):
        assert store["ids"][rid] in html
    for text in ("commit-pr-new", "commit-pr-old", "digest-pr-new", "synthetic", "Generated"):
        assert text in html
    assert {r.run_id for r in report.runs} == {
        store["ids"][k] for k in ("gnolr", "popularity", "index", "plove")
    }


def test_report_of_a_chosen_pipeline_run(store):
    html = _build(store, pipeline_run="pr-old").html
    assert "<td>0.4321</td>" in _section(html, "ndcg")
    assert "popularity" not in _section(html, "ndcg")  # only evaluated in pr-new
    assert "earlier pipeline run" not in _section(html, "calibration")
    # pr-new's index run started later: not a fallback for pr-old
    assert "Not tracked yet: run <code>dvc repro index</code>" in _section(html, "index")
    with pytest.raises(ReportError, match="pr-missing"):
        _build(store, pipeline_run="pr-missing")


def test_store_without_pipeline_run_tags(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("ladder", artifact_location=(tmp_path / "art").as_uri())
    _run(
        client, exp, "gnolr", 1000, {"stage": "train_gnolr"}, _levels("ndcg_at_10", (0.1, 0.2, 0.3))
    )
    _run(
        client,
        exp,
        "gnolr",
        2000,
        {"stage": "train_gnolr"},
        _levels("ndcg_at_10", (0.1111, 0.2, 0.3)),
    )
    _run(
        client, exp, "gnolr", 3000, {"stage": "compare"}, _levels("ndcg_at_10", (0.7777, 0.2, 0.3))
    )
    report = build_report(ReportConfig(uri, "ladder", root=tmp_path))
    assert report.pipeline_run is None
    assert "<td>0.1111</td>" in report.html and "0.7777" not in report.html
    for key in ("calibration", "m_sweep", "love_weight", "index"):
        assert "Not tracked yet: run" in _section(report.html, key)
    with pytest.raises(ReportError, match="no MLflow experiment"):
        build_report(ReportConfig(uri, "nope", root=tmp_path))


def test_index_kinds_file_shapes():
    records = [
        {"kind": "hnsw", "ef_search": 64, "recall_at_100": 0.95, "qps": 9000.0},
        {"kind": "hnsw", "ef_search": 256, "recall_at_100": 0.99, "qps": 4000.0},
        {"kind": "flat", "recall": 1.0, "qps": 1500},
    ]
    expected = {
        "hnsw": [(9000.0, 0.95, "ef_search=64"), (4000.0, 0.99, "ef_search=256")],
        "flat": [(1500.0, 1.0, "")],
    }
    assert index_points(records) == expected
    assert index_points({"results": records}) == expected
    by_kind = {"flat": {"recall@100": 1.0, "qps": 1500}, "hnsw": [records[0], records[1]]}
    assert index_points(by_kind) == {"flat": expected["flat"], "hnsw": expected["hnsw"]}


def test_index_kinds_benchmark_rows():
    rows = [
        {
            "n_items": 100_000,
            "kind": "hnsw",
            "setting": "efSearch=100",
            "recall_at_100": 0.99,
            "single_qps": 602.0,
            "batched_qps": 659.0,
        },
        {
            "n_items": 1_000_000,
            "kind": "hnsw",
            "setting": "efSearch=100",
            "recall_at_100": 0.97,
            "single_qps": 310.0,
            "batched_qps": 400.0,
        },
    ]
    assert index_points({"machine": {"cores": 2}, "rows": rows}) == {
        "hnsw · 100k": [(602.0, 0.99, "efSearch=100")],
        "hnsw · 1M": [(310.0, 0.97, "efSearch=100")],
    }


def test_report_reads_the_index_kinds_benchmark(store, tmp_path):
    bench = tmp_path / "kinds.json"
    rows = [
        {"kind": "ivf", "setting": "nprobe=8", "recall_at_100": 0.7668, "single_qps": 6455.7},
        {"kind": "ivf", "setting": "nprobe=64", "recall_at_100": 0.984, "single_qps": 582.26},
    ]
    bench.write_text(json.dumps({"machine": {"cpu": "Xeon", "cores": 2}, "rows": rows}))
    index = _section(_build(store, index_kinds=str(bench)).html, "index")
    assert "not tracked yet" not in index.lower()
    for cells in (
        '<td class="l">ivf</td><td class="l">nprobe=8</td><td>0.7668</td><td>6,455.7</td>',
        '<td class="l">ivf</td><td class="l">nprobe=64</td><td>0.9840</td><td>582.3</td>',
        '<td class="l">served (hnsw)</td><td class="l"></td><td>0.9731</td><td>12,345.6</td>',
    ):
        assert cells in index
    assert "(Xeon, 2 cores)" in index


def test_command_writes_the_report(store, tmp_path, monkeypatch, capsys):
    from pipelines import report as command

    root = store["root"]
    (root / "params.yaml").write_text("mlflow:\n  experiment: ladder\n")
    monkeypatch.setenv("DVC_ROOT", str(root))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])
    out, plots = tmp_path / "out" / "report.html", tmp_path / "out" / "plots"
    args = ["--out", str(out)]  # plots next to it
    command.main(args)  # no run of this workspace's inputs: the newest
    assert "<td>0.1234</td>" in out.read_text()
    ndcg = list(csv.DictReader((plots / "ndcg.csv").open()))
    gnolr_click = next(r for r in ndcg if r["series"] == "gnolr · click")
    assert float(gnolr_click["ndcg_at_10"]) == 0.1234
    assert float(gnolr_click["gt_ndcg_at_10"]) == 0.2111
    assert gnolr_click["run_id"] == store["ids"]["gnolr"]
    assert len(ndcg) == 6  # 2 models × 3 levels
    index = list(csv.DictReader((plots / "index.csv").open()))
    assert [(r["kind"], float(r["recall"]), float(r["qps"])) for r in index] == [
        ("served (hnsw)", 0.9731, 12345.6)
    ]
    printed = capsys.readouterr().out
    assert "no tracked run of this workspace's pipeline run" in printed
    assert "pipeline run pr-new" in printed
    assert "not tracked yet: Clipping threshold M" in printed
    command.main([*args, "--pipeline-run", "pr-old"])
    assert "<td>0.4321</td>" in out.read_text()
    # pr-old has no index run: an empty table (DVC declares the file), not a stale plot
    assert (plots / "index.csv").read_text().splitlines() == ["series"]


def test_command_prefers_this_workspaces_pipeline_run(tmp_path, monkeypatch):
    from pipelines import report as command
    from pipelines.tracking import pipeline_run_id

    root = tmp_path / "workspace"
    root.mkdir()
    (root / "params.yaml").write_text("mlflow:\n  experiment: ladder\n")
    monkeypatch.setenv("DVC_ROOT", str(root))
    current, _ = pipeline_run_id()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("ladder", artifact_location=(tmp_path / "art").as_uri())
    for start, group, value in ((1000, current, 0.3131), (2000, "another-exp", 0.4141)):
        _run(
            client,
            exp,
            "gnolr",
            start,
            _tags("evaluate", "gnolr", group),
            _levels("ndcg_at_10", (value, 0.2, 0.3)),
        )
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    out = tmp_path / "report.html"
    command.main(["--out", str(out)])
    assert "<td>0.3131</td>" in out.read_text() and current in out.read_text()
    command.main(["--out", str(out), "--pipeline-run", "latest"])
    assert "<td>0.4141</td>" in out.read_text()
