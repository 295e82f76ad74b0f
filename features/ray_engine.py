"""Ingest and features on Ray Data: the embedded stages' Polars functions, once per user bucket.

``scale.data.engine: ray`` (features/engine.py) routes the two data stages here. The work is cut
by user: ``hash(user_id) % buckets`` (:func:`features.engine.user_bucket`). Every user-local step —
the duplicate key of :func:`features.contract.validate`, the impression unit of
:func:`features.levels.impression_units`, the stratified split — contains the user id, so a bucket
holds all it needs and the same functions give the same rows as on the whole log. The global steps
— id vocabularies, the time cuts, per-item training counts — are small and run on the driver.

* **ingest** (:func:`ingest`): the raw log is read in parallel (a Parquet source, one task per
  ~1 M rows; any other source is loaded by the driver as the embedded stage loads it), each row
  numbered in log order and given its bucket; one Ray Data shuffle (``groupby(bucket)
  .map_groups``) brings a bucket to one task, which sorts it back into log order (so the first copy
  of a duplicate is kept, as in one process) and validates it.
* **features** (:func:`build_training_sets`): each part of ``events.parquet/`` is a bucket of whole
  users, so there is no shuffle, only passes over the buckets: units and their ids → (driver:
  vocabularies, exact time cuts) → indexed, split rows and per-item training counts → (driver: θ)
  → the rows of each split with their propensities.

Outputs are partitioned Parquet: a directory ``<name>.parquet/`` of ``part-<bucket>.parquet``
files, which ``pl.read_parquet``, ``pl.scan_parquet`` and pyarrow read like one file. Each task
writes its own part, so on a cluster of several machines the stage's output directory must be on
storage every node mounts at the same path. Intermediate results go to ``_scratch/`` inside the
output directory and are removed before it is published.

Ray is imported here only, inside :func:`_ray`, so the embedded path never loads it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

import features
from features.contract import (
    Col,
    EventNames,
    IngestSummary,
    RowRules,
    ValidationReport,
    check_columns,
    validate,
    write_events,
)
from features.engine import DataEngineConfig, user_bucket
from features.levels import impression_units
from features.sources.feedback import append_feedback
from features.sources.tabular import TabularConfig, parquet_files, tabular_path, to_contract
from features.split import SPLITS, cut_ranks
from features.training_sets import (
    FeaturesConfig,
    indexed_rows,
    item_counts,
    item_table,
    split_counts,
    split_units,
    training_meta,
    vocabulary,
    with_propensity,
)

if TYPE_CHECKING:
    import ray.data

EXTRA = "pip install -e '.[scale]'"
BUCKET = "_bucket"  # the user bucket of a raw row
ROW = "_row"  # the raw row's place in the log
CHUNK_ROWS = 1_000_000  # rows per read task of a Parquet source
TIME_BIN = "1h"  # histogram bin of the exact time cuts


class RayUnavailableError(ImportError):
    """``scale.data.engine: ray`` without Ray Data installed."""


def _ray() -> Any:
    """The ``ray`` module with Ray Data loaded, or a :class:`RayUnavailableError` naming the extra."""
    try:
        import ray
        import ray.data  # noqa: F401  (loads the Data library into the module)
    except ImportError as exc:
        raise RayUnavailableError(
            "scale.data.engine: ray needs Ray Data, an optional extra of this project: "
            f"{EXTRA} (or set scale.data.engine: polars)"
        ) from exc
    return ray


def part_name(bucket: int) -> str:
    return f"part-{bucket:05d}.parquet"


@contextlib.contextmanager
def cluster(cfg: DataEngineConfig) -> Iterator[None]:
    """Connect to Ray for the duration of a stage: the cluster at ``cfg.address``, or a new local
    one (``cfg.num_cpus`` CPUs) when it is null; shut down on exit what was started here.

    A connection the caller already holds (``ray.is_initialized()``) is used as it is and left
    open. The project's ``features`` package is shipped to the workers (``py_modules``), so a
    cluster runs exactly the driver's code; its Python environment must hold the same Polars.
    """
    ray = _ray()
    if ray.is_initialized():
        _quiet_data_context(ray)
        yield
        return
    local = {"num_cpus": cfg.num_cpus, "include_dashboard": False} if cfg.address is None else {}
    ray.init(
        address=cfg.address,
        **local,
        logging_level=logging.WARNING,
        # One Polars thread per task: Ray schedules one task per CPU.
        runtime_env={"py_modules": [features], "env_vars": {"POLARS_MAX_THREADS": "1"}},
    )
    try:
        _quiet_data_context(ray)
        yield
    finally:
        ray.shutdown()


def _quiet_data_context(ray: Any) -> None:
    """Ray Data settings of this driver: no progress bars or per-dataset log lines in the stage
    output, and a sort-based shuffle (the hash shuffle's aggregator actors cost more than they
    save on a small cluster)."""
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.shuffle_strategy = "sort_shuffle_pull_based"
    logging.getLogger("ray.data").setLevel(logging.WARNING)


# --- ingest -----------------------------------------------------------------------------------


def _numbered(frame: pl.DataFrame, first_row: int, n_buckets: int) -> pl.DataFrame:
    """Raw rows with their place in the log (``_row``) and user bucket (``_bucket``); categorical
    columns as strings, so every block of the shuffle has the same Arrow types."""
    return frame.with_columns(
        pl.col(pl.Categorical, pl.Enum).cast(pl.String),
        pl.int_range(first_row, first_row + frame.height, dtype=pl.Int64).alias(ROW),
        user_bucket(n_buckets).alias(BUCKET),
    )


def _arrow(frame: pl.DataFrame) -> pa.Table:
    # Plain (large) strings rather than string views: every Ray Data operator handles them.
    return frame.to_arrow(compat_level=pl.CompatLevel.oldest())


def frame_input(raw: pl.DataFrame, cfg: DataEngineConfig) -> ray.data.Dataset:
    """A raw event frame the driver has loaded (any source) as a numbered Ray dataset."""
    ray = _ray()
    check_columns(raw.columns)  # a missing column fails here, not inside a task
    numbered = _numbered(raw, 0, cfg.buckets)
    blocks = [
        _arrow(numbered.slice(start, CHUNK_ROWS))
        for start in range(0, max(numbered.height, 1), CHUNK_ROWS)
    ]
    return ray.data.from_arrow(blocks)


def parquet_input(
    tabular: TabularConfig, feedback: pl.DataFrame | None, cfg: DataEngineConfig
) -> ray.data.Dataset:
    """A Parquet source (a file or a directory of files) read in parallel, ~``CHUNK_ROWS`` rows a
    task, each chunk mapped onto the contract (:func:`features.sources.tabular.to_contract`) and
    numbered; the service's ``feedback`` rows, if any, follow the source's as in the embedded
    stage (:func:`features.sources.feedback.append_feedback`)."""
    ray = _ray()
    # Absolute paths: a task's working directory is not the driver's.
    path = tabular_path(tabular.model_copy(update={"format": "parquet"})).resolve()
    chunks, n_rows = [], 0
    for file in parquet_files(path):
        for start, rows in _row_ranges(pq.ParquetFile(file).metadata):
            chunks.append({"path": str(file), "start": start, "rows": rows, "first_row": n_rows})
            n_rows += rows
    if not chunks:
        raise ValueError(f"the Parquet source {path} holds no rows")
    # The column mapping on the driver: a missing column fails here, not inside a task.
    first = Path(chunks[0]["path"])
    source = to_contract(pl.scan_parquet(first).head(0).collect(), tabular, first.name)
    empty_feedback = None if feedback is None else feedback.head(0)
    kwargs = {"tabular": tabular, "feedback": empty_feedback, "n_buckets": cfg.buckets}
    data = ray.data.from_items(chunks, override_num_blocks=max(1, len(chunks))).map_batches(
        _read_chunk, batch_size=1, batch_format="pyarrow", fn_kwargs=kwargs
    )
    if feedback is None:
        return data
    rows = _numbered(append_feedback(source, feedback), n_rows, cfg.buckets)
    return data.union(ray.data.from_arrow(_arrow(rows)))


def _row_ranges(meta: pq.FileMetaData) -> Iterator[tuple[int, int]]:
    """``(first row, rows)`` of a file's read chunks: whole row groups, merged up to CHUNK_ROWS."""
    start = end = 0
    for group in range(meta.num_row_groups):
        end += meta.row_group(group).num_rows
        if end - start >= CHUNK_ROWS:
            yield start, end - start
            start = end
    if end > start:
        yield start, end - start


