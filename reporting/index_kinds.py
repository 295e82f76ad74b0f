"""The index section: recall vs queries/s of the FAISS index kinds, and the served index."""

from __future__ import annotations

import json
import re
from html import escape

from reporting import figures
from reporting.html import Section, code, table
from reporting.sources import Context, file_source, not_tracked, run_source

INDEX_METRICS = "data/metrics/index.json"
RECALL_KEY = re.compile(r"^(?:test/)?recall(?:_at_|@)?(\d*)$")
INDEX_SETTINGS = ("ef_search", "hnsw_m", "m", "nlist", "nprobe", "pq_m", "nbits")


def _recall_key(record: dict) -> str | None:
    """The key of the record's recall value (``recall``, ``recall_at_100``, ``test/recall@100``)."""
    return next(
        (k for k, v in record.items() if RECALL_KEY.match(str(k)) and isinstance(v, int | float)),
        None,
    )


def _recall(record: dict) -> float | None:
    key = _recall_key(record)
    return None if key is None else float(record[key])


QPS_KEYS = ("qps", "single_qps", "queries_per_second", "batched_qps")  # single-query first


def _items(n: object) -> str:
    if not isinstance(n, int | float):
        return ""
    return f"{n / 1e6:g}M" if n >= 1e6 else f"{n / 1e3:g}k" if n >= 1e3 else f"{n:g}"


def index_points(data: object) -> dict[str, list[tuple[float, float, str]]]:
    """``{kind: [(qps, recall, setting)]}`` from the index-kinds benchmark's JSON.

    Accepts a list of records, ``{kind: record or [records]}``, or either under a ``rows``,
    ``results``, ``kinds`` or ``points`` key. A record holds ``kind``, a recall (``recall``,
    ``recall_at_K``) and queries/s (``qps``, else ``single_qps``, else ``batched_qps``), and
    optionally ``setting`` (or ef_search, nprobe …) and ``n_items``: with several catalogue
    sizes a curve is ``"<kind> · <n_items>"``.
    """
    if isinstance(data, dict):
        data = next((data[k] for k in ("rows", "results", "kinds", "points") if k in data), data)
    if isinstance(data, dict):
        data = [
            {"kind": kind, **rec}
            for kind, value in data.items()
            for rec in (value if isinstance(value, list) else [value])
            if isinstance(rec, dict)
        ]
    records = [r for r in data if isinstance(r, dict)] if isinstance(data, list) else []
    sizes = {r.get("n_items") for r in records}
    curves: dict[str, list[tuple[float, float, str]]] = {}
    for rec in records:
        recall = _recall(rec)
        qps = next((rec[k] for k in QPS_KEYS if isinstance(rec.get(k), int | float)), None)
        if recall is None or qps is None:
            continue
        setting = str(rec.get("setting") or "") or ", ".join(
            f"{k}={rec[k]}" for k in INDEX_SETTINGS if k in rec
        )
        kind = str(rec.get("kind", rec.get("index", "?")))
        if len(sizes) > 1:
            kind = f"{kind} · {_items(rec.get('n_items'))}"
        curves.setdefault(kind, []).append((float(qps), recall, setting))
    return curves


def _machine(data: object) -> str:
    """The benchmark's machine and load, as the JSON records them (``machine``: cpu, cores …)."""
    m = data.get("machine") if isinstance(data, dict) else None
    if not isinstance(m, dict):
        return ""
    parts = [str(m[k]) for k in ("cpu",) if k in m]
    parts += [f"{m['cores']} cores"] if "cores" in m else []
    load = m.get("load_avg_start")
    parts += [f"load average {load[0]:.1f} at start"] if isinstance(load, list) and load else []
    return " (" + ", ".join(escape(p) for p in parts) + ")" if parts else ""


def index_kinds(ctx: Context) -> Section:
    sec = Section(
        "index",
        "Index kinds: recall vs queries per second",
        intro=(
            "Recall of each FAISS index kind's top K against exact search, versus its "
            "single-query throughput (benchmark catalogue size in the legend). The star is the "
            "index the pipeline serves, on its own catalogue; red: "
            f"{code('index.recall_floor')}, below which the index stage refuses an index."
        ),
    )
    curves: dict[str, list[tuple[float, float, str]]] = {}
    kinds_file = ctx.root / ctx.index_kinds
    if kinds_file.exists():
        data = json.loads(kinds_file.read_text())
        curves = index_points(data)
        sec.sources.append(f"benchmark result {code(ctx.index_kinds)}{_machine(data)}")
    served = None
    found = ctx.group.find(
        lambda r: r.stage == "index" and "test/qps" in r.metrics and _recall(r.metrics) is not None
    )
    if found is not None:
        run = found.run
        kind = run.tags.get("index_kind") or run.params.get("index.kind", "index")
        n_items = run.metrics.get("test/n_items")
        served = (run.metrics["test/qps"], _recall(run.metrics), kind, n_items)
        ctx.group.note_use(run, sec.key)
        metrics = f"metrics {code(_recall_key(run.metrics))}, {code('test/qps')}"
        sec.sources.append(run_source(found, metrics))
    elif (ctx.root / INDEX_METRICS).exists():
        data = json.loads((ctx.root / INDEX_METRICS).read_text())
        if _recall(data) is not None and "qps" in data:
            kind = str(data.get("kind", "index"))
            served = (float(data["qps"]), _recall(data), kind, data.get("n_items"))
            sec.sources.append(file_source(INDEX_METRICS, "dvc repro index"))
    if not curves and served is None:
        sec.missing = not_tracked("dvc repro index", "logs test/recall_at_K and test/qps")
        return sec
    if not curves:
        sec.missing = (
            f"Other index kinds not tracked yet: run {code('python benchmarks/index_kinds.py')} "
            f"(writes {code(ctx.index_kinds)}); only the served index is shown."
        )
    star = None
    if served is not None:
        size = f" · {_items(served[3])}" if served[3] else ""
        star = (served[0], served[1], f"{served[2]}{size}")
    sec.image = figures.recall_vs_qps(curves, star, ctx.recall_floor)
    rows = [
        [kind, setting, recall, qps]
        for kind, pts in curves.items()
        for qps, recall, setting in sorted(pts, reverse=True)
    ]
    if star is not None:
        rows.append([f"served ({star[2]})", "", star[1], star[0]])
    sec.body = table(["kind", "setting", "recall", "queries/s"], rows, left=2)
    sec.beside = True
    sec.rows = [dict(zip(("kind", "setting", "recall", "qps"), r, strict=True)) for r in rows]
    return sec
