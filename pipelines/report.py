"""`python -m pipelines.report`: the self-contained HTML comparison report of a pipeline run.

    python -m pipelines.report                              # this workspace's pipeline run
    python -m pipelines.report --pipeline-run latest        # the newest one in the store
    python -m pipelines.report --pipeline-run ID --out reports/ID.html

Built from the tracked MLflow runs (pipelines.common.tracking_uri(), params.yaml mlflow.experiment):
per-level NDCG@K by model, P[Love] calibration, the clipping-threshold sweep, index recall vs
queries/s and the love-weight trade-off. Sections with nothing tracked say what to run.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per CSV is noise

from models.report import Report, ReportConfig, ReportError, build_report  # noqa: E402
from pipelines.common import pipeline_run_id, repo_root, tracking_uri  # noqa: E402
from pipelines.params import load_params  # noqa: E402


def write_text(path: Path, text: str) -> None:
    """Write atomically: a temporary sibling renamed over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def write_plot_csvs(report: Report, directory: Path) -> list[Path]:
    """The plotted numbers of sections not already a DVC plot elsewhere, as ``<section>.csv``."""
    written = []
    for section in report.sections:
        path = directory / f"{section.key}.csv"
        directory.mkdir(parents=True, exist_ok=True)
        if (
            not section.rows
        ):  # nothing tracked now: an empty table, no stale plot (DVC wants the file)
            path.write_text("series\n", encoding="utf-8")
            written.append(path)
            continue
        columns = list(dict.fromkeys(k for row in section.rows for k in row))
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, columns)
            writer.writeheader()
            writer.writerows(section.rows)
        written.append(path)
    return written


def build(cfg: ReportConfig, which: str) -> Report:
    """``which``: a pipeline_run id, ``latest``, or ``current`` (this workspace's inputs, see
    :func:`pipelines.common.pipeline_run_id`; the newest one if none of its runs is tracked)."""
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
    write_text(args.out, report.html)
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
