"""`python -m pipelines.report`: the self-contained HTML comparison report of a pipeline run.

    python -m pipelines.report                              # this workspace's pipeline run
    python -m pipelines.report --pipeline-run latest        # the newest one in the store
    python -m pipelines.report --pipeline-run ID --out reports/ID.html

Built from the tracked MLflow runs (pipelines.tracking.tracking_uri(), params.yaml mlflow.experiment):
per-level NDCG@K by model, P[Love] calibration, the clipping-threshold sweep, index recall vs
queries/s and the love-weight trade-off. Sections with nothing tracked say what to run.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import sys
from pathlib import Path

import mlflow

from pipelines.outputs import atomic_file
from pipelines.params import load_params
from pipelines.tracking import pipeline_run_id, repo_root, start_run, tracking_uri
from reporting import Report, ReportConfig, ReportError, build_report

# Sections whose plotted numbers are DVC plots of this stage (dvc.yaml: reports/plots/<key>.csv);
# the other sections plot files that are DVC plots of other stages already.
PLOT_SECTIONS = ("ndcg", "index")


def write_plot_csvs(report: Report, directory: Path) -> list[Path]:
    """The plotted numbers of :data:`PLOT_SECTIONS` as ``<section>.csv`` (only a header when
    nothing is tracked: DVC wants the file)."""
    written = []
    for section in report.sections:
        if section.key not in PLOT_SECTIONS:
            continue
        path = directory / f"{section.key}.csv"
        with atomic_file(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as fh:
            if not section.rows:
                fh.write("series\n")
            else:
                columns = list(dict.fromkeys(k for row in section.rows for k in row))
                writer = csv.DictWriter(fh, columns)
                writer.writeheader()
                writer.writerows(section.rows)
        written.append(path)
    return written


def build(cfg: ReportConfig, which: str) -> Report:
    """``which``: a pipeline_run id, ``latest``, or ``current`` (this workspace's inputs, see
    :func:`pipelines.tracking.pipeline_run_id`; the newest one if none of its runs is tracked)."""
    if which == "latest":
        return build_report(cfg)
    if which != "current":
        return build_report(dataclasses.replace(cfg, pipeline_run=which))
    current, _ = pipeline_run_id()
    try:
        return build_report(dataclasses.replace(cfg, pipeline_run=current))
    except ReportError:
        print(f"report: no tracked run of this workspace's pipeline run {current}; the newest one")
        return build_report(cfg)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("reports/report.html"))
    parser.add_argument(
        "--plots-dir", type=Path, default=None, help="CSVs for `dvc plots` (default: OUT's plots/)"
    )
    parser.add_argument(
        "--pipeline-run", default="current", help="an id, `latest` or `current` (default)"
    )
    parser.add_argument(
        "--index-kinds",
        default="benchmarks/results_index_kinds.json",
        help="the result of benchmarks/index_kinds.py",
    )
    parser.add_argument(
        "--k", type=int, default=None, help="NDCG cut-off (default: evaluate.ks[0])"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per CSV: noise
    params = load_params(repo_root() / "params.yaml")
    cfg = ReportConfig(
        tracking_uri=tracking_uri(),
        experiment=params.mlflow.experiment,
        root=repo_root(),
        levels=list(params.contract.levels),
        k=args.k or params.evaluate.ks[0],
        recall_floor=params.index.recall_floor,
        index_kinds=args.index_kinds,
    )
    try:
        report = build(cfg, args.pipeline_run)
    except ReportError as exc:
        sys.exit(f"report: {exc}")
    with atomic_file(args.out) as tmp:
        tmp.write_text(report.html, encoding="utf-8")
    with start_run(params, "report", "report", model="report"):
        mlflow.set_tag("reported_pipeline_run", report.pipeline_run or "")
        mlflow.log_artifact(str(args.out))
    plots = write_plot_csvs(report, args.plots_dir or args.out.parent / "plots")
    print(
        f"report: {args.out} ({len(report.html) / 1024:.0f} KiB) for pipeline run "
        f"{report.pipeline_run or '(untagged)'} from {len(report.runs)} MLflow runs"
    )
    for section in report.sections:
        if section.missing and not section.image:
            print(f"  not tracked yet: {section.title}")
    if plots:
        print(f"  DVC plot data: {', '.join(str(p) for p in plots)}")
    print(f"  open it: file://{args.out.resolve()}")


if __name__ == "__main__":
    main()
