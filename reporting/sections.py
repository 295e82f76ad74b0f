"""The report's five sections: what each plots, where its numbers come from, what to run if missing.

Each section reads its numbers from the chosen pipeline run's MLflow runs (metrics, or CSV
artifacts under ``plots/``). Results of commands that do not log to MLflow are read from the
file the command writes in the workspace, and the section says so.
"""

from __future__ import annotations

from html import escape

from reporting import figures
from reporting.html import Raw, Section, code, fmt, table
from reporting.index_kinds import index_kinds
from reporting.runs import NDCG_PREFIX, TrackedRun
from reporting.sources import Context, not_tracked, run_source, tracked_csv

RELIABILITY = "data/metrics/plove_reliability.csv"
M_SWEEP = "data/experiments/unbiased/synthetic_m_sweep.csv"
LOVE_SWEEP = "data/metrics/plove/love_weight_sweep_c100.csv"
ECE_METRICS = ("test/ece", "test/calibrated/ece")  # the run-record scheme, then older runs


def per_level(run: TrackedRun, metric: str) -> dict[str, float]:
    """``{level: value}`` of the metrics ``test/<metric>/<level>``."""
    prefix = f"test/{metric}/"
    return {n[len(prefix) :]: v for n, v in run.metrics.items() if n.startswith(prefix)}


def order_levels(preferred: list[str], found: set[str]) -> list[str]:
    return [lv for lv in preferred if lv in found] + sorted(found - set(preferred))


def ndcg_by_model(ctx: Context) -> Section:
    k = ctx.k
    sec = Section(
        "ndcg",
        f"Per-level NDCG@{k} by model",
        intro=(
            f"NDCG@{k} per feedback level over the full catalogue (training positives excluded). "
            "On simulated data the right panel scores the same top lists against the simulator's "
            "true probabilities instead of the few observed test labels."
        ),
    )
    runs = ctx.group.model_runs()
    if not runs:
        sec.missing = not_tracked("dvc repro evaluate", f"logs test/ndcg_at_{k}/<level> per model")
        return sec
    families = [
        (f"ndcg_at_{k}", f"NDCG@{k}"),
        (f"gt_ndcg_at_{k}", f"ground-truth NDCG@{k}"),
        (f"recall_at_{k}", f"Recall@{k}"),
        ("auc", "AUC"),
    ]
    values = {f: {m: per_level(r, f) for m, r in runs.items()} for f, _ in families}
    present = [(f, label) for f, label in families if any(values[f].values())]
    if not any(values[f"ndcg_at_{k}"].values()):
        tracked = sorted(
            {n.split("/")[1] for r in runs.values() for n in r.metrics if n.startswith(NDCG_PREFIX)}
        )
        sec.missing = (
            f"No model run logs {code(f'test/ndcg_at_{k}/…')}; tracked: "
            f"{escape(', '.join(tracked))}. Choose one of them with {code('--k')}."
        )
        return sec
    levels = order_levels(ctx.levels, {lv for v in values[f"ndcg_at_{k}"].values() for lv in v})
    panels = [(f"NDCG@{k}, observed test labels", values[f"ndcg_at_{k}"])]
    if any(values[f"gt_ndcg_at_{k}"].values()):
        panels.append((f"ground-truth NDCG@{k} (simulator)", values[f"gt_ndcg_at_{k}"]))
    sec.image = figures.grouped_bars(panels, levels)
    header = ["model", "run", "stage"] + [lv for _ in present for lv in levels]
    groups = [("", 3)] + [(label, len(levels)) for _, label in present]
    rows = [
        [model, Raw(code(run.run_id[:8])), run.stage]
        + [values[f][model].get(lv) for f, _ in present for lv in levels]
        for model, run in runs.items()
    ]
    sec.body = table(header, rows, groups, left=3)
    plotted = [f for f in (f"ndcg_at_{k}", f"gt_ndcg_at_{k}") if any(values[f].values())]
    sec.rows = [
        {"series": f"{model} · {lv}", "model": model, "level": lv, "run_id": run.run_id}
        | {f: values[f][model].get(lv) for f in plotted}
        for model, run in runs.items()
        for lv in levels
    ]
    for run in runs.values():
        ctx.group.note_use(run, sec.key)
    sec.sources.append(
        "MLflow metrics " + code("test/<metric>/<level>") + " of each model's newest run in the "
        "pipeline run: " + ", ".join(f"{escape(m)} {code(r.run_id)}" for m, r in runs.items())
    )
    return sec


def expected_calibration_error(bins: list[dict]) -> float:
    """ECE = Σ_b n_b·|p̂_b − ō_b| / Σ_b n_b over the reliability bins (equal weights without n)."""
    weights = [float(b.get("count", 1.0)) for b in bins]
    gaps = [abs(b["predicted"] - b["observed"]) for b in bins]
    return sum(w * g for w, g in zip(weights, gaps, strict=True)) / sum(weights)