def _read_chunk_frame(
    chunk: dict, tabular: TabularConfig, feedback: pl.DataFrame | None
) -> pl.DataFrame:
    path = Path(chunk["path"])
    frame = pl.scan_parquet(path).slice(chunk["start"], chunk["rows"]).collect()
    frame = to_contract(frame, tabular, path.name)
    return frame if feedback is None else append_feedback(frame, feedback)


def _read_chunk(
    batch: pa.Table, tabular: TabularConfig, feedback: pl.DataFrame | None, n_buckets: int
) -> pa.Table:
    """One chunk of a Parquet source, mapped onto the contract and numbered (runs in a task)."""
    (chunk,) = batch.to_pylist()
    frame = _read_chunk_frame(chunk, tabular, feedback)
    return _arrow(_numbered(frame, chunk["first_row"], n_buckets))


def ingest(
    raw: ray.data.Dataset,
    names: EventNames,
    cfg: DataEngineConfig,
    out: Path,
    rules: RowRules | None = None,
    now: datetime | None = None,
) -> IngestSummary:
    """Validate ``raw`` (from :func:`frame_input` or :func:`parquet_input`) bucket by bucket.

    ``rules`` and ``now`` are those of :func:`features.contract.validate`; ``now`` is read once
    here, so every bucket judges future timestamps against the same instant.

    Writes ``out/events.parquet/`` (the contract's Arrow schema) and ``out/quarantine.parquet/``
    (rows as strings plus ``reason``), one part per bucket, each in log order. The caller checks
    the bad-row fraction of the returned report before it publishes ``out``.
    """
    out = out.resolve()  # a task's working directory is not the driver's
    scratch = out / "_scratch"
    for name in ("events.parquet", "quarantine.parquet", "_scratch/items"):
        (out / name).mkdir(parents=True, exist_ok=True)
    try:
        stats = (
            raw.groupby(BUCKET, num_partitions=cfg.buckets)
            .map_groups(
                _validate_bucket,
                batch_format="pyarrow",
                fn_kwargs={
                    "names": names,
                    "out": str(out),
                    "rules": rules or RowRules(),
                    "now": now or datetime.now(UTC),
                },
            )
            .take_all()
        )
        reasons: dict[str, int] = {}
        events: dict[str, int] = {}
        for row in stats:
            for reason, n in json.loads(row["reasons"]).items():
                reasons[reason] = reasons.get(reason, 0) + n
            for event, n in json.loads(row["events"]).items():
                events[event] = events.get(event, 0) + n
        report = ValidationReport(
            n_rows=sum(row["n_rows"] for row in stats),
            n_valid=sum(row["n_valid"] for row in stats),
            bad_by_reason=dict(sorted(reasons.items())),
        )
        n_items = 0
        if any((scratch / "items").iterdir()):
            n_items = pl.scan_parquet(scratch / "items").select(pl.col(Col.ITEM).n_unique())
            n_items = n_items.collect().item()
        n_users = sum(row["n_users"] for row in stats)
        return IngestSummary(report, events, n_users, n_items)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _validate_bucket(
    batch: pa.Table, names: EventNames, out: str, rules: RowRules, now: datetime
) -> pa.Table:
    """Validate one bucket in log order and write its parts; one row of counts (runs in a task)."""
    frame = pl.from_arrow(batch).sort(ROW)
    bucket = int(frame[BUCKET][0])
    valid, quarantine, report = validate(frame.drop(ROW, BUCKET), names, rules, now)
    part = part_name(bucket)
    write_events(valid, Path(out) / "events.parquet" / part)
    quarantine.write_parquet(Path(out) / "quarantine.parquet" / part)
    valid.select(pl.col(Col.ITEM).unique()).write_parquet(Path(out) / "_scratch/items" / part)
    events = valid.group_by(pl.col(Col.EVENT).cast(pl.String)).len()
    counts = {
        "bucket": bucket,
        "n_rows": report.n_rows,
        "n_valid": report.n_valid,
        "n_users": valid[Col.USER].n_unique(),
        "reasons": json.dumps(report.bad_by_reason),
        "events": json.dumps(dict(zip(events[Col.EVENT], events["len"], strict=True))),
    }
    return pa.Table.from_pylist([counts])


