"""A self-contained HTML comparison report built from the tracked MLflow runs of one pipeline run.

    from reporting import ReportConfig, build_report
    report = build_report(ReportConfig(tracking_uri, "ladder", root=Path(".")))
    Path("reports/report.html").write_text(report.html)

Reads the store only: it never starts or changes a run.
"""

from __future__ import annotations

import datetime as dt
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from reporting.html import Raw, Section, code, page, table
from reporting.runs import ReportError, RunGroup, TrackedRun, load_group
from reporting.sections import SECTIONS
from reporting.sources import Context

__all__ = ["Report", "ReportConfig", "ReportError", "build_report"]


@dataclass(frozen=True)
class ReportConfig:
    tracking_uri: str
    experiment: str
    root: Path = Path(".")  # the workspace: files of commands that do not log to MLflow
    pipeline_run: str | None = None  # None: the newest one
    levels: list[str] = field(default_factory=lambda: ["click", "cart", "purchase"])
    k: int = 10
    recall_floor: float | None = None
    index_kinds: str = "benchmarks/results_index_kinds.json"  # the index-kinds benchmark's result


@dataclass(frozen=True)
class Report:
    html: str
    sections: list[Section]
    pipeline_run: str | None
    runs: list[TrackedRun]  # the runs the report used


def _distinct(runs: list[TrackedRun], tag: str) -> str:
    values = list(dict.fromkeys(r.tags.get(tag, "") for r in runs))
    shown = [code(v) for v in values if v]
    return ", ".join(shown) if shown else "not tagged"


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _header(cfg: ReportConfig, group: RunGroup, used: list[TrackedRun]) -> list[tuple[str, str]]:
    if group.pipeline_run:
        which = code(group.pipeline_run)
    else:
        which = (
            "none tagged (the store predates the "
            + code("pipeline_run")
            + " tag): the newest run of each stage"
        )
    datasets = list(dict.fromkeys(f"{n} ({d})" for r in used for n, d in r.datasets))
    ui = f"mlflow ui --backend-store-uri {shlex.quote(cfg.tracking_uri)}"
    return [
        ("Pipeline run", which),
        ("Git commit", _distinct(used, "git_commit")),
        ("Params digest", _distinct(used, "params_digest")),
        (
            "Data source",
            _distinct(used, "source")
            + (" · inputs " + ", ".join(code(d) for d in datasets) if datasets else ""),
        ),
        ("DVC experiment", _distinct(used, "dvc_exp")),
        (
            "Tracking store",
            f"{code(cfg.tracking_uri)}, experiment {code(cfg.experiment)} "
            f"(id {code(group.experiment_id)})",
        ),
        (
            "Run links",
            f"{code(ui)}, then {code(f'#/experiments/{group.experiment_id}/runs/<run id>')}",
        ),
        ("Generated", dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")),
    ]


def _runs_table(group: RunGroup, used: list[TrackedRun]) -> str:
    rows = [
        [
            Raw(code(r.run_id)),
            r.name,
            r.stage,
            r.tags.get("model", ""),
            r.pipeline_run or "—",
            r.tags.get("git_commit", "")[:10],
            _iso(r.start_time),
            ", ".join(group.used[r.run_id]),
        ]
        for r in used
    ]
    header = ["run id", "name", "stage", "model", "pipeline_run", "commit", "started", "sections"]
    return table(header, rows, left=8) if rows else "<p>No tracked run was used.</p>"


def build_report(cfg: ReportConfig) -> Report:
    """Collect the runs of ``cfg.pipeline_run`` and render every section; missing ones say why."""
    group = load_group(cfg.tracking_uri, cfg.experiment, cfg.pipeline_run)
    ctx = Context(group, Path(cfg.root), list(cfg.levels), cfg.k, cfg.recall_floor, cfg.index_kinds)
    sections = [make(ctx) for make in SECTIONS]
    by_id = {r.run_id: r for r in group.members + group.earlier}
    used = sorted((by_id[i] for i in group.used), key=lambda r: -r.start_time)
    title = f"ladder report: pipeline run {group.pipeline_run or '(untagged)'}"
    html = page(title, _header(cfg, group, used), _runs_table(group, used), sections)
    return Report(html, sections, group.pipeline_run, used)