def calibration(ctx: Context) -> Section:
    sec = Section(
        "calibration",
        "Calibration of P[Love]",
        intro=(
            "Reliability diagram on the test split: each point is one bin of predictions, its "
            "mean predicted P[Love] against the observed love rate; a calibrated model lies on "
            "the diagonal. ECE = Σ<sub>b</sub> n<sub>b</sub>·|p̂<sub>b</sub> − ō<sub>b</sub>| / "
            "Σ<sub>b</sub> n<sub>b</sub>."
        ),
    )
    got = tracked_csv(
        ctx, sec.key, "plove_reliability.csv", "train_plove", RELIABILITY, "dvc repro train_plove"
    )
    if got is None:
        sec.missing = not_tracked("dvc repro train_plove", "logs plots/plove_reliability.csv")
        return sec
    rows, source = got
    bins = [
        r
        for r in rows
        if isinstance(r.get("predicted"), float) and isinstance(r.get("observed"), float)
    ]
    if not bins:
        sec.missing = "The reliability table has no numeric predicted/observed columns."
        return sec
    sec.image = figures.reliability(bins)
    sec.sources.append(source)
    facts = []

    def has_ece(run: TrackedRun) -> bool:
        return any(n in run.metrics for n in ECE_METRICS)

    # the training run's own metric first: promote repeats it as a gate, in a later run
    found = ctx.group.find(lambda r: r.stage == "train_plove" and has_ece(r)) or ctx.group.find(
        has_ece
    )
    if found is not None:
        name = next(n for n in ECE_METRICS if n in found.run.metrics)
        facts.append(f"ECE (tracked {code(name)}) = <b>{fmt(found.run.metrics[name])}</b>")
        for extra in ("log_loss", "auc"):
            metric = name.replace("ece", extra)
            if metric in found.run.metrics:
                facts.append(f"{code(metric)} = {fmt(found.run.metrics[metric])}")
        ctx.group.note_use(found.run, sec.key)
        sec.sources.append(run_source(found, "metrics"))
    facts.append(
        f"ECE recomputed from the {len(bins)} plotted bins = "
        f"<b>{fmt(expected_calibration_error(bins))}</b>"
    )
    sec.body = "<p>" + ";<br>".join(facts) + ".</p>"
    sec.beside = True
    return sec


def m_sweep(ctx: Context) -> Section:
    command = "python -m experiments.unbiased synthetic"
    sec = Section(
        "m_sweep",
        "Clipping threshold M: ground-truth NDCG vs M",
        intro=(
            "Rel-MF trained with the clipped IPS loss on the biased simulator, scored against the "
            "true relevance (all items, and the rare ones). M → 0 is plain IPS, M = 1 the naive "
            "loss; dashed lines: the naive model."
        ),
    )
    got = tracked_csv(ctx, sec.key, "synthetic_m_sweep.csv", None, M_SWEEP, command)
    if got is None:
        sec.missing = not_tracked(command, f"writes {M_SWEEP}")
        return sec
    rows, source = got
    rows = sorted((r for r in rows if isinstance(r.get("M"), float)), key=lambda r: r["M"])
    names = [c for c in (rows[0] if rows else {}) if c.startswith("gt_ndcg")]
    if not names:
        sec.missing = f"The M sweep has no {code('gt_ndcg*')} column: re-run {code(command)}."
        return sec
    xs = [r["M"] for r in rows]
    series = {n: [r[n] for r in rows] for n in names}
    naive = {n: rows[0][f"naive_{n}"] for n in names if f"naive_{n}" in rows[0]}
    sec.image = figures.lines(
        xs, series, "clipping threshold M", "ground-truth NDCG", naive, "naive"
    )
    best = []
    for name, ys in series.items():
        i = max(range(len(ys)), key=ys.__getitem__)
        line = f"{code(name)}: best M = {fmt(xs[i], 2)} ({fmt(ys[i])})"
        if name in naive:
            line += f" vs naive {fmt(naive[name])}"
        best.append(line)
    sec.body = "<p>" + "; ".join(best) + ".</p>"
    sec.sources.append(source)
    return sec


LOVE_PANELS = {
    "love_rate": "love rate",
    "purchase_rate": "purchase rate",
    "coverage": "catalogue coverage",
    "novelty": "novelty (mean self-information, bits)",
}


def love_weight(ctx: Context) -> Section:
    sec = Section(
        "love_weight",
        "Love-weight trade-off",
        intro=(
            "Re-ranking GNOLR's top 100 candidates by w<sub>rel</sub>·relevance + "
            "w<sub>love</sub>·P[Love] on the simulator: realised love and purchase rates, "
            "catalogue coverage and novelty as w<sub>love</sub> grows (w<sub>love</sub> = 0 is "
            "relevance alone); dashed: ranking by P[Love] alone."
        ),
    )
    command = "dvc repro plove_sweep"
    got = tracked_csv(
        ctx,
        sec.key,
        "love_weight_sweep_c100.csv",
        "plove_sweep",
        LOVE_SWEEP,
        "python -m pipelines.plove_sweep",
    )
    if got is None:
        sec.missing = not_tracked(command, f"writes {LOVE_SWEEP}")
        return sec
    rows, source = got
    rows = [r for r in rows if isinstance(r.get("w_love"), float)]
    top = max((r.get("w_rel", 1.0) for r in rows), default=1.0)
    curve = sorted((r for r in rows if r.get("w_rel", 1.0) == top), key=lambda r: r["w_love"])
    love_only = next((r for r in rows if r.get("w_rel") == 0.0), None)
    panels = {
        label: [r[c] for r in curve] for c, label in LOVE_PANELS.items() if curve and c in curve[0]
    }
    if not panels:
        sec.missing = f"The sweep has none of the columns {escape(', '.join(LOVE_PANELS))}."
        return sec
    refs = {
        label: {"love only": love_only[c]}
        for c, label in LOVE_PANELS.items()
        if love_only is not None and c in love_only
    }
    sec.image = figures.tradeoff_grid(
        [r["w_love"] for r in curve], panels, "w_love (ticks evenly spaced)", refs
    )
    columns = ["w_rel", "w_love", *LOVE_PANELS, "click_rate", "guardrail_ok"]
    columns = [c for c in columns if c in rows[0]]
    sec.body = table(columns, [[r[c] for c in columns] for r in curve + [love_only] if r], left=0)
    sec.sources.append(source)
    return sec


SECTIONS = (ndcg_by_model, calibration, m_sweep, index_kinds, love_weight)