# --- features ---------------------------------------------------------------------------------


def build_training_sets(
    events: Path, names: EventNames, cfg: FeaturesConfig, out: Path
) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    """:func:`features.training_sets.build_training_sets` over the buckets of ``events``.

    ``events`` is ingest's ``events.parquet``: a directory whose parts each hold whole users (as
    :func:`ingest` writes it), or one file (one bucket). Writes ``out/<split>.parquet/`` for every
    split, one part per bucket, each part sorted by ``ts, user_idx, item_idx``; returns the user
    and item tables and the meta facts, equal to the embedded path's.
    """
    events, out = events.resolve(), out.resolve()  # a task's working directory is not ours
    buckets = _Buckets(parquet_files(events), out / "_scratch")
    scratch = buckets.scratch
    for name in ("units", "users", "items", "hist", "cut", "rows", "counts", "user_idx"):
        (scratch / name).mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        (out / f"{split}.parquet").mkdir(parents=True, exist_ok=True)
    try:
        n_units = int(buckets.map(_units_of_bucket, names=names)["units"].sum())
        if n_units == 0:
            raise ValueError("the event table holds no impressions or feedback to learn from")
        users = _user_vocabulary(scratch)
        items = pl.scan_parquet(scratch / "items").select(Col.ITEM).unique().collect()
        items = vocabulary(items[Col.ITEM], Col.ITEM_IDX)
        items.write_parquet(scratch / "item_idx.parquet")
        cuts = None
        if cfg.split.method == "temporal":
            cuts = _exact_cuts(buckets, cut_ranks(n_units, cfg.split))
        counts = buckets.map(_rows_of_bucket, names=names, cfg=cfg, cuts=cuts)
        meta = training_meta(counts, names, cfg, users.height, items.height, cuts)
        items = item_table(items, pl.read_parquet(scratch / "counts"), cfg.propensity)
        items.select("propensity").write_parquet(scratch / "theta.parquet")
        buckets.map(_write_splits, out=str(out))
        return users, items, meta
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@dataclass
class _Buckets:
    """The parts of a bucketed table, and a scratch directory for the passes over them."""

    parts: list[Path]
    scratch: Path

    def map(self, fn: Callable[..., pa.Table], **kwargs: Any) -> pl.DataFrame:
        """Run ``fn(batch, scratch=..., **kwargs)`` once per bucket, each in a Ray task (``batch``
        is the row ``bucket, path``); its result rows, concatenated."""
        ray = _ray()
        items = [{"bucket": b, "path": str(p)} for b, p in enumerate(self.parts)]
        data = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            fn,
            batch_size=1,
            batch_format="pyarrow",
            fn_kwargs={"scratch": str(self.scratch), **kwargs},
        )
        return pl.from_arrow(pa.concat_tables(ray.get(data.to_arrow_refs())))


