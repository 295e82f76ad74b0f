"""Stage `ingest`: source → validated event table, quarantine and a data report.

Outputs (atomically, in data/ingest/): events.parquet, quarantine.parquet, world.npz (synthetic
only), user_features.parquet / item_features.parquet (where the source has side features);
metrics in data/metrics/ingest.json. With ``scale.data.engine: ray`` the two tables are
partitioned by user bucket (``events.parquet/part-*.parquet``; features/ray_engine.py), with the
same rows, quarantine and metrics. With ``source.feedback_log`` set, the service's feedback log
(served slates as impressions with propensities, plus posted feedback; features/sources/feedback.py)
is appended to the source's events before validation: same contract, same quarantine. Too many bad
rows fail the stage; the rejected rows are then kept in data/rejected/quarantine.parquet so nothing
is lost.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
import polars as pl

from features import ray_engine
from features.contract import (
    ContractError,
    IngestSummary,
    check_bad_fraction,
    validate,
    write_events,
)
from features.feedback_log import ReadStats
from features.sources import SourceConfig, load_events, load_side_features
from features.sources.feedback import append_feedback, load_feedback
from pipelines.outputs import atomic_dir, write_json
from pipelines.params import Params, load_params
from pipelines.tracking import log_dataset, split_metrics, start_run

if TYPE_CHECKING:
    from features.sources.synthetic import World

OUT = Path("data/ingest")
METRICS = Path("data/metrics/ingest.json")
REJECTED = Path("data/rejected/quarantine.parquet")


def read_events(source: SourceConfig) -> tuple[pl.DataFrame, World | None, ReadStats | None]:
    """The source's raw events, followed by the feedback log's when ``source.feedback_log`` is set."""
    raw, world = load_events(source)
    if not source.feedback_log:
        return raw, world, None
    stats = ReadStats()
    return append_feedback(raw, load_feedback(source.feedback_log, stats)), world, stats


def ingest_embedded(
    params: Params, out: Path
) -> tuple[IngestSummary, World | None, ReadStats | None]:
    """Validate the source's events in this process; write events.parquet and quarantine.parquet."""
    raw, world, feedback = read_events(params.source)
    valid, quarantine, report = validate(raw, params.contract.names(), params.contract.rules())
    write_events(valid, out / "events.parquet")
    quarantine.write_parquet(out / "quarantine.parquet")
    return IngestSummary.of(valid, report), world, feedback


def ingest_on_ray(
    params: Params, out: Path
) -> tuple[IngestSummary, World | None, ReadStats | None]:
    """Validate the source's events per user bucket on Ray; write events.parquet/ and
    quarantine.parquet/ as one part per bucket. A Parquet source is read by the cluster, any other
    by this process; the feedback log, if set, is read here and appended in both cases."""
    engine, source = params.scale.data, params.source
    with ray_engine.cluster(engine):
        if source.kind == "parquet":
            stats = ReadStats() if source.feedback_log else None
            feedback = load_feedback(source.feedback_log, stats) if source.feedback_log else None
            raw, world = ray_engine.parquet_input(source.tabular, feedback, engine), None
        else:
            frame, world, stats = read_events(source)
            raw = ray_engine.frame_input(frame, engine)
        summary = ray_engine.ingest(
            raw, params.contract.names(), engine, out, params.contract.rules()
        )
    return summary, world, stats


def keep_rejected(quarantine: Path) -> None:
    """Move a failed run's quarantine (a file, or a directory of parts) to data/rejected/."""
    if REJECTED.is_dir():
        shutil.rmtree(REJECTED)
    REJECTED.unlink(missing_ok=True)
    REJECTED.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(quarantine, REJECTED)


def main() -> None:
    params = load_params()
    run = ingest_on_ray if params.scale.data.engine == "ray" else ingest_embedded
    with atomic_dir(OUT) as tmp:
        summary, world, feedback = run(params, tmp)
        report = summary.report
        try:
            check_bad_fraction(report, params.contract.max_bad_fraction, str(REJECTED))
        except ContractError:
            keep_rejected(tmp / "quarantine.parquet")
            raise
        if world is not None:
            world.save(tmp / "world.npz")
        users, items = load_side_features(params.source, world)
        if users is not None:
            users.write_parquet(tmp / "user_features.parquet")
        if items is not None:
            items.write_parquet(tmp / "item_features.parquet")
    summary_dict = {**summary.as_dict(), "source": params.source.kind}
    if feedback is not None:
        summary_dict["feedback_log_events"] = feedback.records
        summary_dict["feedback_log_torn_lines"] = feedback.skipped_lines
    write_json(METRICS, summary_dict)
    with start_run(params, "ingest", "ingest", model="data"):
        log_dataset(OUT, f"{params.source.kind}-events", ["events.parquet"], "ingest")
        facts = {
            k: summary_dict[k] for k in ("n_rows", "n_valid", "n_quarantined", "n_users", "n_items")
        }
        facts |= {f"quarantined/{r}": n for r, n in report.bad_by_reason.items()}
        facts |= {f"events/{e}": n for e, n in summary.events_by_type.items()}
        mlflow.log_metrics(split_metrics("data", facts))
    from_log = (
        ""
        if feedback is None
        else f" + {feedback.records:,} from the feedback log {params.source.feedback_log}"
        f" ({feedback.skipped_lines} torn lines skipped)"
    )
    print(
        f"ingest: {report.n_valid:,} valid of {report.n_rows:,} events from "
        f"'{params.source.kind}'{from_log}, {report.n_bad:,} quarantined "
        f"{report.bad_by_reason or ''} → {OUT}/ ({params.scale.data.engine})"
    )


if __name__ == "__main__":
    try:
        main()
    except (ContractError, ValueError, ray_engine.RayUnavailableError) as exc:
        sys.exit(f"ingest failed: {exc}")