def _bucket_of(batch: pa.Table) -> tuple[int, str, str]:
    (row,) = batch.to_pylist()
    return row["bucket"], row["path"], part_name(row["bucket"])


def _units_of_bucket(batch: pa.Table, scratch: str, names: EventNames) -> pa.Table:
    """Pass 1: a bucket's impression units, its distinct ids and its hourly time histogram."""
    bucket, path, part = _bucket_of(batch)
    units = impression_units(pl.scan_parquet(path), names).collect()
    units.write_parquet(Path(scratch) / "units" / part)
    units.select(pl.col(Col.USER).unique()).write_parquet(Path(scratch) / "users" / part)
    units.select(pl.col(Col.ITEM).unique()).write_parquet(Path(scratch) / "items" / part)
    hist = units.group_by(pl.col(Col.TS).dt.truncate(TIME_BIN).alias("bin")).agg(pl.len())
    hist.write_parquet(Path(scratch) / "hist" / part)
    return pa.table({"bucket": [bucket], "units": [units.height]})


def _user_vocabulary(scratch: Path) -> pl.DataFrame:
    """The global user vocabulary, and each bucket's slice of it in ``user_idx/`` (a bucket's
    users are its own: ``user_idx/part-b`` is all a bucket needs to index them)."""
    by_bucket = pl.scan_parquet(scratch / "users", include_file_paths="part").collect()
    users = vocabulary(by_bucket[Col.USER], Col.USER_IDX)
    indexed = by_bucket.join(users, on=Col.USER)
    for (path,), frame in indexed.partition_by("part", as_dict=True).items():
        frame.drop("part").write_parquet(scratch / "user_idx" / Path(path).name)
    return users


def _exact_cuts(buckets: _Buckets, ranks: tuple[int, int]) -> tuple[datetime, datetime]:
    """The times at ``ranks`` in the time order of all units, without gathering every time: the
    summed hourly histograms locate each rank's hour, and one pass fetches those hours' times."""
    hist = (
        pl.scan_parquet(buckets.scratch / "hist")
        .group_by("bin")
        .agg(pl.col("len").sum())
        .sort("bin")
        .with_columns(first=pl.col("len").cum_sum() - pl.col("len"))
        .collect()
    )
    located = [hist.filter(pl.col("first") <= r).row(-1, named=True) for r in ranks]
    buckets.map(_times_in_bins, bins=[loc["bin"] for loc in located])
    times = pl.read_parquet(buckets.scratch / "cut")
    cuts = []
    for rank, loc in zip(ranks, located, strict=True):
        in_bin = times.filter(pl.col("bin") == loc["bin"])[Col.TS].sort()
        cuts.append(in_bin[rank - loc["first"]])
    return cuts[0], cuts[1]


def _times_in_bins(batch: pa.Table, scratch: str, bins: list[datetime]) -> pa.Table:
    """Cut pass: the unit times of a bucket that fall in ``bins``."""
    bucket, _, part = _bucket_of(batch)
    units = pl.scan_parquet(Path(scratch) / "units" / part).select(Col.TS)
    times = units.with_columns(pl.col(Col.TS).dt.truncate(TIME_BIN).alias("bin")).filter(
        pl.col("bin").is_in(bins)
    )
    times.collect().write_parquet(Path(scratch) / "cut" / part)
    return pa.table({"bucket": [bucket]})


def _rows_of_bucket(
    batch: pa.Table,
    scratch: str,
    names: EventNames,
    cfg: FeaturesConfig,
    cuts: tuple[datetime, datetime] | None,
) -> pa.Table:
    """Pass 2: a bucket's split, indexed rows (sorted as the embedded path sorts them), its
    per-item training counts and its per-split counts (the result)."""
    _, _, part = _bucket_of(batch)
    root = Path(scratch)
    units = split_units(pl.scan_parquet(root / "units" / part), cfg.split, cuts)
    rows = indexed_rows(
        units,
        pl.scan_parquet(root / "user_idx" / part),
        pl.scan_parquet(root / "item_idx.parquet"),
        names,
    )
    rows = rows.sort(Col.TS, Col.USER_IDX, Col.ITEM_IDX).collect()
    rows.write_parquet(root / "rows" / part)
    item_counts(rows.lazy()).collect().write_parquet(root / "counts" / part)
    return _arrow(split_counts(rows, names))


def _write_splits(batch: pa.Table, scratch: str, out: str) -> pa.Table:
    """Pass 3: a bucket's rows with their propensities, one part per split."""
    bucket, _, part = _bucket_of(batch)
    rows = pl.read_parquet(Path(scratch) / "rows" / part)
    theta = pl.read_parquet(Path(scratch) / "theta.parquet")["propensity"].to_numpy()
    rows = with_propensity(rows, theta)
    for split in SPLITS:
        frame = rows.filter(pl.col("split") == split).drop("split")
        frame.write_parquet(Path(out) / f"{split}.parquet" / part)
    return pa.table({"bucket": [bucket]})
